"""The cluster-memory update of contrastive re-ID training, as one in-place op."""

import torch

from pyreid.ops.checks import check_cluster_memory_update_args, check_real, check_str, check_tensor

__all__ = ["cluster_memory_update_"]


def cluster_memory_update_(
    memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float, mode: str = "momentum"
) -> torch.Tensor:
    """Updates the cluster centroids ``memory`` in place with a batch; returns ``memory``.

    Cluster-Contrast's memory update (Dai et al., "Cluster Contrast for
    Unsupervised Person Re-Identification", its ``CM`` and ``CM_Hard``
    backward), exactly, in one call instead of a Python loop:

    - ``mode="momentum"``: for each sample, **in batch order**,
      ``memory[y] <- normalise(m * memory[y] + (1 - m) * x)``; samples of one
      label form a sequential recursion, different labels are independent.
    - ``mode="hard"``: for each label in the batch, ``x*`` = its sample with
      the smallest ``<x, memory[y]>`` (the first in batch order on ties), then
      one update ``memory[y] <- normalise(m * memory[y] + (1 - m) * x*)``.

    ``normalise(v) = v / max(||v||, 1e-12)`` as :func:`torch.nn.functional.normalize`
    (computed as a multiplication by the reciprocal: within one float32 rounding).

    Args:
        memory: K x D float32 centroids (rows L2-normalised), CPU or CUDA; modified in place.
        inputs: B x D float32, float16 or bfloat16 features (normalise them first,
            as Cluster-Contrast does); arithmetic is float32.
        targets: B int64 labels in ``[0, K)``.
        momentum: ``m`` in ``[0, 1]`` (0: the row becomes the sample, 1: unchanged).
        mode: ``"momentum"`` or ``"hard"``.

    Not differentiable (it runs under ``torch.no_grad`` semantics; use
    :class:`pyreid.losses.ClusterMemory` for the loss and its backward). On CUDA
    the call never syncs with the host, so an out-of-range label there is a
    device-side assertion (as in PyTorch's indexing ops) rather than a Python
    error; on the CPU it is a ValueError. The same holds for NaN or Inf in
    ``inputs``: the memory is left untouched and the CPU raises ValueError,
    CUDA asserts on the device.

    Raises ValueError for a wrong rank, width, batch size, device mix,
    momentum, mode or non-finite inputs, and TypeError for a wrong dtype.

    Example:
        >>> memory = torch.nn.functional.normalize(torch.randn(10, 64), dim=1)
        >>> x = torch.nn.functional.normalize(torch.randn(32, 64), dim=1)
        >>> _ = pyreid.ops.cluster_memory_update_(memory, x, torch.randint(0, 10, (32,)), 0.2)
    """
    op = "cluster_memory_update_"
    for name, t in (("memory", memory), ("inputs", inputs), ("targets", targets)):
        check_tensor(t, name, op)
    momentum = check_real(momentum, "momentum", op, allow_nan=True)  # NaN fails the range check
    check_str(mode, "mode", op)
    torch.ops.pyreid.cluster_memory_update_.default(memory, inputs, targets, momentum, mode)
    return memory


@torch.library.register_fake("pyreid::cluster_memory_update_")
def _cluster_memory_update_fake(memory, inputs, targets, momentum, mode):
    check_cluster_memory_update_args(memory, inputs, targets, momentum, mode)
    return None
