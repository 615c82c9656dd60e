// Arithmetic of the cluster-memory update shared by the CPU and CUDA kernels,
// so the CPU tests exercise the exact formulas the GPU runs.
//
// One update of a memory row r with a sample x (momentum m):
//   r <- m * r + (1 - m) * x            (blend, element by element, float32)
//   r <- r * (1 / max(||r||, 1e-12))    (normalise, as F.normalize does, but
//                                        multiplying by the reciprocal: within
//                                        one float32 rounding of its division
//                                        and several times cheaper on the CPU)
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace pyreid {

enum class MemoryUpdateMode : int { Momentum = 0, Hard = 1 };

// The blended value of one memory element before normalisation.
PYREID_HOST_DEVICE float momentum_blend(float momentum, float memory_value, float sample_value) {
  return momentum * memory_value + (1.0f - momentum) * sample_value;
}

// The factor that normalises a row whose sum of squares is sum_sq.
PYREID_HOST_DEVICE float normalise_scale(float sum_sq) {
  const float norm = sqrtf(sum_sq);
  return 1.0f / (norm > 1e-12f ? norm : 1e-12f);
}

// Hard mode keeps the sample with the smallest similarity, the first one on
// ties: a candidate replaces the current pick only when strictly smaller.
PYREID_HOST_DEVICE bool replaces_hardest(float candidate_dot, float hardest_dot) {
  return candidate_dot < hardest_dot;
}

}  // namespace pyreid
