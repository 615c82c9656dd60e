"""Cluster-Contrast's ``ClusterMemory`` with its signature, backed by the fused update op."""

from pyreid.losses.cluster_memory import ClusterMemory as _ClusterMemory

__all__ = ["ClusterMemory"]


class ClusterMemory(_ClusterMemory):
    """Drop-in for Cluster-Contrast's ``clustercontrast.models.cm.ClusterMemory``.

    Same constructor (``use_hard=True`` selects the hard-sample update), same
    ``features`` buffer that the training script assigns each epoch
    (``memory.features = F.normalize(cluster_features, dim=1).cuda()``), same
    ``forward(inputs, targets)`` returning the loss. The update is the fused
    :func:`pyreid.ops.cluster_memory_update_` instead of a Python loop, with
    identical results. One difference: inputs are not moved with ``.cuda()``;
    they must be on the device of ``features`` (they are in their scripts).

    ``features`` may be assigned in float64, float16 or bfloat16, as the
    published module allows: the similarities, the loss and the gradient are
    computed in that dtype (inputs are cast to it, where the published ``mm``
    would need them in it already) and the memory keeps it. A float64 memory
    is updated in float64, exactly as the published loop; a half one with
    float32 arithmetic rounded once per step (no less accurate than the
    published half arithmetic).

    Example:
        >>> from pyreid.compat import ClusterMemory
        >>> memory = ClusterMemory(64, 10, temp=0.05, momentum=0.2, use_hard=True)
        >>> memory.features = torch.nn.functional.normalize(torch.randn(10, 64), dim=1)
        >>> loss = memory(torch.randn(32, 64), torch.randint(0, 10, (32,)))
    """

    def __init__(self, num_features, num_samples, temp=0.05, momentum=0.2, use_hard=False):
        from pyreid.ops.checks import check_int, check_real

        op = "ClusterMemory"
        for name, value in (("num_features", num_features), ("num_samples", num_samples)):
            if check_int(value, name, op) < 0:
                raise ValueError(f"{op}: {name} must be >= 0, got {name}={value}")
        # NaN passes a `temp <= 0` test and turns every loss into NaN.
        if not check_real(temp, "temp", op, allow_nan=True) > 0:
            raise ValueError(f"{op}: temp must be positive, got {temp}")
        check_real(momentum, "momentum", op, allow_nan=True)  # the range check (NaN included) follows
        if not isinstance(use_hard, bool):
            raise TypeError(f"{op}: use_hard must be a bool, got {type(use_hard).__name__} {use_hard!r}")
        super().__init__(num_features, num_samples, temp=temp, momentum=momentum, mode="hard" if use_hard else "momentum")
        self.use_hard = use_hard
