// k-means++ seeding rules shared by the CPU and CUDA kernels, so the CPU
// tests run the arithmetic the GPU runs.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace pyreid {

// A new centre c at squared distance v from a point: it becomes the point's
// nearest (strictly nearer: ties stay with the earlier centre) or, failing
// that, possibly its second nearest.
template <typename T>
PYREID_HOST_DEVICE void take_new_centre(T v, int64_t c, T& closest, T& second, int64_t& label) {
  if (v < closest) {
    second = closest;
    closest = v;
    label = c;
  } else if (v < second) {
    second = v;
  }
}

}  // namespace pyreid
