"""The values of the k-reciprocal encoding V on its sets R*(i) (stage of jaccard_graph and re_ranking)."""

from typing import Optional

import torch

__all__ = ["kreciprocal_weights"]

# The two encodings: Cluster-Contrast's and the re-ranking paper's.
VARIANTS = ("cluster", "original")


def kreciprocal_weights(
    x: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    variant: str = "cluster",
    row_max: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``V[i, j] = exp(-d_ij) / sum_{j' in R*(i)} exp(-d_ij')`` for the stored pairs (Zhong et al., CVPR 2017).

    Args:
        x: N x D float32 or float64 features (arithmetic in that dtype).
        crow, col: the sets R*(i) as a CSR pattern (``kreciprocal_sets``).
        variant: ``"cluster"``: ``d_ij = 2 - 2 <x_i, x_j>`` (Cluster-Contrast,
            L2-normalised features); ``"original"``: ``d_ij = |x_i - x_j|^2 /
            row_max_i`` (the re-ranking paper; ``row_max`` required).
        row_max: N row maxima of the squared distances (``"original"`` only).

    Returns:
        nnz float32 values, aligned with ``col``; each non-empty row sums to 1.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(100, 16), dim=1)
        >>> crow, col = pyreid.ops.kreciprocal_sets(pyreid.ops.knn(x, k=10)[1], 10)
        >>> pyreid.ops.kreciprocal_weights(x, crow, col).shape == col.shape
        True
    """
    return torch.ops.pyreid.kreciprocal_weights.default(x, crow, col, variant, row_max)


@torch.library.register_fake("pyreid::kreciprocal_weights")
def _kreciprocal_weights_fake(x, crow, col, variant, row_max):
    op = "kreciprocal_weights"
    torch._check(variant in VARIANTS, lambda: f"{op}: unknown variant '{variant}'; expected 'cluster' or 'original'")
    torch._check(x.dim() == 2, lambda: f"{op}: x must be a 2-D tensor, got {x.dim()}-D with shape {tuple(x.shape)}")
    torch._check(
        x.dtype in (torch.float32, torch.float64), lambda: f"{op}: x must be float32 or float64, got {x.dtype}"
    )
    torch._check(
        crow.shape[0] == x.shape[0] + 1,
        lambda: f"{op}: crow must have N + 1 = {x.shape[0] + 1} entries for N = {x.shape[0]} rows of x",
    )
    torch._check((row_max is not None) == (variant == "original"), lambda: f"{op}: row_max goes with 'original' only")
    return col.new_empty(col.shape, dtype=torch.float32)
