"""Drop-in ``compute_jaccard_distance`` (Cluster-Contrast / SpCL / ISE ``utils/faiss_rerank.py``)."""

import time

import numpy as np
import torch

__all__ = ["compute_jaccard_distance"]


def compute_jaccard_distance(target_features, k1=20, k2=6, print_flag=True, search_option=0, use_float16=False):
    """k-reciprocal Jaccard distance with Cluster-Contrast's signature and result.

    Equal (float32 rounding) to Cluster-Contrast's ``compute_jaccard_distance``
    on the same features, with an exact kNN in place of faiss (neighbour ties
    go to the smaller index) and pyreid's sparse pipeline in place of the
    numpy loops over N x N matrices; only the returned N x N matrix is dense.

    Args:
        target_features: N x D features (torch tensor on CPU or CUDA, or numpy),
            L2-normalised as the callers pass them.
        k1, k2: neighbourhood and query-expansion sizes (``k2 <= k1 < N``).
        print_flag: print the time taken, as the original does.
        search_option: accepted for compatibility and ignored (the original
            chose a faiss index with it).
        use_float16: return float16, as the original's dense matrices then are.

    Returns:
        numpy N x N float32 (float16 with ``use_float16``) Jaccard distances.

    CUDA features stay on their GPU when this build of pyreid has the CUDA
    k-reciprocal kernels; a build without them (CPU-only) copies them to the
    CPU first, so the drop-in works with either. The result is a numpy array
    either way (the caller passes it to scikit-learn's DBSCAN).

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(200, 64), dim=1)
        >>> compute_jaccard_distance(x, k1=20, k2=6, print_flag=False).shape
        (200, 200)
    """
    from pyreid.ops.jaccard import jaccard_distance

    del search_option
    start = time.time()
    if print_flag:
        print("Computing jaccard distance...")
    x = torch.as_tensor(target_features).detach()
    if x.device.type != "cpu" and not torch._C._dispatch_has_kernel_for_dispatch_key(
        "pyreid::kreciprocal_sets", x.device.type.upper()
    ):
        x = x.cpu()
    dist = jaccard_distance(x.float(), k1=k1, k2=k2, variant="cluster").cpu().numpy()
    if use_float16:
        dist = dist.astype(np.float16)
    if print_flag:
        print(f"Jaccard distance computing time cost: {time.time() - start}")
    return dist
