// CPU kmeans_plus_plus: greedy k-means++ seeding, one pass over x per step.
//
// A step computes the T candidates' dot products with every row (x streams
// through once; the T candidate rows stay in cache), turns them into squared
// distances, and sums each candidate's potential per task of rows; the task
// sums are added in task order, so the result does not depend on the thread
// count. The chosen candidate's distances are kept (N x T floats) for the
// closest / second / labels update, instead of a second pass over x.
//
// With T = 9 the products are a 9-column matrix product, which BLAS runs far
// below its peak (it repacks x for every call: 27 ms for 12,936 x 2,048 on
// 2 cores against 3.6 ms to read x once). Register tiles of 4 rows x 3
// candidates with AVX2 FMA (dispatched at run time; a portable loop
// otherwise, and for float64) bring the step close to that read.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/accumulate.h"
#include "common/distance.h"
#include "common/kmeans.h"
#include "common/kmeans_checks.h"
#include "cpu/distance_tiles.h"

namespace pyreid {
namespace {

// Rows per task: partial potentials are kept per task (deterministic sums).
constexpr int64_t kRowsPerTask = 256;
// Narrower rows are cheap to read in float32: precision="auto" screens only from this width.
constexpr int64_t kScreenMinWidth = 128;

// out[r * t + j] = <x_r, p_j> for `rows` rows of x: the portable loop (eight
// partial sums per product, so the compiler vectorises it).
template <typename T>
void candidate_dots_portable(const T* x, int64_t rows, const T* p, int64_t t, int64_t d, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    for (int64_t j = 0; j < t; ++j) {
      const T* pj = p + j * d;
      T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t c = 0;
      for (; c + 8 <= d; c += 8)
        for (int l = 0; l < 8; ++l) s[l] += xr[c + l] * pj[c + l];
      T acc = 0;
      for (int l = 0; l < 8; ++l) acc += s[l];
      for (; c < d; ++c) acc += xr[c] * pj[c];
      out[r * t + j] = acc;
    }
  }
}

#if defined(__x86_64__) || defined(_M_X64)
#define PYREID_HAS_AVX2_PATH 1

bool cpu_has_avx2_fma() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}

// Eight row values as float32: from float32, or from bfloat16 (the top 16
// bits of a float32, so widening is a shift and exact).
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const uint16_t* x) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline float load1(const float* x) { return *x; }
inline float load1(const uint16_t* x) {
  const uint32_t bits = static_cast<uint32_t>(*x) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// R rows x C candidates of products, R * C accumulators in registers: each
// load of x feeds C multiply-adds and each load of a candidate R. Every
// product is summed in the same order whatever R and C are (eight lanes over
// the row, the lanes in order, then the tail), so a product recomputed alone
// (R = C = 1) has the same bits as in a tile.
template <int R, int C, typename Row>
__attribute__((target("avx2,fma"))) void dot_tile_avx2(const Row* x, const float* p, int64_t d, int64_t t,
                                                        float* out) {
  __m256 acc[R][C];
  for (int u = 0; u < R; ++u)
    for (int v = 0; v < C; ++v) acc[u][v] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    __m256 q[C];
    for (int v = 0; v < C; ++v) q[v] = _mm256_loadu_ps(p + v * d + c);
    for (int u = 0; u < R; ++u) {
      const __m256 y = load8(x + u * d + c);
      for (int v = 0; v < C; ++v) acc[u][v] = _mm256_fmadd_ps(y, q[v], acc[u][v]);
    }
  }
  for (int u = 0; u < R; ++u) {
    for (int v = 0; v < C; ++v) {
      float lanes[8];
      _mm256_storeu_ps(lanes, acc[u][v]);
      float s = 0;
      for (int l = 0; l < 8; ++l) s += lanes[l];
      for (int64_t e = c; e < d; ++e) s += load1(x + u * d + e) * p[v * d + e];
      out[u * t + v] = s;
    }
  }
}

