// CUDA cluster_memory_update_: one thread block per label group.
//
// A stable sort of the targets on the device groups the batch by label while
// keeping each group in batch order. The kernel runs one block per sorted
// position; the block at the first position of a group owns that label's
// memory row and walks the group's samples in order (the others exit at
// once), so the grid size is the batch size and nothing is read back to the
// host. Within a block thread t owns the row elements d = t (mod blockDim):
// it blends, rescales and reads only those, so the only cross-thread step of
// an update is the block-wide sum of squares (and, in hard mode, of the dot
// product). The per-element arithmetic is shared with the CPU kernel
// (common/cluster_memory.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/cluster_memory.h"
#include "common/cluster_memory_checks.h"
#include "common/cuda_helpers.cuh"

namespace pyreid {
namespace {

constexpr const char* kOp = "cluster_memory_update_";
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Sum of v over the block, returned to every thread. `scratch` holds
// kWarps + 1 floats; the trailing barrier lets the next call reuse it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float total = lane < kWarps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    if (lane == 0) scratch[kWarps] = total;
  }
  __syncthreads();
  const float total = scratch[kWarps];
  __syncthreads();
  return total;
}

// row <- normalise(m * row + (1 - m) * x), by the whole block.
template <typename scalar_t>
__device__ void update_row(float* row, const scalar_t* x, int64_t dim, float momentum, float* scratch) {
  float partial = 0.0f;
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
    const float v = momentum_blend(momentum, row[d], static_cast<float>(x[d]));
    row[d] = v;
    partial += v * v;
  }
  const float scale = normalise_scale(block_sum(partial, scratch));
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) row[d] *= scale;
}

template <typename scalar_t>
__device__ float row_dot(const float* row, const scalar_t* x, int64_t dim, float* scratch) {
  float partial = 0.0f;
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) partial += row[d] * static_cast<float>(x[d]);
  return block_sum(partial, scratch);
}

// sorted_labels / order: the targets sorted stably and the batch index of
// each sorted position.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    cluster_memory_update_kernel(float* __restrict__ memory, const scalar_t* __restrict__ inputs,
                                 const int64_t* __restrict__ sorted_labels, const int64_t* __restrict__ order,
                                 const bool* __restrict__ inputs_finite, int64_t batch, int64_t num_rows,
                                 int64_t dim, float momentum, MemoryUpdateMode mode) {
  __shared__ float scratch[kWarps + 1];
  // Every block reads the same flag, so a batch with NaN/Inf writes nothing.
  const bool finite = *inputs_finite;
  CUDA_KERNEL_ASSERT(finite && "cluster_memory_update_: inputs contain NaN or Inf; nothing was written");
  if (!finite) return;
  const int64_t first = blockIdx.x;
  const int64_t label = sorted_labels[first];
  // The same condition for every thread of the block: whole blocks exit.
  if (first > 0 && sorted_labels[first - 1] == label) return;
  CUDA_KERNEL_ASSERT(label >= 0 && label < num_rows && "cluster_memory_update_: a target is out of range [0, K)");
  if (label < 0 || label >= num_rows) return;
  int64_t last = first + 1;
  while (last < batch && sorted_labels[last] == label) ++last;

  float* row = memory + label * dim;
  if (mode == MemoryUpdateMode::Momentum) {
    for (int64_t s = first; s < last; ++s) update_row(row, inputs + order[s] * dim, dim, momentum, scratch);
    return;
  }
  // Every thread gets the same block sums, so all agree on the pick.
  int64_t hardest = order[first];
  float hardest_dot = row_dot(row, inputs + hardest * dim, dim, scratch);
  for (int64_t s = first + 1; s < last; ++s) {
    const float candidate = row_dot(row, inputs + order[s] * dim, dim, scratch);
    if (replaces_hardest(candidate, hardest_dot)) {
      hardest = order[s];
      hardest_dot = candidate;
    }
  }
  update_row(row, inputs + hardest * dim, dim, momentum, scratch);
}

void cluster_memory_update_cuda(at::Tensor memory, const at::Tensor& inputs, const at::Tensor& targets,
                                double momentum, c10::string_view mode_name) {
  const MemoryUpdateMode mode =
      check_cluster_memory_update_args(memory, inputs, targets, momentum, std::string(mode_name), kOp);
  const int64_t batch = inputs.size(0), num_rows = memory.size(0), dim = memory.size(1);
  TORCH_CHECK_VALUE(batch <= std::numeric_limits<int32_t>::max(), kOp, ": a batch of ", batch,
                    " samples is more than one launch handles; split it");
  if (batch == 0 || dim == 0) return;
  const c10::cuda::CUDAGuard device_guard(memory.device());

  at::Tensor sorted_labels, order;
  std::tie(sorted_labels, order) = at::sort(targets.contiguous(), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor work = memory.is_contiguous() ? memory : memory.contiguous();
  // Inputs that share memory's storage would change under the update: copy them.
  const at::Tensor inputs_c = inputs.is_alias_of(memory) ? inputs.clone(at::MemoryFormat::Contiguous)
                                                         : inputs.contiguous();
  // check_inputs_finite's test, left on the device (no host sync): the kernel reads it.
  const at::Tensor inputs_finite = at::isfinite(inputs_c).all();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs_c.scalar_type(), "cluster_memory_update_cuda", [&] {
    cluster_memory_update_kernel<scalar_t><<<static_cast<unsigned int>(batch), kThreads, 0, stream>>>(
        work.data_ptr<float>(), inputs_c.data_ptr<scalar_t>(), sorted_labels.data_ptr<int64_t>(),
        order.data_ptr<int64_t>(), inputs_finite.data_ptr<bool>(), batch, num_rows, dim,
        static_cast<float>(momentum), mode);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (!work.is_same(memory)) memory.copy_(work);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) { m.impl("cluster_memory_update_", &cluster_memory_update_cuda); }

}  // namespace pyreid
