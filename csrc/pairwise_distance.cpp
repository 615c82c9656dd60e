// pairwise_distance(x, y, metric) -> dist
//
//   x       N x D floating tensor (float16, bfloat16, float32 or float64)
//   y       M x D tensor of the same dtype and device, or None: then y = x
//   metric  "sqeuclidean" | "euclidean" | "cosine" (1 - cos, clamped at 0)
//   dist    N x M, dtype of x. Computed with float32 accumulation (float64 for
//           float64 inputs) as |x|^2 + |y|^2 - 2<x, y> through a matrix
//           product, so near-zero distances carry the usual cancellation error
//           of that formula (same as torch.cdist); with y = None the diagonal
//           is exactly 0.
//
// Differentiable in x and y: the backward is registered from Python
// (pyreid/ops/pairwise_distance.py) in terms of this op's output.
// Errors: rank != 2, non-floating dtype, dtype / device / D mismatch, NaN/Inf.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("pairwise_distance(Tensor x, Tensor? y, str metric) -> Tensor");
}
