import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyreid
from pyreid._extension import has_kernel

OPS = [
    "pairwise_distance",
    "knn",
    "dbscan_dense",
    "dbscan_csr",
    "cluster_memory_update_",
    "kreciprocal_weights",
    "kreciprocal_sets",
    "kreciprocal_jaccard",
    "knn_row_max",
    "kmeans_plus_plus",
]
ROOT = Path(__file__).resolve().parent.parent


def test_build_info_reports_the_build():
    info = pyreid.build_info()
    assert set(info) >= {"cuda_kernels", "torch", "cuda"}
    assert isinstance(info["cuda_kernels"], bool)
    assert info["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert (info["cuda"] is not None) == info["cuda_kernels"]


@pytest.mark.skipif(os.environ.get("FORCE_CUDA") != "1", reason="only a FORCE_CUDA=1 build promises CUDA kernels")
def test_force_cuda_build_has_cuda_kernels():
    assert pyreid.build_info()["cuda_kernels"], "FORCE_CUDA=1 was set but pyreid._C has no CUDA kernels"


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_its_kernels_registered(op):
    assert has_kernel(op, "cpu")
    assert has_kernel(op, "cuda") == pyreid.build_info()["cuda_kernels"]


def test_missing_extension_fails_at_first_use_of_the_ops_with_instructions(tmp_path):
    # A copy of the Python sources without the compiled _C, imported first on the path.
    source = os.path.dirname(pyreid.__file__)
    shutil.copytree(source, tmp_path / "pyreid", ignore=shutil.ignore_patterns("*.so", "__pycache__"))

    def run(statement):
        # Drop setuptools' editable-install finder, which would find the real _C.
        script = "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        return subprocess.run([sys.executable, "-c", script + statement],
                              env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                              cwd=tmp_path)

    # `import pyreid` is light (subpackages load on first use): it needs no extension ...
    light = run("import pyreid; print(pyreid.__version__)")
    assert light.returncode == 0 and light.stdout.strip() == pyreid.__version__, light.stderr
    # ... the ops do, and say what to do.
    result = run("import pyreid; pyreid.ops")
    assert result.returncode != 0
    assert "pyreid._C could not be loaded" in result.stderr
    assert "pip install --no-build-isolation" in result.stderr


@pytest.mark.skipif(not (ROOT / "setup.py").is_file(), reason="needs the source tree")
def test_references_are_not_packaged():
    # The package list setup.py hands to the wheel and the sdist, read through
    # setuptools without building anything.
    script = (
        "import setuptools, distutils.core, json; "
        "d = distutils.core.run_setup('setup.py', stop_after='config'); "
        "print(json.dumps({'packages': d.packages, 'py_modules': d.py_modules}))"
    )
    env = {**os.environ, "PYREID_FORCE_CPU": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert "pyreid.ops" in found["packages"] and "pyreid.compat" in found["packages"]
    assert not [p for p in found["packages"] if not p.startswith("pyreid")], found["packages"]
    assert not found["py_modules"]
    assert (ROOT / "references" / "__init__.py").is_file()


def test_pyreid_never_imports_the_references():
    # references/ is not installed, so pyreid must run without it.
    importers = []
    for path in (ROOT / "pyreid").rglob("*.py") if (ROOT / "pyreid").is_dir() else []:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "references" or n.startswith("references.") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert (ROOT / "pyreid" / "ops").is_dir() and importers == []
