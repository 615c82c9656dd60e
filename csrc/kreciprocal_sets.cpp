// kreciprocal_sets(neighbors, k1) -> (crow, col)
//
//   neighbors  N x K int64 neighbour lists (row i: i's neighbours, nearest
//              first, i itself first), e.g. the indices of knn(x, k=K).
//              K = k1 reproduces Cluster-Contrast (its search returns k1
//              columns), K = k1 + 1 the original re-ranking.
//   k1         >= 1, k1 < N
//   crow       N + 1 int64, col nnz int64: the expanded k-reciprocal sets
//              R*(i) as a CSR pattern, each row's columns ascending
//
// R(i, k): the points among the first min(k + 1, K) entries of i's list whose
// own first min(k + 1, K) entries contain i. R*(i) = R(i, k1) united with
// every R(c, round(k1 / 2)), c in R(i, k1), with |R(c) & R(i)| > 2/3 |R(c)|
// (round half to even, as numpy). Purely combinatorial: the weights of the
// encoding are filled in by the caller (pyreid/ops/jaccard.py). Each row
// costs O(K^2 + K^3 / 2) comparisons; memory O(N K) besides the output.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("kreciprocal_sets(Tensor neighbors, int k1) -> (Tensor, Tensor)");
}
