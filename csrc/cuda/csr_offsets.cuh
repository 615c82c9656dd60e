// CSR layout helpers shared by the CUDA kernels that build sparse outputs
// (count pass -> offsets -> fill pass).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace pyreid {

// [0, cumsum(counts)]: the CSR offsets (size + 1 int64) of rows with these
// sizes, on the device of `counts`. The scan is ATen's (deterministic).
inline at::Tensor offsets_from_counts(const at::Tensor& counts) {
  const int64_t size = counts.size(0);
  at::Tensor ptr = at::zeros({size + 1}, counts.options());
  if (size > 0) ptr.narrow(0, 1, size).copy_(at::cumsum(counts, 0));
  return ptr;
}

// The last offset (the number of stored entries): one host sync, needed to
// allocate a data-dependent output.
inline int64_t total_from_offsets(const at::Tensor& ptr) {
  return ptr.select(0, ptr.size(0) - 1).item<int64_t>();
}

// Index of the row of a CSR matrix that holds entry p: the last i with
// ptr[i] <= p (empty rows, ptr[i] == ptr[i + 1], never match). ptr has rows + 1 entries.
__device__ __forceinline__ int64_t row_of_entry(const int64_t* ptr, int64_t rows, int64_t p) {
  // upper_bound over ptr[0, rows]: the first index with ptr[index] > p (>= 1, as ptr[0] = 0 <= p).
  int64_t lo = 0, hi = rows + 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (ptr[mid] <= p) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

// First index in the ascending array a[0, len) whose value is >= v.
__device__ __forceinline__ int64_t lower_bound(const int64_t* a, int64_t len, int64_t v) {
  int64_t lo = 0, hi = len;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (a[mid] < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace pyreid
