"""The cluster-memory contrastive loss of Cluster-Contrast, with its update fused into one op."""

import torch
import torch.nn.functional as F
from torch import nn

from pyreid.distributed import all_gather_rows
from pyreid.ops.checks import (
    check_dim,
    check_dtype,
    check_floating,
    check_memory_mode,
    check_momentum,
    check_same_device,
)
from pyreid.ops.cluster_memory_update import cluster_memory_update_

__all__ = ["ClusterMemory"]


class _MemorySimilarity(torch.autograd.Function):
    """``inputs @ memory.T``; its backward computes the input gradient with the
    memory as it was, then updates the memory with the (normalised) inputs."""

    @staticmethod
    def forward(ctx, inputs, targets, memory, momentum, mode):
        ctx.save_for_backward(inputs, targets, memory)
        ctx.momentum, ctx.mode = momentum, mode
        return inputs.to(memory.dtype) @ memory.t()

    @staticmethod
    def backward(ctx, grad_similarity):
        inputs, targets, memory = ctx.saved_tensors
        grad_inputs = None
        if ctx.needs_input_grad[0]:
            grad_inputs = (grad_similarity @ memory).to(inputs.dtype)
        inputs, targets = inputs.detach(), targets.detach()
        # Under torch.distributed every rank applies every rank's samples, in rank
        # order, so the memories stay identical without broadcasting them.
        inputs, targets = all_gather_rows(inputs), all_gather_rows(targets)
        update_memory_(memory, inputs, targets, ctx.momentum, ctx.mode)
        return grad_inputs, None, None, None, None


@torch.no_grad()
def update_memory_(memory: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float,
                   mode: str) -> torch.Tensor:
    """:func:`pyreid.ops.cluster_memory_update_` for a memory of any floating dtype, in place.

    The op keeps float32 memories. A float64 memory (Cluster-Contrast's
    scripts may assign one) is updated in float64 with the same recursion, so
    it keeps its precision; a float16 / bfloat16 memory through a float32 copy
    (float32 arithmetic, as the op does for half inputs, rounded once).
    """
    if memory.dtype == torch.float64:
        return _update_float64_(memory, inputs.double(), targets, momentum, mode)
    if inputs.dtype == torch.float64:  # the op reads float32/16 and bfloat16
        inputs = inputs.float()
    if memory.dtype == torch.float32:
        return cluster_memory_update_(memory, inputs, targets, momentum, mode)
    work = memory.float()
    cluster_memory_update_(work, inputs, targets, momentum, mode)
    return memory.copy_(work)


def _update_float64_(memory: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, momentum: float,
                     mode: str) -> torch.Tensor:
    """The update of ``cluster_memory_update_`` in torch, in the memory's dtype (the op's
    semantics: see its docstring); vectorised over labels, which are independent."""

    def step(labels, samples):
        row = momentum * memory[labels] + (1.0 - momentum) * samples
        memory[labels] = row / row.norm(dim=1, keepdim=True).clamp_min(1e-12)

    b = targets.numel()
    if b == 0:
        return memory
    position = torch.arange(b, device=targets.device)
    if mode == "momentum":
        # Samples of one label form a recursion in batch order: step t applies
        # the t-th sample of every label at once.
        order = torch.argsort(targets, stable=True)
        sorted_targets = targets[order]
        starts = torch.ones(b, dtype=torch.bool, device=targets.device)
        starts[1:] = sorted_targets[1:] != sorted_targets[:-1]
        group_start = torch.cummax(torch.where(starts, position, 0), 0).values
        rank = torch.empty_like(position)
        rank[order] = position - group_start
        for t in range(int(rank.max()) + 1):
            take = (rank == t).nonzero().squeeze(1)
            step(targets[take], x[take])
    else:
        # Per label, the sample least similar to its centroid (first in batch order on ties).
        similarity = (x * memory[targets]).sum(dim=1)
        k = memory.shape[0]
        least = similarity.new_full((k,), float("inf")).scatter_reduce(0, targets, similarity, "amin")
        candidate = torch.where(similarity == least[targets], position, b)
        chosen = torch.full((k,), b, dtype=position.dtype, device=position.device)
        chosen = chosen.scatter_reduce(0, targets, candidate, "amin")
        labels = torch.unique(targets)
        step(labels, x[chosen[labels]])
    return memory


