"""Export a trained model to ONNX or TorchScript, then prove the export computes what the model computes.

The exported graph maps a normalised ``B x 3 x H x W`` float batch (the run's
size; ImageNet mean and std, recorded in the file's metadata) to ``B x D``
unit-length features, with a dynamic batch dimension. After writing it, the
exported model (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and
the PyTorch model run on two batches of real images; the export fails, and the
file is not written, when

* the features differ by more than ``atol``, or
* different images give the same output: the graph froze a value computed
  from the example input into a constant (a numpy round trip, a Python scalar),
  the failure users of other re-ID libraries meet only in production.

Writes go to a temporary file renamed at the end, so a failed export never
replaces a good file. ONNX needs the optional ``onnx``, ``onnxscript`` and
``onnxruntime`` packages (``pip install "pyreid[export]"``).

Example:
    >>> from pyreid.export import export_model
    >>> report = export_model("runs/sup/best.pth", "onnx", "model.onnx")   # doctest: +SKIP
    >>> report["max_abs_diff"] < 1e-4                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from pyreid.inference import InferenceModel

__all__ = ["FORMATS", "ExportError", "ExportedFeatures", "export_model", "check_export", "find_unexportable_layer"]

logger = logging.getLogger("pyreid.export")

FORMATS = ("onnx", "torchscript")
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(RuntimeError):
    """The model could not be exported, or the exported model does not compute the model's features."""


class ExportedFeatures(nn.Module):
    """What is exported: the network followed by L2 normalisation (the features ``embed`` returns)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.network(images), dim=1)


def _require_onnx() -> None:
    missing = []
    for name in _ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed: pip install \"pyreid[export]\" (or pip install {' '.join(_ONNX_PACKAGES)})")


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and tracer warnings; keep them out of the user's console unless debugging."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause: the exporters wrap the useful message ("No ONNX function
    found for <OpOverload(op='pyreid.pairwise_distance'...)>") in generic ones."""
    seen = set()
    while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# ----------------------------------------------------------------------------- exporters
def _export_onnx(module: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet():
        torch.onnx.export(module, (example,), path, dynamo=True, input_names=["images"], output_names=["features"],
                          dynamic_shapes={"images": {0: batch}}, opset_version=opset, verbose=False)


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: str, extra: Dict[str, str]) -> None:
    with _quiet():
        traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, path, _extra_files=extra)


