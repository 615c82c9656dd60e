"""Build script for pyreid: one extension, ``pyreid._C``.

Sources: ``csrc/*.cpp`` and ``csrc/cpu/*.cpp`` always; ``csrc/cuda/*.cu`` when
CUDA kernels are wanted (see ``_want_cuda``). Environment switches:

  FORCE_CUDA=1          build the CUDA kernels even with no GPU visible (CI does)
  PYREID_FORCE_CPU=1    never build the CUDA kernels
  TORCH_CUDA_ARCH_LIST  GPU architectures, e.g. "9.0" or "8.0;9.0+PTX"
  DEBUG=1               -O0 -g, and -G -lineinfo for device code
  NVCC_FLAGS            extra flags for nvcc (space separated)
  MAX_JOBS              parallel compile jobs (ninja)
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


# torch.utils.cpp_extension reads CUDA_HOME when it is imported: settle it first.
sys.path.insert(0, os.path.join(ROOT, "tools"))
from cuda_toolkit import find_toolkit  # noqa: E402  (the search gpu-check uses too)

_CUDA_HOME = find_toolkit()[0]
if _CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = _CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda():
    if _env_flag("PYREID_FORCE_CPU"):
        return False, "PYREID_FORCE_CPU=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if _CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    if _env_flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.cuda.is_available():
        return True, "a GPU is visible"
    return False, "no GPU visible (set FORCE_CUDA=1 to build the CUDA kernels anyway)"


def _nvidia_include_dirs():
    """CUDA library headers (cublas_v2.h, cusparse.h...) from the pip nvidia packages."""
    if _CUDA_HOME and os.path.isfile(os.path.join(_CUDA_HOME, "include", "cublas_v2.h")):
        return []
    dirs = []
    for site in sys.path:
        for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
            for d in sorted(glob.glob(os.path.join(site, pattern))):
                if os.path.isfile(os.path.join(d, "cublas_v2.h")) and d not in dirs:
                    dirs.append(d)
    return dirs[:1]


def _openmp_flag():
    """-fopenmp when torch runs at::parallel_for on OpenMP (Linux builds), else None."""
    if not torch.backends.openmp.is_available() or sys.platform in ("darwin", "win32"):
        return None
    return "-fopenmp"


def _extension():
    with_cuda, reason = _want_cuda()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    debug = _env_flag("DEBUG")
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    # -fno-math-errno lets the compiler vectorise loops that call sqrt.
    cxx += ["-std=c++20", "-fno-math-errno", "-fdiagnostics-color=always"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    kwargs = {}
    # at::parallel_for is a header template: it runs its chunks on torch's
    # OpenMP threads only in code compiled with -fopenmp. Without the flag
    # every kernel's parallel_for silently runs on one thread.
    openmp = _openmp_flag()
    if openmp:
        cxx.append(openmp)
        kwargs["extra_link_args"] = [openmp]
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("PYREID_WITH_CUDA", None))
        include_dirs += _nvidia_include_dirs()
        nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        if debug:
            nvcc = ["-O0", "-g", "-G", "-std=c++20", "--expt-relaxed-constexpr"]
        if openmp:
            nvcc += ["-Xcompiler", openmp]  # host code of .cu files: same parallel_for as the .cpp files
        nvcc += os.environ.get("NVCC_FLAGS", "").split()
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # With no GPU to ask, torch would target every architecture it knows:
            # slow to build. Ampere and Hopper, plus PTX for newer cards.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": nvcc}
        ext_class = CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext_class = CppExtension
    print(
        f"pyreid: building pyreid._C with CUDA kernels: {'yes' if with_cuda else 'no'} ({reason}); "
        f"torch {torch.__version__}, CUDA_HOME={_CUDA_HOME}, "
        f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}, "
        f"OpenMP: {'yes' if openmp else 'no'}, {len(sources)} sources",
        flush=True,
    )
    return ext_class(
        name="pyreid._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        **kwargs,
    )


class IncrementalBuildExtension(BuildExtension):
    """Keeps object files in build/temp for every kind of build.

    pip's editable and wheel builds otherwise compile in a fresh temporary
    folder each time; a fixed folder lets ninja rebuild only what changed
    (ninja also rebuilds a file whose compile flags changed).
    """

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(ROOT, "build", "temp")


setup(
    packages=find_packages(include=["pyreid", "pyreid.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": IncrementalBuildExtension.with_options(use_ninja=True)},
)
