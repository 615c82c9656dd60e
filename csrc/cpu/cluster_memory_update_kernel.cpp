// CPU cluster_memory_update_: the batch is grouped by label with a stable
// sort of the sample indices (each group keeps batch order), then the groups
// run in parallel (at::parallel_for); each group walks its samples in order
// and owns its memory row, so no two threads ever touch one row.
//
// The row arithmetic (a dot product; blend + sum of squares + rescale) runs
// 16 float lanes at a time. It is written once, over a GCC/Clang vector type,
// and compiled twice: with 4-float vectors for the baseline x86-64 target the
// extension is built for (SSE), and, on x86, with 8-float vectors in functions
// compiled for AVX, picked at run time when the CPU has it. A sum over a row
// always keeps 16 partial sums, lane l taking the elements d = l (mod 16) in
// increasing d, added in one fixed tree at the end; neither path uses FMA. So
// the SSE and AVX paths give bit-identical results and every call is
// deterministic whatever the thread count. In hard mode all similarities use
// the row as it was before the label's update, so they are computed four
// samples per pass over the row; the pick then scans them in batch order.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/cluster_memory.h"
#include "common/cluster_memory_checks.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define PYREID_CLUSTER_MEMORY_AVX 1
#include <immintrin.h>
#endif

namespace pyreid {
namespace {

constexpr const char* kOp = "cluster_memory_update_";
// Grouping work (elements touched) below which a task is not worth a thread.
constexpr int64_t kGrainElements = 1 << 15;

// Partial sums per row reduction, whatever the vector width.
constexpr int64_t kLanes = 16;

typedef float Float4 __attribute__((vector_size(16)));
#if defined(PYREID_CLUSTER_MEMORY_AVX)
typedef float Float8 __attribute__((vector_size(32)));
#endif

// The generic bodies below are always inlined, so each one is compiled with
// the target of the function it lands in (the AVX wrappers, or the default);
// they take and return no vector by value (that would change the ABI).
#define PYREID_ROW_INLINE inline __attribute__((always_inline))

// The 16 lane sums in acc[0..A) (A vectors of W floats, lane a * W + l in
// acc[a][l]) reduced in one fixed tree: s[l] += s[l + h] for h = 8, 4, 2, 1.
template <typename Vec, int64_t A>
PYREID_ROW_INLINE float reduce_lanes(const Vec (&acc)[A]) {
  static_assert(A * sizeof(Vec) == kLanes * sizeof(float), "16 lanes in all");
  float s[kLanes];
  std::memcpy(s, acc, sizeof(s));
  for (int64_t h = kLanes / 2; h >= 1; h /= 2) {
    for (int64_t l = 0; l < h; ++l) s[l] += s[l + h];
  }
  return s[0];
}

// The dots of one row with `count` samples: 16 lane sums per sample, one
// fixed reduction tree, then the scalar tail. Blocking samples loads each
// row chunk once for all of them (the dot is bound by loads, two per
// multiply, so a block of four nearly halves them); each sample's value is
// the same, bit for bit, whatever block it is computed in.
constexpr int64_t kBlock = 4;

template <typename Vec, int64_t count>
PYREID_ROW_INLINE void dot_block_lanes(const float* __restrict__ row, const float* const* xs, int64_t dim,
                                       float* out) {
  constexpr int64_t W = sizeof(Vec) / sizeof(float), A = kLanes / W;
  Vec acc[count][A] = {};
  int64_t d = 0;
  for (; d + kLanes <= dim; d += kLanes) {
    for (int64_t a = 0; a < A; ++a) {
      Vec r;
      std::memcpy(&r, row + d + a * W, sizeof(Vec));
      for (int64_t j = 0; j < count; ++j) {
        Vec v;
        std::memcpy(&v, xs[j] + d + a * W, sizeof(Vec));
        acc[j][a] += r * v;
      }
    }
  }
  for (int64_t j = 0; j < count; ++j) {
    float total = reduce_lanes(acc[j]);
    for (int64_t t = d; t < dim; ++t) total += row[t] * xs[j][t];
    out[j] = total;
  }
}

template <typename Vec>
PYREID_ROW_INLINE float dot_lanes(const float* __restrict__ row, const float* __restrict__ x, int64_t dim) {
  const float* const xs[1] = {x};
  float out;
  dot_block_lanes<Vec, 1>(row, xs, dim, &out);
  return out;
}

// row <- normalise(m * row + (1 - m) * x), x already float32. The rows never
// overlap (inputs that share memory's storage are copied first). The tail
// uses the shared scalar functions; the vector body is the same formula.
template <typename Vec>
PYREID_ROW_INLINE void update_row_lanes(float* __restrict__ row, const float* __restrict__ x, int64_t dim,
                                        float momentum) {
  constexpr int64_t W = sizeof(Vec) / sizeof(float), A = kLanes / W;
  const float take = 1.0f - momentum;
  Vec acc[A] = {};
  int64_t d = 0;
  for (; d + kLanes <= dim; d += kLanes) {
    for (int64_t a = 0; a < A; ++a) {
      Vec r, v;
      std::memcpy(&r, row + d + a * W, sizeof(Vec));
      std::memcpy(&v, x + d + a * W, sizeof(Vec));
      const Vec blended = momentum * r + take * v;
      std::memcpy(row + d + a * W, &blended, sizeof(Vec));
      acc[a] += blended * blended;
    }
  }
  float sum_sq = reduce_lanes(acc);
  for (; d < dim; ++d) {
    const float v = momentum_blend(momentum, row[d], x[d]);
    row[d] = v;
    sum_sq += v * v;
  }
  const float scale = normalise_scale(sum_sq);
  d = 0;
  for (; d + W <= dim; d += W) {
    Vec r;
    std::memcpy(&r, row + d, sizeof(Vec));
    r *= scale;
    std::memcpy(row + d, &r, sizeof(Vec));
  }
  for (; d < dim; ++d) row[d] *= scale;
}

float dot_sse(const float* __restrict__ row, const float* __restrict__ x, int64_t dim) {
  return dot_lanes<Float4>(row, x, dim);
}

void dot_block_sse(const float* __restrict__ row, const float* const* xs, int64_t dim, float* out) {
  dot_block_lanes<Float4, kBlock>(row, xs, dim, out);
}

void update_row_sse(float* __restrict__ row, const float* __restrict__ x, int64_t dim, float momentum) {
  update_row_lanes<Float4>(row, x, dim, momentum);
}

#if defined(PYREID_CLUSTER_MEMORY_AVX)
__attribute__((target("avx"))) float dot_avx(const float* __restrict__ row, const float* __restrict__ x,
                                             int64_t dim) {
  return dot_lanes<Float8>(row, x, dim);
}

__attribute__((target("avx"))) void dot_block_avx(const float* __restrict__ row, const float* const* xs,
                                                  int64_t dim, float* out) {
  dot_block_lanes<Float8, kBlock>(row, xs, dim, out);
}

__attribute__((target("avx"))) void update_row_avx(float* __restrict__ row, const float* __restrict__ x, int64_t dim,
                                                   float momentum) {
  update_row_lanes<Float8>(row, x, dim, momentum);
}

// float16 -> float32, eight at a time with the F16C instruction (every CPU
// with AVX2 has it). The scalar c10 conversion is bit-twiddling, not
// vectorised: with it a float16 update takes about 10x as long as a float32
// one. Both conversions are exact.
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const c10::Half* in, float* out, int64_t n) {
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + d));
    _mm256_storeu_ps(out + d, _mm256_cvtph_ps(halves));
  }
  for (; d < n; ++d) out[d] = static_cast<float>(in[d]);
}
#endif

