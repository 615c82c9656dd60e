"""Training checkpoints: written atomically, read back with clear errors, RNG states included.

A training checkpoint (``checkpoint.pth``) is a dict with ``"format":
"pyreid-checkpoint"``: every model's state and the arguments that rebuild it
(``models``, ``model_args``, keyed by the algorithm's model names, and which one
is evaluated: ``evaluated_model``), every optimiser and schedule
(``optimizers``, ``schedulers``), frozen parameter groups and model
re-creations (``frozen``, ``generation``), the algorithm's and the hooks'
states, the epoch it ends, the random generators (torch, CUDA, numpy,
python), the config and options, and the metrics history. A model file
(``best.pth``) holds one model: ``model`` and ``model_args``.
:func:`model_state` reads the evaluated model's weights from either.

Version 1 (pyreid before the training layer held several models) had one
``model``, ``optimizer`` and ``scheduler`` and the best score under ``best``;
:func:`load_checkpoint` reads it as version 2.
It holds only tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``: opening a checkpoint never runs code.

Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the old file (``os.replace`` is atomic on POSIX and Windows): a
run killed while writing leaves the previous checkpoint intact. A write that
fails (a full disk) raises :class:`CheckpointWriteError` naming the file;
:func:`remove_stale_temporaries` clears what a killed writer left behind.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["FORMAT", "VERSION", "CheckpointError", "CheckpointWriteError", "save_atomic", "write_error",
           "remove_stale_temporaries", "load_checkpoint", "model_state", "rng_state",
           "set_rng_state"]

FORMAT = "pyreid-checkpoint"
VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, corrupt or not pyreid's."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint or metrics file could not be written (the disk is full, the folder read-only)."""


def _no_space(error: BaseException) -> bool:
    # torch.save reports a full disk as RuntimeError("[enforce fail at inline_container.cc:...] . unexpected
    # pos ...") from its zip writer, or as "PytorchStreamWriter failed writing file ...": no errno survives.
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or "unexpected pos" in text
            or "failed writing file" in text)


def write_error(error: BaseException, path: str) -> CheckpointWriteError:
    """The error to raise when writing ``path`` failed with ``error``: one line that names the file."""
    if _no_space(error):
        return CheckpointWriteError(f"no space left on device while writing {path}; the previous file, if any, "
                                    "is kept: free some space and continue with --resume")
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return CheckpointWriteError(f"cannot write {path}: {detail}; the previous file, if any, is kept")


def _tmp_name(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{os.getpid()}")


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename; :class:`CheckpointWriteError` if
    the write fails (``path`` is then untouched)."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise write_error(e, path) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the ``.NAME.tmp-PID`` files of :func:`save_atomic` (and of the metrics writer) in ``folder``
    whose writer ``PID`` is no longer running (a run killed mid-write); returns the files removed. A
    temporary of a live process (another run writing there) is left alone."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        stem, sep, pid = name.rpartition(".tmp-")
        if not sep or not stem or not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def load_checkpoint(path: str, map_location: str = "cpu") -> Dict[str, Any]:
    """Read a pyreid checkpoint; a :class:`CheckpointError` says what is wrong with any other file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        size = os.path.getsize(path)
        raise CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: it is truncated or corrupt "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = f"a dict with keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a pyreid training checkpoint (it holds {what}); to start a run from the weights "
            "it holds, pass it as --weights FILE"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt['version']} (written by pyreid "
                              f"{ckpt.get('pyreid_version', '?')}); this pyreid reads up to {VERSION}: upgrade pyreid")
    return _upgrade(ckpt)


def _upgrade(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """A version-1 training checkpoint in version 2's layout (its one model is ``"model"``)."""
    if ckpt.get("version", 0) >= 2 or "optimizer" not in ckpt:
        return ckpt
    ckpt = dict(ckpt)
    ckpt.update(models={"model": ckpt.pop("model")}, model_args={"model": ckpt.pop("model_args", None)},
                optimizers={"model": ckpt.pop("optimizer")}, schedulers={"model": ckpt.pop("scheduler")},
                evaluated_model="model", hooks={"evaluation": {"best": ckpt.pop("best", {"mAP": -1.0, "epoch": None})}},
                version=2)
    return ckpt


def model_state(ckpt: Dict[str, Any], path: str = "checkpoint") -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """``(state_dict, model_args)`` of the evaluated model in a training checkpoint or a model file."""
    if "models" in ckpt:
        name = ckpt.get("evaluated_model", "model")
        return ckpt["models"][name], ckpt.get("model_args", {}).get(name)
    if "model" in ckpt:
        return ckpt["model"], ckpt.get("model_args")
    raise CheckpointError(f"{path} holds no model (keys: {sorted(ckpt)})")


def rng_state() -> Dict[str, Any]:
    """The states of every random generator a run draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: Dict[str, Any], cuda: Optional[bool] = None) -> None:
    """Restore what :func:`rng_state` captured (CUDA only when both sides have it)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    use_cuda = torch.cuda.is_available() if cuda is None else cuda
    if use_cuda and state.get("cuda") is not None and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
