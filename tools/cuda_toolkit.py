"""Where the CUDA toolkit is: the one search setup.py and `make gpu-check` both use.

Torch-free and import-free beyond the standard library: setup.py loads it
before importing torch (torch.utils.cpp_extension reads CUDA_HOME at import),
and tools/gpu_check_probe.py on a machine where pyreid is not built yet.

On our machines ``nvcc`` is a small shell script that execs the real compiler
(``exec /usr/local/cuda-13.0/bin/nvcc "$@"``); torch would take the script's
parent (``/usr/local``) as CUDA_HOME, which has no toolkit.
"""

import os
import re
import shutil

__all__ = ["find_toolkit"]


def _behind_wrapper(nvcc):
    """The toolkit folder of `nvcc`, following a shell script that execs the real one."""
    real = os.path.realpath(nvcc)
    try:
        with open(real, "rb") as f:
            head = f.read(4096)
    except OSError:
        head = b""
    if head.startswith(b"#!"):
        match = re.search(rb"exec\s+\"?([^\s\"]+/bin/nvcc)\"?", head)
        if match:
            real = os.path.realpath(match.group(1).decode())
    return os.path.dirname(os.path.dirname(real))


def _has_toolkit(home):
    return bool(home) and os.path.isfile(os.path.join(home, "include", "cuda.h"))


def _existing(path):
    return path if os.path.isfile(path) else None


def find_toolkit():
    """``(toolkit folder or None, nvcc path or None)``: $CUDA_HOME / $CUDA_PATH when they hold a toolkit,
    else the folder behind the ``nvcc`` on PATH, else /usr/local/cuda."""
    nvcc = shutil.which("nvcc")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if _has_toolkit(home):
            return home, nvcc or _existing(os.path.join(home, "bin", "nvcc"))
    if nvcc and _has_toolkit(_behind_wrapper(nvcc)):
        return _behind_wrapper(nvcc), nvcc
    if _has_toolkit("/usr/local/cuda"):
        return "/usr/local/cuda", nvcc or _existing("/usr/local/cuda/bin/nvcc")
    return None, nvcc
