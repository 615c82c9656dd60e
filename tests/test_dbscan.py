"""pyreid.ops.dbscan against scikit-learn, label for label."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from common import DEVICES, cuda
from sklearn.cluster import DBSCAN

import pyreid
from references.dbscan import dbscan_reference


def sklearn_labels(dist, eps, min_samples):
    """scikit-learn's labels; it refuses N = 0, where the answer is empty."""
    if dist.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse efficiency / unsorted-graph warnings
        return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)


def tied_distances(n, seed, symmetric=True, zero_diagonal=True, dtype=np.float64, scale=1.0):
    """Distances on a 0.1 grid, so many of them equal eps exactly."""
    rng = np.random.default_rng(seed)
    d = np.round(rng.random((n, n)) * scale, 1)
    if symmetric:
        d = np.minimum(d, d.T)
    if zero_diagonal:
        np.fill_diagonal(d, 0)
    return d.astype(dtype)


def run(dist_np, eps, min_samples, device="cpu", layout="dense"):
    t = torch.from_numpy(dist_np).to(device)
    if layout == "coo":
        t = t.to_sparse_coo()
    elif layout == "csr":
        t = t.to_sparse_csr()
    return pyreid.ops.dbscan(t, eps, min_samples)


# --- dense -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 40, 129])
def test_dense_matches_sklearn_with_ties(device, symmetric, n):
    for seed in range(6):
        d = tied_distances(n, seed, symmetric=symmetric, zero_diagonal=seed % 3 != 0)
        for eps in (0.1, 0.2, 0.3):
            for min_samples in (1, 2, 3, 5, 10):
                expected = sklearn_labels(d, eps, min_samples)
                out = run(d, eps, min_samples, device)
                assert out.dtype == torch.int64 and out.device.type == device
                np.testing.assert_array_equal(out.cpu().numpy(), expected, err_msg=f"{seed=} {eps=} {min_samples=}")


def test_reference_closed_form_matches_sklearn():
    # The fixed point the CUDA kernel computes, checked here where there is no GPU.
    for seed in range(60):
        n = 1 + seed % 37
        d = tied_distances(n, seed, symmetric=seed % 2 == 0, zero_diagonal=seed % 3 != 0)
        for eps, min_samples in ((0.1, 2), (0.2, 3), (0.3, 1), (0.3, 6)):
            np.testing.assert_array_equal(dbscan_reference(d, eps, min_samples), sklearn_labels(d, eps, min_samples))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_is_compared_in_float32_and_float64_in_float64(device):
    # float32(0.1) = 0.100000001 > 0.1 in float64, but == float32(0.1): scikit-learn compares in float32.
    d = np.array([[0.0, 0.1], [0.1, 0.0]])
    for dtype in (np.float32, np.float64):
        dd = d.astype(dtype)
        np.testing.assert_array_equal(run(dd, 0.1, 2, device).cpu().numpy(), sklearn_labels(dd, 0.1, 2))
    assert run(d.astype(np.float32), 0.1, 2, device).tolist() == [0, 0]
    assert run(d.astype(np.float32) + np.float32(1e-7), 0.1, 2, device).tolist() == [-1, -1]


