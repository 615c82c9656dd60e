import pytest
import torch
from common import DEVICES, FLOAT_DTYPES, clustered_features, cuda, relative_error

import pyreid
from references.distances import pairwise_distance_reference

METRICS = ["sqeuclidean", "euclidean", "cosine"]
# (N, M, D): empty, single, odd, non-power-of-two, and one larger than a CPU scratch step.
SHAPES = [(0, 4, 3), (3, 0, 3), (1, 1, 1), (1, 7, 4), (13, 29, 5), (257, 131, 33), (1100, 700, 16)]


def _torch_same_precision(x, y, metric):
    """The plain torch way, computed in the inputs' own dtype."""
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True)
    if metric == "cosine":
        return (1 - (x / xx.sqrt()) @ (y / yy.sqrt()).t()).clamp_min(0)
    sq = (xx + yy.t() - 2 * x @ y.t()).clamp_min(0)
    return sq.sqrt() if metric == "euclidean" else sq


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("self_mode", [False, True])
def test_matches_reference(device, metric, shape, self_mode):
    n, m, d = shape
    x = clustered_features(n, d, seed=n + m, device=device)
    y = None if self_mode else clustered_features(m, d, seed=n + m + 1, device=device)
    out = pyreid.ops.pairwise_distance(x, y, metric)
    expected_m = n if self_mode else m
    assert out.shape == (n, expected_m) and out.dtype == x.dtype and out.device == x.device
    ref = pairwise_distance_reference(x, y, metric)
    assert relative_error(out, ref) < 1e-5
    if self_mode and n > 0:
        assert (out.diagonal() == 0).all()
    assert (out >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_float64_is_accurate(device, metric):
    x = torch.randn(40, 9, dtype=torch.float64, device=device)
    y = torch.randn(23, 9, dtype=torch.float64, device=device)
    assert relative_error(pyreid.ops.pairwise_distance(x, y, metric), pairwise_distance_reference(x, y, metric)) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", METRICS)
def test_low_precision_within_twice_torch_error(device, dtype, metric):
    x = clustered_features(150, 64, seed=3, dtype=dtype, device=device)
    y = clustered_features(90, 64, seed=4, dtype=dtype, device=device)
    ref = pairwise_distance_reference(x, y, metric)  # exact distances of the rounded inputs
    out = pyreid.ops.pairwise_distance(x, y, metric)
    assert out.dtype == dtype
    ours = relative_error(out, ref)
    theirs = relative_error(_torch_same_precision(x, y, metric), ref)
    assert ours <= 2 * theirs + 1e-6, (ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    base = torch.randn(64, 40, device=device)
    x = base[::2, ::3]  # strided rows and columns
    y = torch.randn(14, 29, device=device).t()  # transposed view: 29 x 14
    out = pyreid.ops.pairwise_distance(x, y[:, : x.shape[1]])
    ref = pairwise_distance_reference(x, y[:, : x.shape[1]])
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("self_mode", [False, True])
def test_gradcheck(metric, self_mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    if self_mode:
        assert torch.autograd.gradcheck(lambda a: pyreid.ops.pairwise_distance(a, None, metric), (x,))
        assert torch.autograd.gradgradcheck(lambda a: pyreid.ops.pairwise_distance(a, None, metric), (x,))
    else:
        y = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: pyreid.ops.pairwise_distance(a, b, metric), (x, y))
        assert torch.autograd.gradgradcheck(lambda a, b: pyreid.ops.pairwise_distance(a, b, metric), (x, y))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_matches_autograd_of_reference(device, metric):
    x = torch.randn(30, 8, device=device, requires_grad=True)
    y = torch.randn(20, 8, device=device, requires_grad=True)
    w = torch.randn(30, 20, device=device)
    (pyreid.ops.pairwise_distance(x, y, metric) * w).sum().backward()
    x2 = x.detach().double().requires_grad_()
    y2 = y.detach().double().requires_grad_()
    (pairwise_distance_reference_autograd(x2, y2, metric) * w.double()).sum().backward()
    assert relative_error(x.grad, x2.grad) < 1e-4
    assert relative_error(y.grad, y2.grad) < 1e-4


def pairwise_distance_reference_autograd(x, y, metric):
    """Differentiable float64 version of the reference (explicit differences)."""
    if metric == "cosine":
        xn = torch.nn.functional.normalize(x, dim=1)
        yn = torch.nn.functional.normalize(y, dim=1)
        return 1 - xn @ yn.t()
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return sq.sqrt() if metric == "euclidean" else sq


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("self_mode", [False, True])
def test_opcheck(device, dtype, self_mode):
    x = torch.randn(9, 5, device=device, dtype=dtype, requires_grad=dtype == torch.float64)
    y = None if self_mode else torch.randn(7, 5, device=device, dtype=dtype)
    torch.library.opcheck(torch.ops.pyreid.pairwise_distance.default, (x, y, "euclidean"))


def test_input_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="x must be a 2-D tensor, got 1-D"):
        pyreid.ops.pairwise_distance(torch.randn(3))
    with pytest.raises(ValueError, match="x has 3 features per row but y has 5"):
        pyreid.ops.pairwise_distance(x, torch.randn(2, 5))
    with pytest.raises(TypeError, match="x is Float but y is Double; cast one of them"):
        pyreid.ops.pairwise_distance(x, torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="must be float16, bfloat16, float32 or float64, got Long"):
        pyreid.ops.pairwise_distance(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        pyreid.ops.pairwise_distance(x, metric="manhattan")
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        pyreid.ops.pairwise_distance(bad)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        pyreid.ops.pairwise_distance(x, bad)


@cuda
def test_device_mix_error():
    with pytest.raises(ValueError, match="x is on cpu but y is on cuda"):
        pyreid.ops.pairwise_distance(torch.randn(3, 2), torch.randn(3, 2, device="cuda"))


@cuda
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cpu_and_cuda_agree(metric, dtype):
    x = clustered_features(700, 48, seed=5, dtype=dtype)
    y = clustered_features(333, 48, seed=6, dtype=dtype)
    out_cpu = pyreid.ops.pairwise_distance(x, y, metric)
    out_cuda = pyreid.ops.pairwise_distance(x.cuda(), y.cuda(), metric)
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2
    assert relative_error(out_cuda, out_cpu) < tol


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_kernel_finite_check_from_row_sums_is_exact(bad_value):
    # The C++ check (reached here without the Python wrapper's) reads row sums
    # first: a NaN/Inf must still be found in a row of huge values whose sum
    # overflows anyway, and finite rows whose sums overflow must pass.
    huge = torch.full((4, 3), torch.finfo(torch.float32).max)
    out = torch.ops.pyreid.pairwise_distance.default(huge, None, "sqeuclidean")
    assert out.shape == (4, 4)
    huge[2, 1] = bad_value
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        torch.ops.pyreid.pairwise_distance.default(huge, None, "sqeuclidean")
    x = torch.randn(5, 3)
    x[4, 0] = bad_value
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        torch.ops.pyreid.pairwise_distance.default(torch.randn(2, 3), x, "sqeuclidean")
