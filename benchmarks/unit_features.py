"""The features of the pseudo-label and Jaccard benchmarks: clustered, L2-normalised (what a re-ID model gives)."""

import torch


def clustered_unit_features(n, d, clusters, seed=0):
    """N x D unit vectors around ``clusters`` random centres (noise 0.5 per coordinate, before normalising)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)
