"""Reference of cluster_memory_update_: Cluster-Contrast's update as the definition reads."""

import torch


def cluster_memory_update_reference(
    memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float, mode: str = "momentum"
) -> torch.Tensor:
    """Cluster-Contrast's update as the definition reads, in place on ``memory``
    (in its own dtype; pass float64 copies for a reference): a loop over the
    samples in batch order ("momentum") or over the labels with the least
    similar sample of each ("hard", first in batch order on ties)."""
    x = inputs.to(memory.dtype)

    def update(y, sample):
        row = momentum * memory[y] + (1 - momentum) * sample
        memory[y] = row / row.norm().clamp_min(1e-12)

    labels = targets.tolist()
    if mode == "momentum":
        for i, y in enumerate(labels):
            update(y, x[i])
    elif mode == "hard":
        for y in dict.fromkeys(labels):  # labels in order of first appearance
            members = (targets == y).nonzero().flatten()
            similarities = x[members] @ memory[y]
            update(y, x[members[torch.argmin(similarities)]])  # argmin: first minimum
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return memory


class _PublishedMemory(torch.autograd.Function):
    """Cluster-Contrast's ``CM`` / ``CM_Hard``: ``inputs @ features.T`` in the features' dtype;
    backward returns ``grad @ features`` (the memory before the update), then updates it."""

    @staticmethod
    def forward(ctx, inputs, targets, features, momentum, mode):
        ctx.features, ctx.momentum, ctx.mode = features, momentum, mode
        ctx.save_for_backward(inputs, targets)
        return inputs.mm(features.t())

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, targets = ctx.saved_tensors
        grad_inputs = grad_outputs.mm(ctx.features) if ctx.needs_input_grad[0] else None
        cluster_memory_update_reference(ctx.features, inputs, targets, ctx.momentum, ctx.mode)
        return grad_inputs, None, None, None, None


def cluster_contrast_memory_loss(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, temp: float = 0.05,
    momentum: float = 0.2, use_hard: bool = False,
) -> torch.Tensor:
    """Cluster-Contrast's ``ClusterMemory.forward`` on the ``features`` buffer (updated in
    place in backward): ``cross_entropy(normalize(inputs) @ features.T / temp, targets)``.
    Inputs and features must share a dtype, as ``mm`` requires in the published module."""
    x = torch.nn.functional.normalize(inputs, dim=1)
    outputs = _PublishedMemory.apply(x, targets, features, momentum, "hard" if use_hard else "momentum")
    return torch.nn.functional.cross_entropy(outputs / temp, targets)