template <int R, typename Row>
__attribute__((target("avx2,fma"))) void dot_rows_avx2(const Row* x, const float* p, int64_t t, int64_t d,
                                                        float* out) {
  int64_t j = 0;
  for (; j + 3 <= t; j += 3) dot_tile_avx2<R, 3>(x, p + j * d, d, t, out + j);
  if (t - j == 2) dot_tile_avx2<R, 2>(x, p + j * d, d, t, out + j);
  if (t - j == 1) dot_tile_avx2<R, 1>(x, p + j * d, d, t, out + j);
}

template <typename Row>
__attribute__((target("avx2,fma"))) void candidate_dots_avx2(const Row* x, int64_t rows, const float* p,
                                                              int64_t t, int64_t d, float* out) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) dot_rows_avx2<4>(x + r * d, p, t, d, out + r * t);
  for (; r < rows; ++r) dot_rows_avx2<1>(x + r * d, p, t, d, out + r * t);
}

#endif

template <typename T>
void candidate_dots(const T* x, int64_t rows, const T* p, int64_t t, int64_t d, T* out) {
#ifdef PYREID_HAS_AVX2_PATH
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_has_avx2_fma()) return candidate_dots_avx2(x, rows, p, t, d, out);
  }
#endif
  candidate_dots_portable(x, rows, p, t, d, out);
}

// The screen of precision="auto": each step's products come from a bfloat16
// copy of x (half the bytes to read), and only the pairs that bound cannot
// settle are recomputed from the float32 rows, with the bits the float32
// path gives them. A pair is settled when a lower bound of the float32
// path's squared distance is at least the point's current closest distance:
// the pair then changes neither the candidate's potential nor the point's
// label, whatever its exact value. The bound (docs/design.md, "k-means"):
//   d2_f32 >= |x|^2 + |p|^2 - 2 <x_bf16, p>_computed - E,
//   E = 2 (2^-8 + 3 g_m)(1 + 2 g_D) |x||p| + 24 u (|x|^2 + |p|^2) + 2^-125 sqrt(D) |p|
// with u = 2^-24, g_n = n u / (1 - n u), m = D / 8 + 16 (the additions per
// product in the tiles): 2^-8 |x_i| bounds each bfloat16 rounding (8
// significant bits, to nearest; Cauchy-Schwarz sums them to 2^-8 |x||p|), g_m the float32 accumulation of
// either product, g_D the float32 norms, 24u the final subtraction's
// roundings and those of evaluating the bound in float32, and the last term
// subnormal inputs. The per-row and per-candidate factors are rounded up
// (the 1 + 1e-6), so the float32 bound stays below the real one.
struct Screen {
  double relative, additive, subnormal;

  explicit Screen(int64_t d) {
    const double u = std::ldexp(1.0, -24);
    const auto gamma = [u](double n) { return n * u / (1 - n * u); };
    relative = 2 * (std::ldexp(1.0, -8) + 3 * gamma(double(d) / 8 + 16)) * (1 + 2 * gamma(double(d)));
    // 8u for the float32 path's subtraction, 16u more for evaluating the
    // bound in float32 (four operations on terms <= 2 (|x|^2 + |p|^2), and
    // the rounding of the factors below).
    additive = 24 * u;
    subnormal = std::ldexp(1.0, -125) * std::sqrt(double(d));
  }

  // The bound as lower = row_term[i] + cand_term[j] - 2 dot - row_scale[i] * cand_scale[j]:
  // four float32 operations per pair.
  float row_term(double x_sq) const { return static_cast<float>(x_sq * (1 - additive)); }
  float row_scale(double x_sq) const { return static_cast<float>(relative * std::sqrt(x_sq) * (1 + 1e-6)); }
  float cand_term(double p_sq) const {
    return static_cast<float>(p_sq * (1 - additive) - subnormal * std::sqrt(p_sq) * (1 + 1e-6));
  }
  float cand_scale(double p_sq) const { return static_cast<float>(std::sqrt(p_sq) * (1 + 1e-6)); }
};

