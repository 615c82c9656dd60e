"""Runs the CUDA kernels of kreciprocal_sets and kreciprocal_jaccard on the CPU and compares them with the CPU kernels.

For machines without a GPU. The .cu sources are compiled by the host C++
compiler after a mechanical rewrite: every launch ``kernel<<<grid, block, ...>>>(args)``
becomes a loop that runs ``kernel(args)`` once per (block, thread) with
blockIdx/threadIdx set, one thread after another; the stream and the device
guard are dropped. Tensors are allocated from the inputs' options, so with CPU
inputs the ATen calls (sort, cumsum, item) run on the CPU. The chunk budgets
can be lowered to force many chunks.

This checks the kernels' logic and the host orchestration (layouts, offsets,
chunking) exactly; it cannot see races, launch limits or anything that
depends on threads running concurrently (these kernels share no data between
threads: each writes its own rows). The real check is the CUDA tests in
tests/test_kreciprocal_sets.py and tests/test_kreciprocal_jaccard.py on a GPU.

    .venv/bin/python tools/emulate_kreciprocal_cuda.py            # run from the repository root
"""

import os
import re
import sys

import torch
from torch.utils.cpp_extension import load_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHIM = r"""
#include <cstdint>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

namespace emu {
struct Dim3 {
  unsigned int x = 0, y = 1, z = 1;
};
}  // namespace emu
inline emu::Dim3 blockIdx, threadIdx, blockDim, gridDim;

namespace emu {
// kernel<<<grid, block, smem, stream>>>(args) -> launch(grid, block, smem, stream)(kernel, args)
struct Launch {
  unsigned int grid, block;
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, Args... args) const {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned int b = 0; b < grid; ++b) {
      for (unsigned int t = 0; t < block; ++t) {
        blockIdx.x = b;
        threadIdx.x = t;
        kernel(args...);
      }
    }
  }
};
inline Launch launch(unsigned int grid, int block, int = 0, int = 0) {
  return Launch{grid, static_cast<unsigned int>(block)};
}
}  // namespace emu

namespace pyreid {
template <typename T>
inline T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}
inline unsigned int grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t blocks = ceil_div<int64_t>(n, threads);
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < max_blocks ? blocks : max_blocks);
}
}  // namespace pyreid
"""


def rewrite(source, replacements):
    """The .cu source as host C++ (see the module docstring)."""
    for old, new in replacements:
        assert old in source, f"not found in the source: {old}"
        source = source.replace(old, new)
    source = source.replace("#include <ATen/cuda/CUDAContext.h>\n", "")
    source = source.replace("#include <c10/cuda/CUDAGuard.h>\n", "")
    source = source.replace('#include "common/cuda_helpers.cuh"\n', "")
    source = re.sub(r"const c10::cuda::CUDAGuard device_guard\([^;]*\);", "", source)
    source = source.replace(
        "const cudaStream_t stream = at::cuda::getCurrentCUDAStream();", "const int stream = 0;"
    )
    source = source.replace("C10_CUDA_KERNEL_LAUNCH_CHECK();", "")
    source, launches = re.subn(r"(\w+(?:<\w+>)?)<<<([^>]*)>>>\(", r"emu::launch(\2)(\1, ", source)
    assert launches > 0
    source = re.sub(r"TORCH_LIBRARY_IMPL\(pyreid, CUDA, m\) \{[^}]*\}", "", source)
    assert "<<<" not in source and "cuda::" not in source
    return source


def build(name, file, entry, signature, replacements):
    with open(os.path.join(ROOT, "csrc", "cuda", file)) as f:
        source = SHIM + rewrite(f.read(), replacements)
    source += f"\n{signature} {{ return pyreid::{entry}; }}\n"
    build_dir = os.path.join("/tmp", f"pyreid-emulate-{name}")
    os.makedirs(build_dir, exist_ok=True)
    return load_inline(
        name=name,
        cpp_sources=[source],
        functions=[name],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O2", "-std=c++20"],
        build_directory=build_dir,
        verbose=False,
    )


def build_sets(scratch_elements):
    return build(
        f"emu_sets_{scratch_elements}",
        "kreciprocal_sets_kernel.cu",
        "kreciprocal_sets_cuda(neighbors, k1)",
        f"std::tuple<at::Tensor, at::Tensor> emu_sets_{scratch_elements}(const at::Tensor& neighbors, int64_t k1)",
        [
            (
                "constexpr int64_t kScratchElements = int64_t(1) << 25;",
                f"constexpr int64_t kScratchElements = {scratch_elements};",
            )
        ],
    )


def build_jaccard(budget):
    return build(
        f"emu_jaccard_{budget}",
        "kreciprocal_jaccard_kernel.cu",
        "kreciprocal_jaccard_cuda(crow, col, val, expansion, rows, max_distance)",
        f"std::tuple<at::Tensor, at::Tensor, at::Tensor> emu_jaccard_{budget}(const at::Tensor& crow, "
        "const at::Tensor& col, const at::Tensor& val, const at::Tensor& expansion, int64_t rows, "
        "double max_distance)",
        [
            (
                "constexpr int64_t kContributionBudget = int64_t(1) << 26;",
                f"constexpr int64_t kContributionBudget = {budget};",
            )
        ],
    )


