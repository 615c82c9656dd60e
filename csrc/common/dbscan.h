// DBSCAN pieces shared by the CPU and CUDA kernels: the eps test, the two
// ways a row of the distance matrix is stored, and the final numbering, so
// the CPU tests exercise exactly what the GPU runs.
//
// Labels are defined (and proved equal to scikit-learn's sequential
// expansion) through one quantity per point v:
//   root(v) = the smallest core index u from which v can be reached by
//             following neighbour edges u -> w (w in N(u)) out of core points.
// scikit-learn starts a cluster at every core point not reached by an earlier
// cluster, in index order, and labels everything its expansion reaches that
// is still unlabelled. The core points that start clusters ("seeds") are
// exactly the u with root(u) == u, and v ends up in the cluster of root(v),
// so label(v) = rank of root(v) among the seeds, or -1 when no core point
// reaches v. Neighbourhoods are read by row, so this also holds for
// asymmetric input, where reachability is directed.
#pragma once

#include <cstdint>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "common/host_device.h"

namespace pyreid {
namespace dbscan {

// "No core point reaches this point": larger than every index.
constexpr int64_t kNoRoot = INT64_MAX;

// The dtype in which a distance is compared with eps, as scikit-learn does:
// float32 input against eps rounded to float32 (NumPy compares a float32
// array with a Python float in float32); float64 in float64; float16 (which
// scikit-learn upcasts) and bfloat16 exactly, in float64.
template <typename scalar_t>
struct CompareType {
  using type = double;
};
template <>
struct CompareType<float> {
  using type = float;
};
template <typename scalar_t>
using compare_t = typename CompareType<scalar_t>::type;

template <typename scalar_t>
PYREID_HOST_DEVICE bool within_eps(scalar_t d, compare_t<scalar_t> eps) {
  // Half/BFloat16 convert through float, which is exact.
  if constexpr (std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>) {
    return static_cast<double>(static_cast<float>(d)) <= eps;
  } else {
    return static_cast<compare_t<scalar_t>>(d) <= eps;
  }
}

// A dense N x N row-major matrix: entry p of the flat array is (p / n, p % n).
// The diagonal is stored like any entry (a point with d(i, i) > eps is not
// its own neighbour, as in scikit-learn).
template <typename scalar_t>
struct DenseRows {
  static constexpr bool kImplicitDiagonal = false;
  const scalar_t* dist;
  int64_t n;
  compare_t<scalar_t> eps;

  PYREID_HOST_DEVICE int64_t begin(int64_t i) const { return i * n; }
  PYREID_HOST_DEVICE int64_t end(int64_t i) const { return i * n + n; }
  PYREID_HOST_DEVICE int64_t column(int64_t i, int64_t p) const { return p - i * n; }
  PYREID_HOST_DEVICE bool is_neighbour(int64_t p) const { return within_eps(dist[p], eps); }
};

// CSR rows (no duplicate columns within a row): only stored entries are
// neighbours, and a row without a stored diagonal entry has an implicit
// d(i, i) = 0, so i is its own neighbour (scikit-learn sets the diagonal
// explicitly before searching). A stored diagonal is compared like any entry.
template <typename scalar_t>
struct CsrRows {
  static constexpr bool kImplicitDiagonal = true;
  const int64_t* crow;
  const int64_t* col;
  const scalar_t* values;
  compare_t<scalar_t> eps;

  PYREID_HOST_DEVICE int64_t begin(int64_t i) const { return crow[i]; }
  PYREID_HOST_DEVICE int64_t end(int64_t i) const { return crow[i + 1]; }
  PYREID_HOST_DEVICE int64_t column(int64_t, int64_t p) const { return col[p]; }
  PYREID_HOST_DEVICE bool is_neighbour(int64_t p) const { return within_eps(values[p], eps); }
};

// |N(i)| from the number of stored entries within eps and whether row i
// stores its diagonal.
template <typename Rows>
PYREID_HOST_DEVICE int64_t neighbour_count(int64_t stored_within_eps, bool diagonal_stored) {
  return stored_within_eps + ((Rows::kImplicitDiagonal && !diagonal_stored) ? 1 : 0);
}

// root(v) before any propagation: a core point reaches itself.
PYREID_HOST_DEVICE int64_t initial_root(int64_t v, bool core) { return core ? v : kNoRoot; }

// A seed starts a cluster: a core point no smaller core point reaches.
PYREID_HOST_DEVICE bool is_seed(int64_t u, bool core, int64_t root) { return core && root == u; }

// seed_rank_inclusive[u] = number of seeds in [0, u]; clusters are numbered
// 0, 1, 2, ... in the order of their seeds.
PYREID_HOST_DEVICE int64_t final_label(int64_t root, const int64_t* seed_rank_inclusive) {
  return root == kNoRoot ? int64_t(-1) : seed_rank_inclusive[root] - 1;
}

}  // namespace dbscan
}  // namespace pyreid
