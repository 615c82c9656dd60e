// CUDA kmeans_plus_plus: greedy k-means++ seeding with no host round trip.
//
// Each of the k - 1 steps is five launches on the current stream and never
// reads a value back: the cumulative potential (at::cumsum into one buffer),
// the T candidates by binary search (one thread each), their squared
// distances to every row (one warp per row, four candidates per read of the
// row), their potentials (one block per candidate, a fixed-order tree sum in
// float64, so the result is deterministic), and the update, in which every
// block finds the best candidate from the T potentials itself and the first
// thread records the centre. The distances of the T candidates (N x T) are
// kept for the update instead of a second read of x.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/accumulate.h"
#include "common/cuda_helpers.cuh"
#include "common/distance.h"
#include "common/kmeans.h"
#include "common/kmeans_checks.h"
#include "cuda/distance_tiles.cuh"

namespace pyreid {
namespace {

constexpr const char* kOp = "kmeans_plus_plus";
constexpr int kThreads = 256;
// Candidates per read of a row in the distance kernel (accumulators per lane).
constexpr int kCandidatesPerPass = 4;

// cand[j] = the first point whose cumulative potential reaches draws[j] * total.
__global__ void draw_candidates_kernel(const double* __restrict__ cumulative, int64_t n,
                                       const double* __restrict__ draws, int64_t t, int64_t* __restrict__ cand) {
  const double total = cumulative[n - 1];
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    const double target = draws[j] * total;
    int64_t lo = 0, hi = n;  // lower_bound: a NaN target compares false everywhere and gives 0
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (cumulative[mid] < target) lo = mid + 1; else hi = mid;
    }
    cand[j] = lo < n ? lo : n - 1;
  }
}

// dist[i * t + j] = squared distance from row i to candidate row cand[j].
template <typename T>
__global__ void candidate_distances_kernel(const T* __restrict__ x, const T* __restrict__ sq, int64_t n, int64_t d,
                                           const int64_t* __restrict__ cand, int64_t t, T* __restrict__ dist) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < n; row += warps) {
    const T* r = x + row * d;
    for (int64_t j0 = 0; j0 < t; j0 += kCandidatesPerPass) {
      const int m = static_cast<int>(t - j0 < kCandidatesPerPass ? t - j0 : kCandidatesPerPass);
      T acc[kCandidatesPerPass] = {};
      for (int64_t c = lane; c < d; c += 32) {
        const T v = r[c];
#pragma unroll
        for (int q = 0; q < kCandidatesPerPass; ++q)
          if (q < m) acc[q] += v * x[cand[j0 + q] * d + c];
      }
#pragma unroll
      for (int q = 0; q < kCandidatesPerPass; ++q) {
        const T dot = warp_sum(acc[q]);
        if (lane == 0 && q < m) {
          const int64_t j = j0 + q;
          dist[row * t + j] = distance_from_dot<T>(dot, sq[row], sq[cand[j]], Metric::SqEuclidean);
        }
      }
    }
  }
}

// potential[j] = sum_i min(closest[i], dist[i * t + j]) in float64; one block per candidate.
template <typename T>
__global__ void candidate_potentials_kernel(const T* __restrict__ closest, const T* __restrict__ dist, int64_t n,
                                            int64_t t, double* __restrict__ potential) {
  __shared__ double partial[kThreads];
  const int64_t j = blockIdx.x;
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const T v = dist[i * t + j];
    s += static_cast<double>(v < closest[i] ? v : closest[i]);
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) potential[j] = partial[0];
}

// The best candidate (smallest potential, ties to the first drawn) becomes
// centre c; every point's closest / second / label take its distance in.
template <typename T>
__global__ void apply_best_kernel(const double* __restrict__ potential, const int64_t* __restrict__ cand, int64_t t,
                                  const T* __restrict__ dist, int64_t n, int64_t c, int64_t* __restrict__ centres,
                                  T* __restrict__ closest, T* __restrict__ second, int64_t* __restrict__ labels) {
  int64_t best = 0;
  for (int64_t j = 1; j < t; ++j)
    if (potential[j] < potential[best]) best = j;
  if (blockIdx.x == 0 && threadIdx.x == 0) centres[c] = cand[best];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    take_new_centre(dist[i * t + best], c, closest[i], second[i], labels[i]);
}

