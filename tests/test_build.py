import os

import pytest
import torch

import pyreid

OPS = ["pairwise_distance", "knn", "cluster_memory_update_"]


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
    name = f"pyreid::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    assert has_cuda == pyreid.build_info()["cuda_kernels"]
