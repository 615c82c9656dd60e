"""Loads the compiled kernels (``pyreid._C``) and checks they match this torch.

Importing ``_C`` registers every ``torch.ops.pyreid.*`` op. A missing or
mismatched build fails here, at the first use of ``pyreid.ops``, with what to do about it,
instead of later with "operator pyreid::... does not exist".
"""

import torch

_REBUILD_HINT = (
    "Rebuild pyreid against the torch you have: `pip install --no-build-isolation .` "
    "in the pyreid source folder (or `make install`)."
)

try:
    from pyreid import _C
except ImportError as error:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        f"pyreid's compiled extension pyreid._C could not be loaded ({error}). "
        "If you are running from the source tree, build it first "
        "(`pip install --no-build-isolation -e .`); if it was built against another "
        f"torch than the installed {torch.__version__}, the symbols will not match. "
        + _REBUILD_HINT
    ) from error


def _base_version(version: str) -> str:
    return version.split("+")[0]


def build_info() -> dict:
    """What the installed ``pyreid._C`` contains.

    Returns a dict with ``cuda_kernels`` (bool: CUDA kernels compiled in),
    ``torch`` (the torch version it was built against) and ``cuda`` (the CUDA
    runtime version it was built with, or None).
    """
    return dict(_C.build_info())


def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``torch.ops.pyreid.<op>`` has a kernel for ``device_type`` ("cpu", "cuda") in this build.

    The one probe pyreid uses (a CPU-only build registers no CUDA kernels, and
    torch's CUDA tensors then reach no pyreid kernel).
    """
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"pyreid::{op}", device_type.upper())


_built_with = _base_version(build_info()["torch"])
if _built_with != _base_version(torch.__version__):
    raise ImportError(
        f"pyreid._C was built against torch {_built_with} but torch {torch.__version__} is "
        "installed; C++ extensions only load into the torch they were built with. " + _REBUILD_HINT
    )
