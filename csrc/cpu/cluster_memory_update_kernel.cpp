// CPU cluster_memory_update_: the batch is grouped by label with a stable
// sort of the sample indices (each group keeps batch order), then the groups
// run in parallel (at::parallel_for); each group walks its samples in order
// and owns its memory row, so no two threads ever touch one row.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/cluster_memory.h"

namespace pyreid {
namespace {

constexpr const char* kOp = "cluster_memory_update_";
// Grouping work (elements touched) below which a task is not worth a thread.
constexpr int64_t kGrainElements = 1 << 15;

// Rows are processed eight floats at a time with GCC/Clang vector types and
// two accumulators, so the sums are not one serial chain. Written out rather
// than left to the auto-vectoriser (which turned a lane-array loop into
// shuffle-bound code) or at::vec (whose portable fallback, used when the
// extension is built without -mavx2, goes through memory). The tails use the
// shared scalar functions; the vector body is the same formula.
typedef float Vec8 __attribute__((vector_size(32)));
constexpr int64_t kVec = 8;

inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, Vec8 v) { std::memcpy(p, &v, sizeof(v)); }

inline float horizontal_sum(Vec8 v) {
  float total = 0.0f;
  for (int64_t l = 0; l < kVec; ++l) total += v[l];
  return total;
}

// row <- normalise(m * row + (1 - m) * x), x already float32. The rows never
// overlap (inputs that share memory's storage are copied first).
void update_row(float* __restrict__ row, const float* __restrict__ x, int64_t dim, float momentum) {
  const float take = 1.0f - momentum;
  Vec8 acc0 = {}, acc1 = {};
  int64_t d = 0;
  for (; d + 2 * kVec <= dim; d += 2 * kVec) {
    const Vec8 v0 = momentum * load8(row + d) + take * load8(x + d);
    const Vec8 v1 = momentum * load8(row + d + kVec) + take * load8(x + d + kVec);
    store8(row + d, v0);
    store8(row + d + kVec, v1);
    acc0 += v0 * v0;
    acc1 += v1 * v1;
  }
  float sum_sq = horizontal_sum(acc0 + acc1);
  for (; d < dim; ++d) {
    const float v = momentum_blend(momentum, row[d], x[d]);
    row[d] = v;
    sum_sq += v * v;
  }
  const float scale = normalise_scale(sum_sq);
  d = 0;
  for (; d + kVec <= dim; d += kVec) store8(row + d, load8(row + d) * scale);
  for (; d < dim; ++d) row[d] *= scale;
}

float dot(const float* __restrict__ row, const float* __restrict__ x, int64_t dim) {
  Vec8 acc0 = {}, acc1 = {};
  int64_t d = 0;
  for (; d + 2 * kVec <= dim; d += 2 * kVec) {
    acc0 += load8(row + d) * load8(x + d);
    acc1 += load8(row + d + kVec) * load8(x + d + kVec);
  }
  float total = horizontal_sum(acc0 + acc1);
  for (; d < dim; ++d) total += row[d] * x[d];
  return total;
}

// Row i of the inputs as float32: the row itself for float32 inputs, else
// converted into `buffer`.
template <typename scalar_t>
const float* input_row(const scalar_t* inputs, int64_t i, int64_t dim, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return inputs + i * dim;
  } else {
    buffer.resize(dim);
    for (int64_t d = 0; d < dim; ++d) buffer[d] = static_cast<float>(inputs[i * dim + d]);
    return buffer.data();
  }
}

template <typename scalar_t>
void update_groups(float* memory, const scalar_t* inputs, const int64_t* targets, const std::vector<int64_t>& order,
                   const std::vector<int64_t>& group_starts, int64_t dim, float momentum, MemoryUpdateMode mode) {
  const int64_t groups = static_cast<int64_t>(group_starts.size()) - 1;
  const int64_t batch = static_cast<int64_t>(order.size());
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, dim * batch / groups));
  at::parallel_for(0, groups, grain, [&](int64_t g_begin, int64_t g_end) {
    std::vector<float> buffer;
    for (int64_t g = g_begin; g < g_end; ++g) {
      const int64_t first = group_starts[g], last = group_starts[g + 1];
      float* row = memory + targets[order[first]] * dim;
      if (mode == MemoryUpdateMode::Momentum) {
        for (int64_t s = first; s < last; ++s) update_row(row, input_row(inputs, order[s], dim, buffer), dim, momentum);
      } else {
        int64_t hardest = order[first];
        float hardest_dot = dot(row, input_row(inputs, hardest, dim, buffer), dim);
        for (int64_t s = first + 1; s < last; ++s) {
          const float candidate = dot(row, input_row(inputs, order[s], dim, buffer), dim);
          if (replaces_hardest(candidate, hardest_dot)) {
            hardest = order[s];
            hardest_dot = candidate;
          }
        }
        update_row(row, input_row(inputs, hardest, dim, buffer), dim, momentum);
      }
    }
  });
}

void cluster_memory_update_cpu(at::Tensor memory, const at::Tensor& inputs, const at::Tensor& targets,
                               double momentum, c10::string_view mode_name) {
  check_cluster_memory_update_args(memory, inputs, targets, momentum, kOp);
  const MemoryUpdateMode mode = parse_memory_update_mode(std::string(mode_name), kOp);
  const int64_t batch = inputs.size(0), num_rows = memory.size(0), dim = memory.size(1);
  if (batch == 0) return;

  const at::Tensor targets_c = targets.contiguous();
  const int64_t* labels = targets_c.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch; ++i) {
    TORCH_CHECK(labels[i] >= 0 && labels[i] < num_rows, kOp, ": targets[", i, "] = ", labels[i],
                " is out of range for a memory of ", num_rows, " rows");
  }
  if (dim == 0) return;

  std::vector<int64_t> order(batch);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return labels[a] < labels[b]; });
  std::vector<int64_t> group_starts;
  for (int64_t s = 0; s < batch; ++s) {
    if (s == 0 || labels[order[s]] != labels[order[s - 1]]) group_starts.push_back(s);
  }
  group_starts.push_back(batch);

  // The update is in place: a non-contiguous memory is updated in a
  // contiguous copy that is written back.
  at::Tensor work = memory.is_contiguous() ? memory : memory.contiguous();
  const at::Tensor inputs_c = inputs.is_alias_of(memory) ? inputs.clone(at::MemoryFormat::Contiguous)
                                                         : inputs.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs_c.scalar_type(), "cluster_memory_update_cpu", [&] {
    update_groups<scalar_t>(work.data_ptr<float>(), inputs_c.data_ptr<scalar_t>(), labels, order, group_starts, dim,
                            static_cast<float>(momentum), mode);
  });
  if (!work.is_same(memory)) memory.copy_(work);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) { m.impl("cluster_memory_update_", &cluster_memory_update_cpu); }

}  // namespace pyreid