class ClusterMemory(nn.Module):
    """Cluster-Contrast's memory loss (Dai et al., "Cluster Contrast for
    Unsupervised Person Re-Identification"): one L2-normalised centroid per
    pseudo-identity, a temperature-scaled softmax over them, and a momentum
    ("momentum") or hard-sample ("hard") update of the centroids in backward.

    ``forward(inputs, targets)`` returns
    ``cross_entropy(normalize(inputs) @ features.T / temp, targets)``. During
    backward the input gradient uses ``features`` as it was in forward, then
    ``features`` is updated in place by :func:`pyreid.ops.cluster_memory_update_`
    with the normalised inputs (see it for the exact semantics of both modes).
    Under ``torch.distributed`` the update uses the inputs of all ranks
    (gathered in rank order), so every rank's memory stays identical.

    Args:
        num_features: D, the feature dimension.
        num_samples: K, the number of clusters (rows of ``features``).
        temp: softmax temperature (0.05 in Cluster-Contrast).
        momentum: update momentum in [0, 1] (0.1-0.2 published).
        mode: ``"momentum"`` or ``"hard"``.

    ``features`` is a float32 buffer (K x D), zero until centroids are loaded:
    assign it (``memory.features = F.normalize(centroids, dim=1)``), call
    :meth:`load_centroids_`, or build the module with :meth:`from_centroids`.
    An assigned float64, float16 or bfloat16 buffer keeps its dtype, as in
    Cluster-Contrast: the similarities and the loss are computed in it, a
    float64 memory is updated in float64 and a half one with float32
    arithmetic (:func:`update_memory_`).

    Example:
        >>> memory = pyreid.losses.ClusterMemory.from_centroids(torch.randn(10, 64))
        >>> x = torch.randn(32, 64, requires_grad=True)
        >>> memory(x, torch.randint(0, 10, (32,))).backward()   # also updates memory.features
    """

    def __init__(
        self, num_features: int, num_samples: int, temp: float = 0.05, momentum: float = 0.2, mode: str = "momentum"
    ):
        super().__init__()
        # The update op's own checks, at construction rather than at the first backward.
        check_memory_mode(mode, "ClusterMemory")
        check_momentum(momentum, "ClusterMemory")
        if temp <= 0:
            raise ValueError(f"ClusterMemory: temp must be positive, got {temp}")
        self.num_features = num_features
        self.num_samples = num_samples
        self.temp = temp
        self.momentum = momentum
        self.mode = mode
        self.register_buffer("features", torch.zeros(num_samples, num_features))

    @classmethod
    def from_centroids(
        cls, centroids: torch.Tensor, temp: float = 0.05, momentum: float = 0.2, mode: str = "momentum"
    ) -> "ClusterMemory":
        """A memory holding the L2-normalised ``centroids`` (K x D), on their device."""
        memory = cls(centroids.shape[1], centroids.shape[0], temp=temp, momentum=momentum, mode=mode)
        return memory.to(centroids.device).load_centroids_(centroids)

    @torch.no_grad()
    def load_centroids_(self, centroids: torch.Tensor) -> "ClusterMemory":
        """Replaces the memory with the L2-normalised ``centroids`` (K x D, any K:
        the number of clusters changes every epoch); returns self."""
        if centroids.dim() != 2 or centroids.shape[1] != self.num_features:
            raise ValueError(
                f"ClusterMemory: centroids must be K x {self.num_features}, got shape {tuple(centroids.shape)}"
            )
        self.features = F.normalize(centroids.detach().float(), dim=1).to(self.features.device)
        self.num_samples = centroids.shape[0]
        return self

    def _check_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Errors before the forward, not at the update in backward (the update op's types and wording)."""
        op = "ClusterMemory"
        check_dim(inputs, 2, "inputs", op)
        check_dim(targets, 1, "targets", op)
        check_dtype(targets, torch.int64, "targets", op)
        check_floating(self.features, "features", op)
        check_same_device(self.features, inputs, "features", "inputs", op)
        check_same_device(self.features, targets, "features", "targets", op)
        if inputs.shape[1] != self.features.shape[1] or targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{op}: inputs must be B x {self.features.shape[1]} and targets B, got "
                f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        # A range check on CUDA would synchronise every step; the update kernel asserts there.
        k = self.features.shape[0]
        if not targets.is_cuda and targets.numel() and not bool(((targets >= 0) & (targets < k)).all()):
            raise ValueError(f"{op}: targets must be in [0, {k}), got [{int(targets.min())}, {int(targets.max())}]")

    def logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x K ``normalize(inputs) @ features.T / temp``, what :meth:`forward` takes the cross-entropy of;
        its backward updates the memory with ``inputs`` and ``targets`` as :meth:`forward`'s does (call
        one of them once per step: the update changes the memory that other calls saved)."""
        self._check_batch(inputs, targets)
        inputs = F.normalize(inputs, dim=1)
        return _MemorySimilarity.apply(inputs, targets, self.features, self.momentum, self.mode) / self.temp

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(inputs, targets), targets)

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, num_samples={self.num_samples}, temp={self.temp}, "
            f"momentum={self.momentum}, mode={self.mode!r}"
        )