template <typename T>
__global__ void first_centre_kernel(const T* __restrict__ dist, int64_t n, int64_t first, int64_t* __restrict__ centres,
                                    T* __restrict__ closest, T* __restrict__ second, int64_t* __restrict__ labels) {
  if (blockIdx.x == 0 && threadIdx.x == 0) centres[0] = first;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    closest[i] = dist[i];
    second[i] = std::numeric_limits<T>::infinity();
    labels[i] = 0;
  }
}

// precision "auto" is "fp32" here: the GPU reads x fast enough that the
// step is not worth a screen yet.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_plus_plus_cuda(const at::Tensor& x, int64_t first,
                                                                                  const at::Tensor& draws,
                                                                                  c10::string_view precision) {
  check_kmeans_plus_plus_args(x, first, draws, precision, kOp);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), d = x.size(1), k = draws.size(0) + 1;
  const int64_t t = draws.size(0) > 0 ? draws.size(1) : 1;
  const at::ScalarType acc = accumulate_type(x.scalar_type());
  at::Tensor centres = at::empty({k}, x.options().dtype(at::kLong));
  at::Tensor labels = empty_output({n}, x.options().dtype(at::kLong), kOp, "N labels");
  at::Tensor closest = empty_output({n}, x.options().dtype(acc), kOp, "N distances");
  at::Tensor second = empty_output({n}, x.options().dtype(acc), kOp, "N distances");
  const at::Tensor xa = x.to(acc).contiguous();
  const at::Tensor draws_c = draws.contiguous();
  const at::Tensor sq = cuda::norm_terms(xa, Metric::SqEuclidean);
  at::Tensor dist = empty_output({n, t}, x.options().dtype(acc), kOp, "N x T candidate distances");
  at::Tensor cumulative = at::empty({n}, x.options().dtype(at::kDouble));
  at::Tensor potential = at::empty({t}, x.options().dtype(at::kDouble));
  at::Tensor cand = at::full({1}, first, x.options().dtype(at::kLong));
  at::Tensor cands = at::empty({t}, x.options().dtype(at::kLong));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int row_blocks = grid_for(n * 32, kThreads);
  const unsigned int point_blocks = grid_for(n, kThreads);

  AT_DISPATCH_FLOATING_TYPES(acc, "kmeans_plus_plus_cuda", [&] {
    const scalar_t* xp = xa.data_ptr<scalar_t>();
    const scalar_t* sqp = sq.data_ptr<scalar_t>();
    scalar_t* distp = dist.data_ptr<scalar_t>();
    scalar_t* closestp = closest.data_ptr<scalar_t>();
    scalar_t* secondp = second.data_ptr<scalar_t>();
    int64_t* labelsp = labels.data_ptr<int64_t>();
    int64_t* centresp = centres.data_ptr<int64_t>();
    candidate_distances_kernel<scalar_t><<<row_blocks, kThreads, 0, stream>>>(xp, sqp, n, d, cand.data_ptr<int64_t>(),
                                                                              1, distp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    first_centre_kernel<scalar_t><<<point_blocks, kThreads, 0, stream>>>(distp, n, first, centresp, closestp, secondp,
                                                                         labelsp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    for (int64_t c = 1; c < k; ++c) {
      at::cumsum_out(cumulative, closest, 0, at::kDouble);
      draw_candidates_kernel<<<1, 32, 0, stream>>>(cumulative.data_ptr<double>(), n,
                                                   draws_c.data_ptr<double>() + (c - 1) * t, t,
                                                   cands.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      candidate_distances_kernel<scalar_t><<<row_blocks, kThreads, 0, stream>>>(xp, sqp, n, d,
                                                                                cands.data_ptr<int64_t>(), t, distp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      candidate_potentials_kernel<scalar_t><<<static_cast<unsigned int>(t), kThreads, 0, stream>>>(
          closestp, distp, n, t, potential.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      apply_best_kernel<scalar_t><<<point_blocks, kThreads, 0, stream>>>(potential.data_ptr<double>(),
                                                                         cands.data_ptr<int64_t>(), t, distp, n, c,
                                                                         centresp, closestp, secondp, labelsp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {centres, labels, closest, second};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CUDA, m) { m.impl("kmeans_plus_plus", &kmeans_plus_plus_cuda); }

}  // namespace pyreid
