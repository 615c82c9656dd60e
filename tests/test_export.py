"""pyreid export: ONNX and TorchScript parity with the PyTorch model, and the checks that catch bad exports."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn
from trained_run import trained_run

import pyreid
from pyreid.data import build_dataset
from pyreid.export import ExportError, check_export, export_model

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxscript and onnxruntime are not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def batch(run):
    """Six gallery images of the run's data set as uint8 tensors and through the model's transform."""
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    paths = [p for p, _, _ in build_dataset("synthetic", run["data"]).gallery[:6]]
    return paths, model.preprocess(paths)


def test_torchscript_parity_and_dynamic_batch(run, batch, tmp_path):
    out = tmp_path / "model.pt"
    out.write_text("an older export")
    report = export_model(os.path.join(run["out"], "best.pth"), "torchscript", str(out))
    assert report["max_abs_diff"] < 1e-4 and report["feature_dim"] == 512
    assert "synthetic" in report["checked_on"]
    extra = {"pyreid.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["pyreid.json"])["height"] == "128"
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    paths, images = batch
    with torch.no_grad():
        for n in (6, 1, 3):  # batch sizes the trace never saw
            torch.testing.assert_close(loaded(images[:n]), model.embed(paths[:n]), atol=1e-5, rtol=1e-4)


@needs_onnx
def test_onnx_parity_and_dynamic_batch(run, batch, tmp_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    report = export_model(os.path.join(run["out"], "checkpoint.pth"), "onnx", str(out))
    assert report["max_abs_diff"] < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["height"], meta["width"]) == ("128", "64")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"
    model = pyreid.load_model(os.path.join(run["out"], "checkpoint.pth"), device="cpu")
    paths, images = batch
    for n in (6, 1, 5):
        got = session.run(None, {"images": images[:n].numpy()})[0]
        np.testing.assert_allclose(got, model.embed(paths[:n]).numpy(), atol=1e-4)


class _NumpyRoundTrip(nn.Module):
    """A forward that leaves torch: tracing records its output as a constant."""

    def forward(self, x):
        return torch.from_numpy(x.detach().numpy().copy())


def test_a_frozen_export_is_caught_and_nothing_is_replaced(run, tmp_path):
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    model.network.pool = nn.Sequential(model.network.pool, _NumpyRoundTrip())
    out = tmp_path / "model.pt"
    out.write_text("the good export")
    # Check batches of 2 images, the size the trace saw: only the same-output check can tell.
    with pytest.raises(ExportError, match="same output for different images"):
        export_model(model, "torchscript", str(out), batch_size=2)
    with pytest.raises(ExportError, match=r"returns shape \(2, 512\) for a batch of shape \(4, 3, 128, 64\)"):
        export_model(model, "torchscript", str(out), batch_size=4)
    assert out.read_text() == "the good export"
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind


class _CustomOp(nn.Module):
    """A layer built on a pyreid kernel, which has no ONNX translation."""

    def forward(self, x):
        return x + torch.ops.pyreid.pairwise_distance(x, x, "euclidean").mean()


@needs_onnx
def test_unexportable_layer_is_named(run, tmp_path):
    import pyreid.ops  # noqa: F401 - registers torch.ops.pyreid

    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    model.network.pool = nn.Sequential(model.network.pool, _CustomOp())
    with pytest.raises(ExportError, match=r"the layer network\.pool\.1 \(_CustomOp\).*pyreid\.pairwise_distance"):
        export_model(model, "onnx", str(tmp_path / "m.onnx"))
    assert not os.path.exists(tmp_path / "m.onnx")


def test_check_export_rules():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5), torch.randn(3, 5)

    def reference(x):
        return x * 2

    assert check_export(lambda x: (x * 2).numpy(), reference, [a, b]) == 0.0
    with pytest.raises(ExportError, match="same output for different images"):
        check_export(lambda x: (a * 2).numpy(), reference, [a, b])
    with pytest.raises(ExportError, match="every image of a batch the same output"):
        check_export(lambda x: (x[:1] * 2).expand_as(x).numpy(), reference, [a, b])
    with pytest.raises(ExportError, match=r"differ from the model's by up to 0\.01"):
        check_export(lambda x: (x * 2 + 0.01).numpy(), reference, [a, b], atol=1e-3)


def test_missing_onnx_packages_are_named(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(ExportError, match=r'needs onnxruntime.*pip install "pyreid\[export\]"'):
        export_model(os.path.join(run["out"], "best.pth"), "onnx", str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="format must be one of onnx, torchscript"):
        export_model(os.path.join(run["out"], "best.pth"), "tflite", str(tmp_path / "m.tflite"))
