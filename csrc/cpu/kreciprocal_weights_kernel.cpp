// CPU kreciprocal_weights: the encoding V's values, parallel over rows.
//
// Each row's stored pairs are few (|R*(i)|, a few times k1), so a row is one
// task unit: its logits go to a small per-thread buffer, then the row's
// softmax is written out. With the kNN lists and their distances, a pair
// found in row i's list (96% of them at Market-1501 scale) takes its
// distance from there: at D = 2048 the D-long products were most of the
// stage's time and memory traffic. The dot products use eight partial sums (a fixed
// order, so the result does not depend on the threads) which the compiler
// keeps in vector registers.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/kreciprocal.h"
#include "common/kreciprocal_checks.h"

namespace pyreid {
namespace {

constexpr int kLanes = 8;

// <a, b> or |a - b|^2 over d entries, in eight fixed partial sums.
template <typename T, bool kSquaredDifference>
T pair_sum(const T* a, const T* b, int64_t d) {
  T part[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= d; t += kLanes) {
    for (int u = 0; u < kLanes; ++u) {
      const T term = kSquaredDifference ? (a[t + u] - b[t + u]) * (a[t + u] - b[t + u]) : a[t + u] * b[t + u];
      part[u] += term;
    }
  }
  T sum = T(0);
  for (int u = 0; u < kLanes; ++u) sum += part[u];
  for (; t < d; ++t) sum += kSquaredDifference ? (a[t] - b[t]) * (a[t] - b[t]) : a[t] * b[t];
  return sum;
}

// Row i's neighbour list (index, squared distance), sorted by index for
// binary searches; empty without lists.
template <typename T>
void sorted_list(const int64_t* nb, const T* nd, int64_t k, int64_t i, std::vector<std::pair<int64_t, T>>& list) {
  list.clear();
  if (nb == nullptr) return;
  for (int64_t t = 0; t < k; ++t) list.emplace_back(nb[i * k + t], nd[i * k + t]);
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

template <typename T>
void encoding_rows(const T* x, int64_t n, int64_t d, const int64_t* crow, const int64_t* col, EncodingVariant variant,
                   const T* row_max, const int64_t* nb, const T* nd, int64_t k, const T* sqnorm, float* val) {
  const T tiny = std::numeric_limits<T>::min();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> logits;
    std::vector<std::pair<int64_t, T>> list;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p0 = crow[i], p1 = crow[i + 1];
      if (p0 == p1) continue;
      const T* xi = x + i * d;
      const T scale = variant == EncodingVariant::Original ? row_scale_of(row_max[i], tiny) : T(1);
      sorted_list(nb, nd, k, i, list);
      logits.resize(static_cast<size_t>(p1 - p0));
      T top = -std::numeric_limits<T>::infinity();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t j = col[p];
        const auto hit = std::lower_bound(list.begin(), list.end(), j,
                                          [](const std::pair<int64_t, T>& a, int64_t b) { return a.first < b; });
        T s;
        if (hit != list.end() && hit->first == j) {
          s = pair_term_from_sqdist(variant, hit->second, sqnorm ? sqnorm[i] : T(0), sqnorm ? sqnorm[j] : T(0));
        } else {
          const T* xj = x + j * d;
          s = variant == EncodingVariant::Cluster ? pair_sum<T, false>(xi, xj, d) : pair_sum<T, true>(xi, xj, d);
        }
        const T logit = weight_logit(variant, s, scale);
        logits[p - p0] = logit;
        top = std::max(top, logit);
      }
      T total = T(0);
      for (T& l : logits) {
        l = std::exp(l - top);
        total += l;
      }
      for (int64_t p = p0; p < p1; ++p) val[p] = static_cast<float>(logits[p - p0] / total);
    }
  });
}

// |x_i|^2 of every row, in pair_sum's order.
template <typename T>
std::vector<T> squared_norms(const T* x, int64_t n, int64_t d) {
  std::vector<T> out(static_cast<size_t>(n));
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = pair_sum<T, false>(x + i * d, x + i * d, d);
  });
  return out;
}

at::Tensor kreciprocal_weights_cpu(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                                   c10::string_view variant_name, const std::optional<at::Tensor>& row_max,
                                   const std::optional<at::Tensor>& neighbors,
                                   const std::optional<at::Tensor>& neighbor_dist) {
  constexpr const char* op = "kreciprocal_weights";
  const EncodingVariant variant = check_kreciprocal_weights_args(x, crow, col, std::string(variant_name), row_max, op);
  const bool lists = check_kreciprocal_weights_lists(x, neighbors, neighbor_dist, op);
  const int64_t n = x.size(0), d = x.size(1);
  check_csr(crow, col, n, op, "crow", "col");
  check_kreciprocal_weights_values(x, row_max, neighbor_dist, op);
  at::Tensor val = at::empty({col.size(0)}, x.options().dtype(at::kFloat));
  if (col.size(0) == 0) return val;
  const at::Tensor xc = x.contiguous(), crow_c = crow.contiguous(), col_c = col.contiguous();
  const at::Tensor row_max_c = row_max.has_value() ? row_max->contiguous() : at::Tensor();
  const at::Tensor nb_c = lists ? neighbors->contiguous() : at::Tensor();
  const at::Tensor nd_c = lists ? neighbor_dist->contiguous() : at::Tensor();
  const int64_t k = lists ? nb_c.size(1) : 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), op, [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    // The cluster variant's dot products from listed distances need the norms.
    const std::vector<scalar_t> sqnorm =
        lists && variant == EncodingVariant::Cluster ? squared_norms(xp, n, d) : std::vector<scalar_t>();
    encoding_rows<scalar_t>(xp, n, d, crow_c.data_ptr<int64_t>(), col_c.data_ptr<int64_t>(), variant,
                            row_max_c.defined() ? row_max_c.data_ptr<scalar_t>() : nullptr,
                            lists ? nb_c.data_ptr<int64_t>() : nullptr, lists ? nd_c.data_ptr<scalar_t>() : nullptr,
                            k, sqnorm.empty() ? nullptr : sqnorm.data(), val.data_ptr<float>());
  });
  return val;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyreid, CPU, m) {
  m.impl("kreciprocal_weights", &kreciprocal_weights_cpu);
}

}  // namespace pyreid
