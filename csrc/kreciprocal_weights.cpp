// kreciprocal_weights(x, crow, col, variant, row_max, neighbors=None, neighbor_dist=None) -> val
//
//   x        N x D float32 or float64 features (the encoding's arithmetic
//            runs in this dtype, as the published code runs it in its own)
//   crow     N + 1 int64, col nnz int64: the expanded k-reciprocal sets
//            R*(i) as a CSR pattern (kreciprocal_sets), columns in [0, N)
//   variant  "cluster":  d_ij = 2 - 2 <x_i, x_j>       (Cluster-Contrast;
//                        row_max must be None)
//            "original": d_ij = |x_i - x_j|^2 / max(row_max_i, tiny)
//                        (the re-ranking paper's row-normalised squared
//                        Euclidean distance; row_max: N, x's dtype)
//   neighbors, neighbor_dist  optional N x K int64 lists and their squared
//            Euclidean distances (x's dtype), as knn(x, k=K, "sqeuclidean")
//            returns them: a stored pair found in row i's list takes
//            |x_i - x_j|^2 from it (and <x_i, x_j> from it and the squared
//            norms) instead of a new D-long product; equal up to rounding.
//   val      nnz float32: the rows of the encoding V,
//            V[i, j] = exp(-d_ij) / sum_{j' in R*(i)} exp(-d_ij')
//            computed as a max-shifted softmax (same value, no underflow of
//            every weight when distances are large).
//
// One pass over the stored pairs: each distance from the list or from the
// two feature rows (O(nnz D) without lists), then a softmax per row; every
// sum runs in a fixed order, so the result is deterministic and independent
// of the threads.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("kreciprocal_weights(Tensor x, Tensor crow, Tensor col, str variant, Tensor? row_max, "
        "Tensor? neighbors=None, Tensor? neighbor_dist=None) -> Tensor");
}
