"""What `make gpu-check` needs to know about this machine, written as JSON.

    python tools/gpu_check_probe.py --json FILE [--modules numpy,PIL,...]

The GPU (name, compute capability, memory), torch and its CUDA version, the
CUDA toolkit (nvcc, compute-sanitizer), ninja, and which Python modules are
importable. It runs as its own process so that gpu-check itself never imports
torch (its --dry-run and its report work without it) and so that a hanging
CUDA initialisation is killed by the stage's timeout. It never fails on what
it finds: gpu-check decides what a missing piece means.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_toolkit import find_toolkit  # noqa: E402  (the search setup.py uses)


def _run(command, timeout_s=20):
    """stdout of a short command, or None when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def cuda_toolkit():
    """(toolkit folder or None, nvcc path or None), searched as setup.py does."""
    return find_toolkit()


def _existing(path):
    return path if os.path.isfile(path) else None


def find_compute_sanitizer(toolkit):
    """compute-sanitizer on PATH, else in the toolkit (bin/ holds a link, compute-sanitizer/ the tool)."""
    found = shutil.which("compute-sanitizer")
    if found or toolkit is None:
        return found
    for relative in ("bin/compute-sanitizer", "compute-sanitizer/compute-sanitizer"):
        candidate = os.path.join(toolkit, relative)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def tool_path():
    """PATH with this Python's scripts folder first: pip puts `ninja` there, torch's build looks on PATH."""
    return os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])


def find_ninja():
    found = shutil.which("ninja", path=tool_path())
    if found:
        return found
    try:
        import ninja  # the pip package; its binary may sit outside PATH

        candidate = os.path.join(ninja.BIN_DIR, "ninja")
        return candidate if os.path.isfile(candidate) else None
    except (ImportError, AttributeError):
        return None


def nvcc_release(nvcc):
    out = _run([nvcc, "--version"]) if nvcc else None
    match = re.search(r"release (\d+\.\d+)", out or "")
    return match.group(1) if match else None


def nvidia_smi():
    """Driver version and GPU names from nvidia-smi, when it is installed."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if not out:
        return None
    rows = [[part.strip() for part in line.split(",")] for line in out.strip().splitlines()]
    return [{"name": r[0], "driver_version": r[1], "memory_total": r[2]} for r in rows if len(r) == 3]


def torch_and_gpu():
    """torch's versions and GPU 0 (the GPU the check builds for and runs on)."""
    try:
        import torch
    except Exception as error:  # a broken torch install is a finding, not a crash
        return {"error": f"{type(error).__name__}: {error}"}, None
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": False, "device_count": 0}
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["device_count"] = torch.cuda.device_count()
        info["cudnn"] = torch.backends.cudnn.version() if info["cuda_available"] else None
    except Exception as error:
        info["error"] = f"{type(error).__name__}: {error}"
    if not info["cuda_available"]:
        return info, None
    major, minor = torch.cuda.get_device_capability(0)
    props = torch.cuda.get_device_properties(0)
    gpu = {
        "name": torch.cuda.get_device_name(0),
        "capability": [major, minor],
        # The one architecture to build for: TORCH_CUDA_ARCH_LIST's spelling.
        "arch": f"{major}.{minor}",
        "total_memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
    }
    return info, gpu


def probe(modules):
    torch_info, gpu = torch_and_gpu()
    toolkit, nvcc = cuda_toolkit()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpus": cpus,
        "torch": torch_info,
        "gpu": gpu,
        "nvidia_smi": nvidia_smi(),
        "cuda_toolkit": toolkit,
        "nvcc": nvcc,
        "nvcc_release": nvcc_release(nvcc),
        "compute_sanitizer": find_compute_sanitizer(toolkit),
        "ninja": find_ninja(),
        "tool_path": tool_path(),
        "modules": {name: importlib.util.find_spec(name) is not None for name in modules},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="file to write the findings to")
    parser.add_argument("--modules", default="", help="comma-separated Python modules to look for")
    args = parser.parse_args(argv)
    found = probe([name for name in args.modules.split(",") if name])
    with open(args.json, "w") as f:
        json.dump(found, f, indent=2)
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
