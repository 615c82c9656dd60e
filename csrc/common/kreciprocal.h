// Arithmetic of the k-reciprocal encoding shared by the CPU and CUDA kernels
// (kreciprocal_sets, kreciprocal_weights, kreciprocal_jaccard), so the CPU tests run the exact
// rules the GPU runs. Definitions: docs/design.md, "k-reciprocal encoding".
#pragma once

#include <cstdint>
#include <string>

#include <c10/util/Exception.h>

#include "common/host_device.h"

namespace pyreid {

// round(k1 / 2) as numpy rounds it (half to even): 1 -> 0, 5 -> 2, 7 -> 4, 30 -> 15.
PYREID_HOST_DEVICE int64_t half_k1(int64_t k1) {
  const int64_t q = k1 / 2;
  return (k1 % 2 == 1 && q % 2 == 1) ? q + 1 : q;
}

// Columns of a neighbour list with `available` columns that R(., k) looks at:
// the first k + 1, or all of them when the list is shorter (Cluster-Contrast
// lists have k1 columns, so R(., k1) sees k1).
PYREID_HOST_DEVICE int64_t reciprocal_columns(int64_t k, int64_t available) {
  return k + 1 < available ? k + 1 : available;
}

// Whether i is among the first `cols` entries of a neighbour list.
PYREID_HOST_DEVICE bool in_list(const int64_t* list, int64_t cols, int64_t i) {
  for (int64_t t = 0; t < cols; ++t) {
    if (list[t] == i) return true;
  }
  return false;
}

// The expansion rule |R(c) & R(i)| > 2/3 |R(c)|, in integers (exact).
PYREID_HOST_DEVICE bool expansion_accepts(int64_t overlap, int64_t candidate_size) {
  return 3 * overlap > 2 * candidate_size;
}

// Jaccard distance from the overlap s = sum_c min(V[i,c], V[j,c]) of two
// encodings whose rows sum to 1: 1 - s / (2 - s), clamped at 0.
PYREID_HOST_DEVICE float jaccard_from_overlap(float s) {
  const float d = 1.0f - s / (2.0f - s);
  return d > 0.0f ? d : 0.0f;
}

// The weights of the encoding (kreciprocal_weights): the two variants.
enum class EncodingVariant : int { Cluster = 0, Original = 1 };

inline EncodingVariant parse_encoding_variant(const std::string& name, const char* op) {
  if (name == "cluster") return EncodingVariant::Cluster;
  if (name == "original") return EncodingVariant::Original;
  TORCH_CHECK_VALUE(false, op, ": unknown variant '", name, "'; expected 'cluster' or 'original'");
}

// The softmax logit -d_ij of one pair, from <x_i, x_j> ("cluster") or
// |x_i - x_j|^2 ("original"); `row_scale` is max(row_max_i, tiny).
template <typename T>
PYREID_HOST_DEVICE T weight_logit(EncodingVariant variant, T dot_or_sqdist, T row_scale) {
  if (variant == EncodingVariant::Cluster) return -(T(2) - T(2) * dot_or_sqdist);
  return -(dot_or_sqdist / row_scale);
}

// The logit's input of a pair (i, j) found in row i's neighbour list, from
// its listed squared distance |x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2<x_i, x_j>
// instead of a new pass over the D features: <x_i, x_j> ("cluster", from the
// squared norms) or the squared distance itself ("original"). Equal to the
// direct computation up to float rounding.
template <typename T>
PYREID_HOST_DEVICE T pair_term_from_sqdist(EncodingVariant variant, T sqdist, T sqnorm_i, T sqnorm_j) {
  if (variant == EncodingVariant::Cluster) return (sqnorm_i + sqnorm_j - sqdist) / T(2);
  return sqdist;
}

// max(row_max_i, tiny): a point whose farthest neighbour is itself (all
// points equal) must not divide by zero.
template <typename T>
PYREID_HOST_DEVICE T row_scale_of(T row_max, T tiny) {
  return row_max > tiny ? row_max : tiny;
}

}  // namespace pyreid
