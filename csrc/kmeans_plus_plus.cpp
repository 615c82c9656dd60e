// kmeans_plus_plus(x, first, draws) -> (centres, labels, closest, second)
//
//   x         N x D floating tensor (float16 / bfloat16 are seeded in float32)
//   first     the index of the first centre, 0 <= first < N
//   draws     (k - 1) x T float64 tensor on x's device, k <= N, T >= 1:
//             step c draws T candidates at the quantiles draws[c - 1] of the
//             potential (the cumulative squared distance of each point to its
//             nearest centre so far; a point p is drawn for u with
//             cum[p - 1] < u * total <= cum[p], clamped to N - 1)
//   centres   k int64: the rows of x chosen as centres, first one first
//   labels    N int64: each point's nearest centre (ties to the earlier one)
//   closest   N, float32 (float64 for float64 x): squared distance to it
//   precision "fp32": every product in the accumulation dtype; "auto": on a
//             CPU with AVX2 + FMA and float32 rows of >= 128 features, each
//             step's products first come from a bfloat16 copy of x, and only
//             pairs a proven error bound cannot settle are recomputed in
//             float32 (centres, labels and closest: the bits of "fp32");
//             elsewhere (CUDA included) the same as "fp32"
//   second    N, same dtype: squared distance to the second nearest centre
//             (+inf when k = 1); with the screen, a lower bound of it where
//             the screen settled the pair (k-means needs only a lower bound)
//
// Greedy k-means++ (Arthur & Vassilvitskii, SODA 2007, with scikit-learn's
// T = 2 + ln k candidates per step): of the T candidates, the one that
// leaves the smallest potential becomes the centre (ties to the first drawn).
// Squared distances are |x|^2 + |c|^2 - 2 <x, c> clamped at 0, as knn's.
// Each step reads x once: the T candidates' distances, their potentials and
// the update of closest / second / labels come from one pass, so no N x T
// matrix goes through memory twice (the step is memory-bound). `closest` and
// `second` give k-means' first assignment and the lower bound its pruned
// iterations start from, without a search. Errors: common/kmeans_checks.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("kmeans_plus_plus(Tensor x, int first, Tensor draws, str precision) -> (Tensor, Tensor, Tensor, Tensor)");
}