void half_to_float_scalar(const c10::Half* in, float* out, int64_t n) {
  for (int64_t d = 0; d < n; ++d) out[d] = static_cast<float>(in[d]);
}

// The row functions for this CPU, chosen once.
struct RowOps {
  float (*dot)(const float*, const float*, int64_t);
  void (*dot_block)(const float*, const float* const*, int64_t, float*);
  void (*update)(float*, const float*, int64_t, float);
  void (*half_to_float)(const c10::Half*, float*, int64_t);
};

// PYREID_CPU_NO_AVX=1 in the environment forces the SSE path (the tests use
// it to check that both paths give the same bits).
RowOps select_row_ops() {
#if defined(PYREID_CLUSTER_MEMORY_AVX)
  const char* no_avx = std::getenv("PYREID_CPU_NO_AVX");
  const bool avx_allowed = no_avx == nullptr || std::strcmp(no_avx, "1") != 0;
  if (avx_allowed && __builtin_cpu_supports("avx")) {
    const bool f16c = __builtin_cpu_supports("f16c");
    return {dot_avx, dot_block_avx, update_row_avx, f16c ? half_to_float_f16c : half_to_float_scalar};
  }
#endif
  return {dot_sse, dot_block_sse, update_row_sse, half_to_float_scalar};
}

