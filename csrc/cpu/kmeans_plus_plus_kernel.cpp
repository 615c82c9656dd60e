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
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/accumulate.h"
#include "common/distance.h"
#include "common/kmeans_checks.h"
#include "cpu/distance_tiles.h"

namespace pyreid {
namespace {

// Rows per task: partial potentials are kept per task (deterministic sums).
constexpr int64_t kRowsPerTask = 256;

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

// R rows x C candidates of products, R * C accumulators in registers: each
// load of x feeds C multiply-adds and each load of a candidate R.
template <int R, int C>
__attribute__((target("avx2,fma"))) void dot_tile_avx2(const float* x, const float* p, int64_t d, int64_t t,
                                                        float* out) {
  __m256 acc[R][C];
  for (int u = 0; u < R; ++u)
    for (int v = 0; v < C; ++v) acc[u][v] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    __m256 q[C];
    for (int v = 0; v < C; ++v) q[v] = _mm256_loadu_ps(p + v * d + c);
    for (int u = 0; u < R; ++u) {
      const __m256 y = _mm256_loadu_ps(x + u * d + c);
      for (int v = 0; v < C; ++v) acc[u][v] = _mm256_fmadd_ps(y, q[v], acc[u][v]);
    }
  }
  for (int u = 0; u < R; ++u) {
    for (int v = 0; v < C; ++v) {
      float lanes[8];
      _mm256_storeu_ps(lanes, acc[u][v]);
      float s = 0;
      for (int l = 0; l < 8; ++l) s += lanes[l];
      for (int64_t e = c; e < d; ++e) s += x[u * d + e] * p[v * d + e];
      out[u * t + v] = s;
    }
  }
}

template <int R>
__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* x, const float* p, int64_t t, int64_t d,
                                                        float* out) {
  int64_t j = 0;
  for (; j + 3 <= t; j += 3) dot_tile_avx2<R, 3>(x, p + j * d, d, t, out + j);
  if (t - j == 2) dot_tile_avx2<R, 2>(x, p + j * d, d, t, out + j);
  if (t - j == 1) dot_tile_avx2<R, 1>(x, p + j * d, d, t, out + j);
}

__attribute__((target("avx2,fma"))) void candidate_dots_avx2(const float* x, int64_t rows, const float* p,
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

// The seeding loop on x in its accumulation dtype T (float or double).
template <typename T>
void seed(const at::Tensor& xa, int64_t first, const at::Tensor& draws_cpu, int64_t* centres, int64_t* labels,
          T* closest, T* second) {
  const int64_t n = xa.size(0), d = xa.size(1);
  const int64_t k = draws_cpu.size(0) + 1;
  const int64_t t = draws_cpu.size(0) > 0 ? draws_cpu.size(1) : 1;
  const T* x = xa.data_ptr<T>();
  const at::Tensor sq_tensor = cpu::norm_terms(xa, Metric::SqEuclidean);
  const T* sq = sq_tensor.data_ptr<T>();
  const double* draws = draws_cpu.data_ptr<double>();
  const int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;

  std::vector<T> cand(static_cast<size_t>(t * d)), cand_sq(t);
  std::vector<T> dist(static_cast<size_t>(n * t));
  std::vector<double> partial(static_cast<size_t>(tasks * t)), cumulative(n);
  std::vector<int64_t> cand_index(t);

  // Squared distances of every row to the candidates in `cand` (m of them),
  // into dist[i * m + j], and each task's potential sums min(closest, d^2).
  const auto distances = [&](int64_t m, bool with_potential) {
    at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t r0 = task * kRowsPerTask, r1 = std::min(n, r0 + kRowsPerTask);
        T* out = dist.data() + r0 * m;
        candidate_dots(x + r0 * d, r1 - r0, cand.data(), m, d, out);
        double* sums = partial.data() + task * m;
        std::fill(sums, sums + m, 0.0);
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
      for (int64_t i = begin; i < end; ++i) {
        const T v = dist[i * t + best];
        if (v < closest[i]) {
          second[i] = closest[i];
          closest[i] = v;
          labels[i] = c;
        } else if (v < second[i]) {
          second[i] = v;
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_plus_plus_cpu(const at::Tensor& x, int64_t first,
                                                                                 const at::Tensor& draws) {
  constexpr const char* op = "kmeans_plus_plus";
  check_kmeans_plus_plus_args(x, first, draws, op);
  const int64_t n = x.size(0), k = draws.size(0) + 1;
  const at::ScalarType acc = accumulate_type(x.scalar_type());
  at::Tensor centres = at::empty({k}, x.options().dtype(at::kLong));
  at::Tensor labels = empty_output({n}, x.options().dtype(at::kLong), op, "N labels");
  at::Tensor closest = empty_output({n}, x.options().dtype(acc), op, "N distances");
  at::Tensor second = empty_output({n}, x.options().dtype(acc), op, "N distances");
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor draws_c = draws.contiguous();
  AT_DISPATCH_FLOATING_TYPES(acc, "kmeans_plus_plus_cpu", [&] {
    seed<scalar_t>(xa, first, draws_c, centres.data_ptr<int64_t>(), labels.data_ptr<int64_t>(),
                   closest.data_ptr<scalar_t>(), second.data_ptr<scalar_t>());
  });
  return {centres, labels, closest, second};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) { m.impl("kmeans_plus_plus", &kmeans_plus_plus_cpu); }

}  // namespace pyreid