def _runner(fmt: str, path: str) -> Callable[[torch.Tensor], np.ndarray]:
    """A function running the file just written on a normalised batch."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    loaded = torch.jit.load(path, map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return run


def _add_onnx_metadata(path: str, meta: Dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


# ----------------------------------------------------------------------------- diagnosis
def find_unexportable_layer(module: nn.Module, example: torch.Tensor,
                            try_export: Callable[[nn.Module, Tuple[Any, ...]], None]) -> Optional[str]:
    """``"name (Type): error"`` of the innermost layer that fails on its own, or None.

    Each layer's inputs are recorded during one forward pass; then the layers
    are exported alone, innermost first (the order their forward calls end),
    skipping ``torch.nn``'s own layers, which the exporters support.
    """
    calls: List[Tuple[str, nn.Module, Tuple[Any, ...]]] = []
    names = {m: n for n, m in module.named_modules()}

    def record(mod, args, _out):
        if all(isinstance(a, torch.Tensor) for a in args):
            calls.append((names.get(mod, "?"), mod, tuple(a.detach() for a in args)))

    handles = [m.register_forward_hook(record) for m in module.modules()
               if not type(m).__module__.startswith("torch.nn.")]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    seen = set()
    for name, mod, args in calls:
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        try:
            with _quiet():
                try_export(mod, args)
        except Exception as e:  # noqa: BLE001 - any failure of the exporter names this layer
            return f"{name or '(the model itself)'} ({type(mod).__name__}): {_reason(e)}"
    return None


# ----------------------------------------------------------------------------- checks
def check_export(run_exported: Callable[[torch.Tensor], np.ndarray], reference: Callable[[torch.Tensor], torch.Tensor],
                 batches: Sequence[torch.Tensor], atol: float = 1e-4, what: str = "the exported model") -> float:
    """Raise :class:`ExportError` unless ``run_exported`` matches ``reference`` on every batch within ``atol`` and
    gives different outputs for different inputs; returns the largest absolute difference.

    ``batches``: at least two batches of different images (their sizes may
    differ: that checks the dynamic batch dimension too)."""
    outputs, expected, shape_errors = [], [], []
    for batch in batches:
        try:
            out = np.asarray(run_exported(batch))
        except Exception as e:  # noqa: BLE001 - e.g. a batch size the graph froze
            raise ExportError(f"{what} fails on a batch of shape {tuple(batch.shape)}: {_reason(e)}") from e
        ref = reference(batch).detach().float().cpu().numpy()
        if out.shape != ref.shape:  # reported after the same-output check, which says more
            shape_errors.append(f"{what} returns shape {out.shape} for a batch of shape {tuple(batch.shape)}; the "
                                f"model returns {ref.shape}")
            continue
        outputs.append(out)
        expected.append(ref)
    # Same output for different inputs: across batches (the rows both have) and across rows of a batch.
    for i in range(1, len(outputs)):
        n = min(len(outputs[0]), len(outputs[i]))
        if (np.abs(outputs[0][:n] - outputs[i][:n]).max() <= 1e-7
                and np.abs(expected[0][:n] - expected[i][:n]).max() > 1e-3):
            raise ExportError(f"{what} gives the same output for different images, while the model does not: the "
                              "export froze a value computed from the example input into a constant (a numpy or "
                              "Python-scalar round trip in a forward, or a data-dependent branch)")
    for out, ref in zip(outputs, expected):
        if len(out) > 1 and np.abs(out - out[:1]).max() <= 1e-7 and np.abs(ref - ref[:1]).max() > 1e-3:
            raise ExportError(f"{what} gives every image of a batch the same output, while the model does not")
    if shape_errors:
        raise ExportError(shape_errors[0])
    diff = max(float(np.abs(out - ref).max()) for out, ref in zip(outputs, expected))
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{what}'s features differ from the model's by up to {diff:.3g} (tolerance {atol:g})")
    return diff


def _check_batches(model, images: Optional[str], per_batch: int) -> Tuple[List[torch.Tensor], str]:
    """Two batches of different real images (and one of a single image) in the model's input format, and where
    they came from: ``images``, else the run's data set, else a freshly drawn synthetic set."""
    from pyreid.data.image_files import list_images
    from pyreid.data.loaders import read_image

    source, paths = images, None
    if images is not None:
        paths = list_images(images)
    else:
        config = model.info.get("config", {})
        # A two-data-set run (uda) is checked on its target, as `pyreid eval` scores it.
        name = config.get("target") or config.get("dataset")
        root = config.get("target_root") or config.get("data_root")
        if name and root:
            try:
                from pyreid.data.datasets import build_dataset

                data = build_dataset(name, root)
                paths = [p for p, _, _ in data.query + data.gallery + data.train][: 2 * per_batch]
                source = f"{name} at {root}"
            except (OSError, ValueError):
                paths = None
    tmp = None
    if not paths:
        from pyreid.data.image_files import walk_images
        from pyreid.data.synthetic import SynthConfig, generate

        tmp = tempfile.TemporaryDirectory(prefix="pyreid-export-check-")
        generate(tmp.name, SynthConfig(ids_train=2, ids_test=max(2, per_batch // 2), cameras=2, images_per_id=4,
                                       seed=1), progress=False)
        paths, source = walk_images(tmp.name), "a synthetic set"
    try:
        readable = []
        for path in paths:
            try:
                readable.append(model.transform(read_image(path)))
            except OSError as e:
                logger.warning("export check: skipping %s", e)
            if len(readable) == 2 * per_batch:
                break
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not readable:
        raise ExportError(f"export: none of the images of {source} can be read to check the export")
    tensors = torch.stack(readable)
    if len(tensors) >= 2:
        half = (len(tensors) + 1) // 2
        first, second = tensors[:half], tensors[half:]
    else:  # one image: its mirror is a different input
        first, second = tensors, torch.flip(tensors, dims=[3])
    return [first, second, first[:1]], f"{len(tensors)} images of {source}"


# ----------------------------------------------------------------------------- the command
def export_model(checkpoint: Union[str, "InferenceModel"], fmt: str, out: str, *, images: Optional[str] = None, atol: float = 1e-4,
                 opset: int = 18, batch_size: int = 4) -> Dict[str, Any]:
    """Export the model of ``checkpoint`` (best.pth or checkpoint.pth) as ``fmt`` to ``out``, checked.

    Args:
        checkpoint: a pyreid run's model file or training checkpoint (or a model :func:`pyreid.load_model` returned).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the file to write (replaced only when the check passes).
        images: a folder, list file or image to check with; default: the run's
            data set (its test images), else a small synthetic set.
        atol: largest allowed difference between exported and PyTorch features.
        opset: ONNX opset.
        batch_size: images per check batch.

    Returns:
        ``{"out", "format", "height", "width", "feature_dim", "max_abs_diff", "checked_on"}``.

    Raises:
        ExportError: missing optional packages, a layer the exporter cannot
            handle (named), or an export whose features differ from the model's.
        CheckpointError: the checkpoint is not a pyreid model.
    """
    from pyreid import __version__
    from pyreid.inference import InferenceModel, load_model

    if fmt not in FORMATS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx()
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"export: the folder of --out {out} does not exist")
    model = checkpoint if isinstance(checkpoint, InferenceModel) else load_model(checkpoint, device="cpu")
    model = model.to("cpu")
    module = ExportedFeatures(model.network).eval()
    meta = {"pyreid_version": __version__, "checkpoint": model.info.get("checkpoint", ""), "height": str(model.height),
            "width": str(model.width), "mean": json.dumps(model.mean), "std": json.dumps(model.std),
            "input": "normalised float32 B x 3 x H x W", "output": "L2-normalised float32 B x D features"}
    # A random example: the check below runs on real images the export never saw.
    example = torch.randn(2, 3, model.height, model.width, generator=torch.Generator().manual_seed(0))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        try:
            if fmt == "onnx":
                _export_onnx(module, example, tmp, opset)
                _add_onnx_metadata(tmp, meta)
            else:
                _export_torchscript(module, example, tmp, {"pyreid.json": json.dumps(meta)})
        except Exception as e:  # noqa: BLE001 - the exporters raise many types; name the layer that caused it
            first = _reason(e)
            logger.info("export failed (%s); looking for the layer that causes it", first)

            def alone(mod, args):
                scratch = tmp + ".layer"
                try:
                    if fmt == "onnx":
                        torch.onnx.export(mod, args, scratch, dynamo=True, opset_version=opset, verbose=False)
                    else:
                        torch.jit.trace(mod, args, check_trace=False)
                finally:
                    if os.path.exists(scratch):
                        os.remove(scratch)

            culprit = find_unexportable_layer(module, example, alone)
            where = f"the layer {culprit}" if culprit else first
            raise ExportError(f"export to {fmt} failed at {where}") from e
        batches, checked_on = _check_batches(model, images, batch_size)
        diff = check_export(_runner(fmt, tmp), lambda x: model.features(x, flip=False), batches, atol,
                            what=f"the {fmt} export")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"out": out, "format": fmt, "height": model.height, "width": model.width,
            "feature_dim": model.feature_dim, "max_abs_diff": diff, "checked_on": checked_on}
