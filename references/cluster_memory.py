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