// The seeding loop on x in its accumulation dtype T (float or double);
// `screen` (float32 with AVX2 only) reads the bfloat16 copy xb.
template <typename T>
void seed(const at::Tensor& xa, const at::Tensor& xb, int64_t first, const at::Tensor& draws_cpu, int64_t* centres,
          int64_t* labels, T* closest, T* second) {
  const int64_t n = xa.size(0), d = xa.size(1);
  const int64_t k = draws_cpu.size(0) + 1;
  const int64_t t = draws_cpu.size(0) > 0 ? draws_cpu.size(1) : 1;
  const T* x = xa.data_ptr<T>();
  const at::Tensor sq_tensor = cpu::norm_terms(xa, Metric::SqEuclidean);
  const T* sq = sq_tensor.data_ptr<T>();
  const double* draws = draws_cpu.data_ptr<double>();
  const int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  const Screen screen(d);

  std::vector<T> cand(static_cast<size_t>(t * d)), cand_sq(t);
  std::vector<float> row_term, row_scale, cand_term(t), cand_scale(t);  // the screen's bound factors
  if (xb.defined()) {
    row_term.resize(n);
    row_scale.resize(n);
    for (int64_t i = 0; i < n; ++i) row_term[i] = screen.row_term(sq[i]), row_scale[i] = screen.row_scale(sq[i]);
  }
  std::vector<T> dist(static_cast<size_t>(n * t));
  std::vector<double> partial(static_cast<size_t>(tasks * t)), cumulative(n);
  std::vector<int64_t> cand_index(t);

  // Squared distances of every row to the m candidates in `cand`, into
  // dist[i * m + j] (a screened pair holds its lower bound, which is >= the
  // point's closest distance), and each task's potential: sum of min(closest, d^2).
  const auto distances = [&](int64_t m, bool with_potential) {
    // At least ~8M multiply-adds per thread: a step on a few hundred rows runs
    // on one thread instead of waking (and, on a busy machine, waiting for) the others.
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 23) / std::max<int64_t>(1, kRowsPerTask * d * m));
    at::parallel_for(0, tasks, grain, [&](int64_t task_begin, int64_t task_end) {
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t r0 = task * kRowsPerTask, r1 = std::min(n, r0 + kRowsPerTask);
        T* out = dist.data() + r0 * m;
        double* sums = partial.data() + task * m;
        std::fill(sums, sums + m, 0.0);
#ifdef PYREID_HAS_AVX2_PATH
        if constexpr (std::is_same_v<T, float>) {
          if (xb.defined() && with_potential) {
            const uint16_t* rows = reinterpret_cast<const uint16_t*>(xb.data_ptr<at::BFloat16>());
            candidate_dots_avx2(rows + r0 * d, r1 - r0, cand.data(), m, d, out);
            std::vector<float> exact(m);
            for (int64_t i = r0; i < r1; ++i) {
              T* row = out + (i - r0) * m;
              bool settled = true;
              for (int64_t j = 0; j < m; ++j) {
                row[j] = row_term[i] + cand_term[j] - 2 * row[j] - row_scale[i] * cand_scale[j];
                settled = settled && row[j] >= closest[i];
              }
              if (!settled) {
                // All of the row's products at once (interleaved chains, not one
                // latency-bound chain per pair); each has the float32 path's bits.
                dot_rows_avx2<1>(x + i * d, cand.data(), m, d, exact.data());
                for (int64_t j = 0; j < m; ++j) {
                  if (row[j] < closest[i])  // not settled by its bound: the exact distance
                    row[j] = distance_from_dot<T>(exact[j], sq[i], cand_sq[j], Metric::SqEuclidean);
                }
              }
              for (int64_t j = 0; j < m; ++j) sums[j] += static_cast<double>(std::min(closest[i], row[j]));
            }
            continue;
          }
        }
#endif
        candidate_dots(x + r0 * d, r1 - r0, cand.data(), m, d, out);
        for (int64_t i = r0; i < r1; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            T& v = out[(i - r0) * m + j];
            v = distance_from_dot<T>(v, sq[i], cand_sq[j], Metric::SqEuclidean);
            if (with_potential) sums[j] += static_cast<double>(std::min(closest[i], v));
          }
        }
      }
    });
  };
  const auto take_candidate = [&](int64_t slot, int64_t index) {
    std::memcpy(cand.data() + slot * d, x + index * d, sizeof(T) * d);
    cand_sq[slot] = sq[index];
    cand_index[slot] = index;
    if (xb.defined()) cand_term[slot] = screen.cand_term(sq[index]), cand_scale[slot] = screen.cand_scale(sq[index]);
  };

  centres[0] = first;
  take_candidate(0, first);
  distances(1, false);
  for (int64_t i = 0; i < n; ++i) {
    closest[i] = dist[i];
    second[i] = std::numeric_limits<T>::infinity();
    labels[i] = 0;
  }
  for (int64_t c = 1; c < k; ++c) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) cumulative[i] = total += static_cast<double>(closest[i]);
    for (int64_t j = 0; j < t; ++j) {
      const double target = draws[(c - 1) * t + j] * total;
      // The first point whose cumulative potential reaches the target (a NaN
      // target compares false everywhere and gives 0: never out of range).
      int64_t index = std::lower_bound(cumulative.begin(), cumulative.end(), target) - cumulative.begin();
      take_candidate(j, std::min(index, n - 1));
    }
    distances(t, true);
    int64_t best = 0;
    double best_potential = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < t; ++j) {
      double potential = 0;
      for (int64_t task = 0; task < tasks; ++task) potential += partial[task * t + j];
      if (potential < best_potential) best_potential = potential, best = j;  // ties: the first drawn
    }
    centres[c] = cand_index[best];
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) take_new_centre(dist[i * t + best], c, closest[i], second[i], labels[i]);
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_plus_plus_cpu(const at::Tensor& x, int64_t first,
                                                                                 const at::Tensor& draws,
                                                                                 c10::string_view precision) {
  constexpr const char* op = "kmeans_plus_plus";
  const bool reduced = check_kmeans_plus_plus_args(x, first, draws, precision, op);
  const int64_t n = x.size(0), k = draws.size(0) + 1;
  const at::ScalarType acc = accumulate_type(x.scalar_type());
  at::Tensor centres = at::empty({k}, x.options().dtype(at::kLong));
  at::Tensor labels = empty_output({n}, x.options().dtype(at::kLong), op, "N labels");
  at::Tensor closest = empty_output({n}, x.options().dtype(acc), op, "N distances");
  at::Tensor second = empty_output({n}, x.options().dtype(acc), op, "N distances");
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor draws_c = draws.contiguous();
  // The screen pays where reading x is the cost: float32 rows of at least
  // kScreenMinWidth features, on a CPU with AVX2 + FMA.
  at::Tensor xb;
#ifdef PYREID_HAS_AVX2_PATH
  if (reduced && acc == at::kFloat && x.size(1) >= kScreenMinWidth && cpu_has_avx2_fma()) xb = xa.to(at::kBFloat16);
#endif
  AT_DISPATCH_FLOATING_TYPES(acc, "kmeans_plus_plus_cpu", [&] {
    seed<scalar_t>(xa, xb, first, draws_c, centres.data_ptr<int64_t>(), labels.data_ptr<int64_t>(),
                   closest.data_ptr<scalar_t>(), second.data_ptr<scalar_t>());
  });
  return {centres, labels, closest, second};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) { m.impl("kmeans_plus_plus", &kmeans_plus_plus_cpu); }

}  // namespace pyreid