def same(out, ref, what):
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        assert a.dtype == b.dtype and torch.equal(a, b), what


def main():
    import pyreid
    from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from common import clustered_features

    def features(n, d, seed, repeat=1):
        x = clustered_features(n, d, clusters=8, spread=0.5, seed=seed, dtype=torch.float64)
        return torch.nn.functional.normalize(x, dim=1).float().repeat(repeat, 1)

    sets_modules = [build_sets(s) for s in (int(2**25), 64)]
    jaccard_modules = [build_jaccard(b) for b in (int(2**26), 1, 997)]
    sets_fns = [getattr(m, m.__name__) for m in sets_modules]
    jaccard_fns = [getattr(m, m.__name__) for m in jaccard_modules]
    checked = 0

    # kreciprocal_sets: k-NN lists, arbitrary lists with repeats, duplicated points.
    for n, d, k1, k in [
        (2, 3, 1, 1),
        (2, 3, 1, 2),
        (6, 4, 5, 6),
        (31, 8, 30, 30),
        (57, 16, 20, 21),
        (301, 32, 30, 31),
    ]:
        _, nb = pyreid.ops.knn(features(n, d, n + k), k=k)
        ref = pyreid.ops.kreciprocal_sets(nb, k1)
        for fn in sets_fns:
            same(fn(nb, k1), ref, ("sets", n, k1, k))
            checked += 1
    for n, k1, k in [(5, 2, 4), (64, 10, 11), (200, 20, 25)]:
        g = torch.Generator().manual_seed(n)
        nb = torch.randint(0, n, (n, k), generator=g)
        nb[:, 0] = torch.arange(n)
        near = (torch.arange(n)[:, None] + torch.arange(1, min(k, 6))[None, :]) % n
        nb[:, 1 : near.shape[1] + 1] = near
        ref = pyreid.ops.kreciprocal_sets(nb, k1)
        for fn in sets_fns:
            same(fn(nb, k1), ref, ("sets arbitrary", n, k1, k))
            checked += 1
    _, nb = pyreid.ops.knn(features(25, 8, 11, repeat=4), k=13)
    for fn in sets_fns:
        same(fn(nb, 12), pyreid.ops.kreciprocal_sets(nb, 12), "sets duplicates")
        checked += 1

    # kreciprocal_jaccard: encodings of both variants, rows < N, max_distance < 1, k2 = 1, duplicates.
    cases = [
        (2, 3, 1, 1, "cluster", 2, 1.0, 1),
        (6, 4, 5, 2, "original", 6, 1.0, 1),
        (31, 8, 30, 6, "cluster", 31, 1.0, 1),
        (57, 16, 20, 6, "original", 57, 0.5, 1),
        (120, 16, 9, 1, "cluster", 120, 1.0, 1),
        (301, 32, 30, 6, "cluster", 37, 1.0, 1),
        (301, 32, 20, 6, "original", 301, 0.0, 1),
        (30, 8, 12, 4, "cluster", 120, 1.0, 4),
        (200, 16, 20, 3, "cluster", 0, 1.0, 1),
    ]
    for n, d, k1, k2, variant, rows, max_distance, repeat in cases:
        x = features(n, d, n + k1, repeat)
        nb, crow, col, val = kreciprocal_encoding(x, k1, variant)
        args = (crow, col, val, nb[:, :k2].contiguous(), rows, max_distance)
        ref = pyreid.ops.kreciprocal_jaccard(*args)
        for fn in jaccard_fns:
            same(fn(*args), ref, ("jaccard", n, k1, k2, variant, rows, max_distance))
            checked += 1
    # Random encodings with empty rows and repeated expansion entries; an empty encoding.
    for k2 in (1, 3):
        for rows in (0, 1, 37, 80):
            g = torch.Generator().manual_seed(10 * rows + k2)
            n = 80
            dense = torch.zeros(n, n)
            for i in range(n):
                size = int(torch.randint(0, 7, (1,), generator=g))
                if size:
                    w = torch.rand(size, generator=g) + 0.1
                    dense[i, torch.randperm(n, generator=g)[:size]] = w / w.sum()
            sparse = dense.to_sparse_csr()
            expansion = torch.randint(0, n, (n, k2), generator=g)
            expansion[:, 0] = torch.arange(n)
            args = (sparse.crow_indices(), sparse.col_indices(), sparse.values(), expansion, rows, 1.0)
            ref = pyreid.ops.kreciprocal_jaccard(*args)
            for fn in jaccard_fns:
                same(fn(*args), ref, ("jaccard random", k2, rows))
                checked += 1
    empty = (torch.zeros(8, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    args = (*empty, torch.arange(7)[:, None].repeat(1, 2), 7, 1.0)
    for fn in jaccard_fns:
        same(fn(*args), pyreid.ops.kreciprocal_jaccard(*args), "jaccard empty encoding")
        checked += 1
    print(f"emulated CUDA kernels equal the CPU kernels bit for bit in {checked} comparisons")


if __name__ == "__main__":
    main()