const RowOps& row_ops() {
  static const RowOps ops = select_row_ops();
  return ops;
}

// Row i of the inputs as float32: the row itself for float32 inputs, else
// converted into `buffer`.
template <typename scalar_t>
const float* input_row(const RowOps& ops, const scalar_t* inputs, int64_t i, int64_t dim, float* buffer) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return inputs + i * dim;
  } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    ops.half_to_float(inputs + i * dim, buffer, dim);
    return buffer;
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    // bfloat16 is the top half of a float32: a shift, which vectorises.
    for (int64_t d = 0; d < dim; ++d) {
      const uint32_t bits = static_cast<uint32_t>(inputs[i * dim + d].x) << 16;
      std::memcpy(buffer + d, &bits, sizeof(float));
    }
    return buffer;
  } else {  // float64: instantiated by the dispatch macro, rejected by the checks
    for (int64_t d = 0; d < dim; ++d) buffer[d] = static_cast<float>(inputs[i * dim + d]);
    return buffer;
  }
}

// Hard mode for one label: the batch index of its sample with the smallest
// similarity to `row` (samples order[first..last) in batch order, the first
// on ties). `buffer` holds kBlock rows for converted inputs.
template <typename scalar_t>
int64_t hardest_sample(const RowOps& ops, const float* row, const scalar_t* inputs, const int64_t* order,
                       int64_t first, int64_t last, int64_t dim, float* buffer) {
  int64_t hardest = order[first];
  if (last - first == 1) return hardest;  // a lone sample needs no similarity
  float hardest_dot = 0.0f;
  for (int64_t s = first; s < last; s += kBlock) {
    const int64_t count = std::min(kBlock, last - s);
    float dots[kBlock];
    if (count == kBlock) {
      const float* xs[kBlock];
      for (int64_t j = 0; j < kBlock; ++j) xs[j] = input_row(ops, inputs, order[s + j], dim, buffer + j * dim);
      ops.dot_block(row, xs, dim, dots);
    } else {
      for (int64_t j = 0; j < count; ++j) {
        dots[j] = ops.dot(row, input_row(ops, inputs, order[s + j], dim, buffer), dim);
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      if (s + j == first || replaces_hardest(dots[j], hardest_dot)) {
        hardest = order[s + j];
        hardest_dot = dots[j];
      }
    }
  }
  return hardest;
}

template <typename scalar_t>
void update_groups(float* memory, const scalar_t* inputs, const int64_t* targets, const std::vector<int64_t>& order,
                   const std::vector<int64_t>& group_starts, int64_t dim, float momentum, MemoryUpdateMode mode) {
  const RowOps ops = row_ops();
  const int64_t groups = static_cast<int64_t>(group_starts.size()) - 1;
  const int64_t batch = static_cast<int64_t>(order.size());
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, dim * batch / groups));
  constexpr bool converts = !std::is_same_v<scalar_t, float>;
  at::parallel_for(0, groups, grain, [&](int64_t g_begin, int64_t g_end) {
    std::vector<float> buffer(converts ? kBlock * dim : 0);
    for (int64_t g = g_begin; g < g_end; ++g) {
      const int64_t first = group_starts[g], last = group_starts[g + 1];
      float* row = memory + targets[order[first]] * dim;
      if (mode == MemoryUpdateMode::Momentum) {
        for (int64_t s = first; s < last; ++s) {
          ops.update(row, input_row(ops, inputs, order[s], dim, buffer.data()), dim, momentum);
        }
      } else {
        const int64_t hardest = hardest_sample(ops, row, inputs, order.data(), first, last, dim, buffer.data());
        ops.update(row, input_row(ops, inputs, hardest, dim, buffer.data()), dim, momentum);
      }
    }
  });
}

void cluster_memory_update_cpu(at::Tensor memory, const at::Tensor& inputs, const at::Tensor& targets,
                               double momentum, c10::string_view mode_name) {
  const MemoryUpdateMode mode =
      check_cluster_memory_update_args(memory, inputs, targets, momentum, std::string(mode_name), kOp);
  const int64_t batch = inputs.size(0), num_rows = memory.size(0), dim = memory.size(1);
  if (batch == 0) return;

  const at::Tensor targets_c = targets.contiguous();
  const int64_t* labels = targets_c.data_ptr<int64_t>();
  check_targets_in_range(labels, batch, num_rows, kOp);
  if (dim == 0) return;
  check_inputs_finite(inputs, kOp);

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