@pytest.mark.parametrize("device", DEVICES)
def test_float16_is_compared_exactly_as_sklearn_does(device):
    # float16(0.1) = 0.0999756 > 0.09996, though float16(0.09996) == float16(0.1): scikit-learn upcasts.
    d = np.array([[0.0, 0.1], [0.1, 0.0]], dtype=np.float16)
    np.testing.assert_array_equal(run(d, 0.09996, 2, device).cpu().numpy(), sklearn_labels(d, 0.09996, 2))
    np.testing.assert_array_equal(run(d, 0.09998, 2, device).cpu().numpy(), sklearn_labels(d, 0.09998, 2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes(device, dtype):
    d = tied_distances(50, 3)
    # Grid values 0.1, 0.2, ... are not exact in these dtypes: compare with sklearn on the rounded values.
    rounded = torch.from_numpy(d).to(dtype)
    expected = sklearn_labels(rounded.double().numpy(), 0.25, 3)
    np.testing.assert_array_equal(pyreid.ops.dbscan(rounded.to(device), 0.25, 3).cpu().numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_one_big_cluster_isolated_points_and_border_points(device):
    n = 30
    d = np.full((n, n), 5.0)
    d[:20, :20] = 0.5  # one big cluster of 20
    np.fill_diagonal(d, 0)
    d[25, :] = d[:, 25] = 5.0  # isolated
    d[25, 25] = 0
    # 21 and 22 are border points of the big cluster and of a second cluster formed by 26..29.
    d[26:30, 26:30] = 0.5
    np.fill_diagonal(d, 0)
    for b in (21, 22):
        d[b, 3] = d[3, b] = 0.9
        d[b, 27] = d[27, b] = 0.9
    for min_samples in (1, 2, 3, 4, 5, 21):
        expected = sklearn_labels(d, 1.0, min_samples)
        np.testing.assert_array_equal(run(d, 1.0, min_samples, device).cpu().numpy(), expected)
    labels = run(d, 1.0, 4, device).cpu().numpy()
    assert (labels[:20] == 0).all() and labels[25] == -1 and (labels[26:30] == 1).all()
    assert labels[21] == labels[22] == 0  # the smallest cluster reaching them


@pytest.mark.parametrize("device", DEVICES)
def test_border_point_takes_the_first_cluster_in_sklearn_order(device):
    # Cluster B = {0, 2, 3, 8} holds point 0, so it is cluster 0; A = {1, 5, 6, 7} is cluster 1. Border point 4
    # (3 neighbours < min_samples 4) touches A through 5 and B through 8: it joins B, the first cluster.
    d = np.full((9, 9), 9.0)
    for group in ([0, 2, 3, 8], [1, 5, 6, 7]):
        d[np.ix_(group, group)] = 0.1
    d[4, [5, 8]] = d[[5, 8], 4] = 0.1
    np.fill_diagonal(d, 0)
    expected = sklearn_labels(d, 0.2, 4)
    assert expected.tolist() == [0, 1, 0, 0, 0, 1, 1, 1, 0]
    np.testing.assert_array_equal(run(d, 0.2, 4, device).cpu().numpy(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_asymmetric_reachability_is_directed(device):
    # 0 -> 1 -> 2 only (rows are neighbourhoods); every point is core with min_samples=1 ...
    d = np.array([[0, 0.1, 9], [9, 0, 0.1], [9, 9, 0]])
    for min_samples in (1, 2):
        expected = sklearn_labels(d, 0.2, min_samples)
        np.testing.assert_array_equal(run(d, 0.2, min_samples, device).cpu().numpy(), expected)
    # ... and a core reached from an earlier cluster joins it, even if it reaches nothing back.
    assert run(d, 0.2, 1, device).tolist() == [0, 0, 0]
    # 2 -> 1 -> 0: 0 starts cluster 0 alone, 1 starts cluster 1, 2 starts cluster 2.
    assert run(d.T.copy(), 0.2, 1, device).tolist() == [0, 1, 2]


def test_non_contiguous_input():
    d = tied_distances(41, 5)
    t = torch.from_numpy(d.T.copy()).t()  # same values, transposed strides
    assert not t.is_contiguous()
    np.testing.assert_array_equal(pyreid.ops.dbscan(t, 0.2, 3).numpy(), sklearn_labels(d, 0.2, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_infinite_distances_are_never_neighbours(device):
    d = np.array([[0, np.inf], [np.inf, 0]])
    assert run(d, 1e300, 1, device).tolist() == [0, 1]


# --- sparse ------------------------------------------------------------------------------------------

def sparse_case(n, seed, keep=0.3, diagonal="zero", symmetric=True):
    """Dense matrix with NaN for "not stored"; diagonal: 'zero' (stored 0), 'missing', 'value' (random)."""
    rng = np.random.default_rng(seed)
    d = np.round(rng.random((n, n)), 1)
    stored = rng.random((n, n)) < keep
    if symmetric:
        d = np.minimum(d, d.T)
        stored = stored | stored.T
    np.fill_diagonal(stored, diagonal != "missing")
    if diagonal == "zero":
        np.fill_diagonal(d, 0)
    rows, cols = np.nonzero(stored)
    return sp.csr_matrix((d[rows, cols], (rows, cols)), shape=(n, n))


def torch_sparse(m, layout, device, dtype=torch.float64):
    coo = m.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    t = torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data).to(dtype), m.shape).coalesce()
    if layout == "csr":
        t = t.to_sparse_csr()
    return t.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["csr", "coo"])
@pytest.mark.parametrize("diagonal", ["zero", "missing", "value"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n", [1, 2, 9, 64])
def test_sparse_matches_sklearn(device, layout, diagonal, symmetric, n):
    for seed in range(4):
        m = sparse_case(n, seed, diagonal=diagonal, symmetric=symmetric)
        for eps in (0.1, 0.3):
            for min_samples in (1, 2, 4, 7):
                expected = sklearn_labels(m, eps, min_samples)
                out = pyreid.ops.dbscan(torch_sparse(m, layout, device), eps, min_samples)
                np.testing.assert_array_equal(out.cpu().numpy(), expected, err_msg=f"{seed=} {eps=} {min_samples=}")


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_stored_zeros_are_neighbours_and_missing_entries_are_not(device):
    # Off-diagonal explicit zeros link 0 and 1; 2 has no stored entries (its own neighbour only).
    m = sp.csr_matrix((np.array([0.0, 0.0]), np.array([1, 0]), np.array([0, 1, 2, 2])), shape=(3, 3))
    t = torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0]), torch.tensor([0.0, 0.0]), (3, 3))
    expected = sklearn_labels(m, 0.5, 2)
    assert expected.tolist() == [0, 0, -1]
    np.testing.assert_array_equal(pyreid.ops.dbscan(t.to(device), 0.5, 2).cpu().numpy(), expected)


def test_sparse_duplicate_coo_entries_are_summed_like_scipy():
    i = torch.tensor([[0, 0, 1], [1, 1, 0]])
    t = torch.sparse_coo_tensor(i, torch.tensor([0.3, 0.3, 0.3]), (2, 2))  # uncoalesced: d(0, 1) = 0.6
    m = sp.coo_matrix((np.array([0.3, 0.3, 0.3]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    expected = sklearn_labels(m, 0.5, 2)
    np.testing.assert_array_equal(pyreid.ops.dbscan(t, 0.5, 2).numpy(), expected)


def test_sparse_float32_and_int32_indices():
    m = sparse_case(40, 1)
    t = torch_sparse(m, "csr", "cpu", torch.float32)
    t32 = torch.sparse_csr_tensor(t.crow_indices().int(), t.col_indices().int(), t.values(), t.shape)
    expected = sklearn_labels(m.astype(np.float32), 0.3, 3)
    np.testing.assert_array_equal(pyreid.ops.dbscan(t32, 0.3, 3).numpy(), expected)


def test_sparse_empty_matrix():
    t = torch.sparse_csr_tensor(torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), (0, 0))
    assert pyreid.ops.dbscan(t, 0.5, 1).shape == (0,)


def test_sparse_and_dense_agree_when_everything_is_stored():
    d = tied_distances(50, 7)
    d[d == 0] = 0.1  # to_sparse_csr drops zeros: keep off-diagonal entries non-zero
    np.fill_diagonal(d, 0)
    for eps, min_samples in ((0.2, 3), (0.3, 5)):
        dense = pyreid.ops.dbscan(torch.from_numpy(d), eps, min_samples)
        sparse = pyreid.ops.dbscan(torch.from_numpy(d).to_sparse_csr(), eps, min_samples)
        assert torch.equal(dense, sparse)


# --- errors, opcheck, CPU vs CUDA --------------------------------------------------------------------

def test_input_errors():
    d = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"eps must be > 0, got eps=0"):
        pyreid.ops.dbscan(d, 0.0, 2)
    with pytest.raises(ValueError, match=r"min_samples must be >= 1, got min_samples=0"):
        pyreid.ops.dbscan(d, 0.5, 0)
    with pytest.raises(ValueError, match=r"square N x N matrix, got shape \[3, 4\]"):
        pyreid.ops.dbscan(torch.zeros(3, 4), 0.5, 2)
    with pytest.raises(ValueError, match=r"must be a 2-D tensor"):
        pyreid.ops.dbscan(torch.zeros(3), 0.5, 2)
    with pytest.raises(ValueError, match=r"contains negative distances \(smallest -1"):
        pyreid.ops.dbscan(torch.tensor([[0.0, -1.0], [-1.0, 0.0]]), 0.5, 2)
    with pytest.raises(ValueError, match=r"contains NaN distances"):
        pyreid.ops.dbscan(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), 0.5, 2)
    with pytest.raises(TypeError, match=r"must be float16, bfloat16, float32 or float64"):
        pyreid.ops.dbscan(torch.zeros(2, 2, dtype=torch.int64), 0.5, 2)
    bad = torch.sparse_csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([1, 0]), torch.tensor([-0.5, 0.1]), (2, 2))
    with pytest.raises(ValueError, match=r"values contains negative distances"):
        pyreid.ops.dbscan(bad, 0.5, 2)
    with pytest.raises(ValueError, match=r"square N x N matrix"):
        pyreid.ops.dbscan(torch.zeros(2, 3).to_sparse_coo(), 0.5, 2)
    with pytest.raises(ValueError, match=r"not a CSR pattern of N = 2 rows: col_indices\[1\] = 5 is out of range \[0, 2\)"):
        torch.ops.pyreid.dbscan_csr(torch.tensor([0, 1, 2]), torch.tensor([0, 5]), torch.tensor([0.1, 0.1]), 2, 0.5, 2)
    with pytest.raises(ValueError, match=r"crow_indices must have n \+ 1 = 3 entries, got 2"):
        torch.ops.pyreid.dbscan_csr(torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([0.1, 0.1]), 2, 0.5, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    d = torch.from_numpy(tied_distances(9, 0)).to(device)
    torch.library.opcheck(torch.ops.pyreid.dbscan_dense.default, (d, 0.2, 2))
    s = d.to_sparse_csr()
    args = (s.crow_indices(), s.col_indices(), s.values(), 9, 0.2, 2)
    torch.library.opcheck(torch.ops.pyreid.dbscan_csr.default, args)


@cuda
@pytest.mark.cuda
def test_cpu_and_cuda_agree_on_larger_inputs():
    for seed, symmetric in ((0, True), (1, False)):
        d = tied_distances(700, seed, symmetric=symmetric, scale=3.0)
        for eps, min_samples in ((0.1, 4), (0.3, 10)):
            cpu = run(d, eps, min_samples)
            np.testing.assert_array_equal(run(d, eps, min_samples, "cuda").cpu().numpy(), cpu.numpy())
            np.testing.assert_array_equal(run(d, eps, min_samples, "cuda", "csr").cpu().numpy(), cpu.numpy())
