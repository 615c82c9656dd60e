// dbscan_dense(dist, eps, min_samples) -> labels
// dbscan_csr(crow_indices, col_indices, values, n, eps, min_samples) -> labels
//
//   dist         N x N floating tensor of precomputed distances (any float dtype)
//   crow_indices int64 (N + 1), col_indices int64 (nnz), values floating (nnz):
//                an N x N CSR matrix; only stored entries are neighbours and a row
//                without a stored diagonal entry has d(i, i) = 0 (stored zeros are
//                neighbours). No duplicate columns within a row.
//   eps          > 0; j is a neighbour of i when d(i, j) <= eps, compared in float32
//                for float32 distances and in float64 otherwise (as scikit-learn)
//   min_samples  >= 1; i is a core point when |N(i)| >= min_samples (i counts itself)
//   labels       N int64, -1 for noise
//
// Labels are identical to sklearn.cluster.DBSCAN(eps, min_samples=min_samples,
// metric="precomputed").fit_predict on the same matrix, numbering and border
// points included, also for asymmetric input (neighbourhoods are rows). See
// common/dbscan.h for the closed form both kernels compute. Errors: eps <= 0,
// min_samples < 1, a non-square matrix, negative or NaN distances, column
// indices out of range. Not differentiable.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("dbscan_dense(Tensor dist, float eps, int min_samples) -> Tensor");
  m.def(
      "dbscan_csr(Tensor crow_indices, Tensor col_indices, Tensor values, int n, float eps, int min_samples) "
      "-> Tensor");
}
