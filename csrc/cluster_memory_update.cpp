// cluster_memory_update_(memory, inputs, targets, momentum, update_mode) -> ()
//
//   memory    K x D float32, updated in place (the cluster centroids, rows
//             L2-normalised by the caller)
//   inputs    B x D float32, float16 or bfloat16 (the batch's features,
//             normalised by the caller); arithmetic is float32
//   targets   B int64, each in [0, K)
//   momentum  m in [0, 1]
//   update_mode (not "mode": that name clashes with the dispatcher's mode
//             redirection under opcheck / torch.compile)
//             "momentum": for each sample, in batch order,
//                 memory[y] <- normalise(m * memory[y] + (1 - m) * x)
//             so samples of one label form a sequential recursion (the
//             result depends on their order); different labels are
//             independent.
//             "hard": for each label present, x* = its sample with the
//             smallest <x, memory[y]> (the first in batch order on ties),
//             then one update memory[y] <- normalise(m * memory[y] + (1 - m) * x*).
//   normalise(v) = v / max(||v||, 1e-12), like F.normalize.
//
// Cluster-Contrast's CM / CM_Hard backward updates, done in one call: the
// batch is grouped by label (stable, so each group keeps batch order) and the
// groups run in parallel, each walking its samples in order. Not
// differentiable. On CUDA an out-of-range label is a device-side assertion
// (as in PyTorch's own indexing ops) so that the call never syncs with the host.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("cluster_memory_update_(Tensor(a!) memory, Tensor inputs, Tensor targets, float momentum, str update_mode) -> ()");
}
