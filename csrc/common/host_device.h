// PYREID_HOST_DEVICE marks arithmetic shared by the CPU and CUDA kernels
// (distance, k-reciprocal, DBSCAN and cluster-memory rules): __host__
// __device__ under nvcc, a plain inline function for the host compiler, so
// the CPU tests run the exact code the GPU runs. Defined here only.
#pragma once

#if defined(__CUDACC__)
#define PYREID_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYREID_HOST_DEVICE inline
#endif
