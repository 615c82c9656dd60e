"""CMC/mAP evaluation: pyreid's chunked evaluation vs the plain numpy (torchreid-style) way.

Run:
    .venv/bin/python -m pytest benchmarks/bench_evaluation.py -o addopts="" --benchmark-only -p no:cacheprovider

Groups:
- ``evaluation-market``: 3,368 x 15,913 (Market-1501 test size without junk),
  pyreid vs the torchreid-style reference (full argsort + Q x G match matrix).
- ``evaluation-msmt17``: 11,659 x 82,161 random distances, 15 cameras,
  3,060 identities (MSMT17 test scale); only pyreid, since the reference
  needs two Q x G matrices of 7.7 GB (int64 order) and 3.8 GB (int32 matches).
  Target: under 60 s and under 6 GB of extra memory on CPU. The peak extra
  memory (VmRSS sampled every 2 ms minus VmRSS before the call; also VmHWM
  after the call, its counter reset through /proc/self/clear_refs, minus
  VmRSS before) and the process CPU time (user + sys)
  of each round go to extra_info: on a shared machine the CPU time tells
  what the wall time would be without other load.

Distances are random (seeded); every rank of a match is then equally likely,
which is the worst case for nothing in pyreid's method (its cost does not
depend on where the matches are).
"""

import ctypes
import ctypes.util
import gc
import resource
import threading
import time

import numpy as np
import pytest
import torch

from pyreid.evaluation import evaluate


def make_case(num_q, num_g, num_ids, num_cams, seed=0):
    rng = np.random.default_rng(seed)
    distmat = rng.random((num_q, num_g), dtype=np.float32)
    return (distmat, rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
            rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


def numpy_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The usual numpy evaluation (as in torchreid's python path): argsort the
    whole matrix, build the Q x G match matrix, loop over queries."""
    order = np.argsort(distmat, axis=1)
    matches = (g_pids[order] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        keep = ~((g_pids[order[q]] == q_pids[q]) & (g_camids[order[q]] == q_camids[q]))
        hits = matches[q][keep]
        if not hits.any():
            continue
        cmc = np.minimum(hits.cumsum(), 1)
        all_cmc.append(cmc[:max_rank])
        precision = hits.cumsum() / np.arange(1, hits.size + 1)
        all_ap.append((precision * hits).sum() / hits.sum())
    return np.mean(all_cmc, axis=0).astype(np.float32), float(np.mean(all_ap))


try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    _LIBC = None


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class _RssSampler:
    """Samples VmRSS every few milliseconds in a thread: the peak does not
    depend on when the kernel refreshes VmHWM."""

    def __init__(self, interval=0.002):
        self.interval, self.peak, self._stop = interval, _status_kib("VmRSS"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib("VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("VmRSS"))


def _measured(fn):
    """Wrap fn so the peak extra resident memory and CPU time of its calls are recorded."""
    record = {"peak_extra_gib": 0.0, "vmhwm_extra_gib": 0.0, "cpu_seconds": []}

    def cpu_seconds():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def run(*args):
        # Hand freed heap memory back to the OS first, so that memory the
        # call reuses from earlier tests shows up as an increase.
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        before = _status_kib("VmRSS")
        _reset_peak()
        cpu = cpu_seconds()
        with _RssSampler() as sampler:
            out = fn(*args)
        record["cpu_seconds"].append(round(cpu_seconds() - cpu, 2))
        record["peak_extra_gib"] = max(record["peak_extra_gib"], (sampler.peak - before) / 2**20)
        record["vmhwm_extra_gib"] = max(record["vmhwm_extra_gib"], (_status_kib("VmHWM") - before) / 2**20)
        return out

    return run, record


MARKET = dict(num_q=3368, num_g=15913, num_ids=750, num_cams=6)
MSMT17 = dict(num_q=11659, num_g=82161, num_ids=3060, num_cams=15)


@pytest.fixture(scope="module")
def market_case():
    return make_case(**MARKET)


@pytest.mark.benchmark(group="evaluation-market")
@pytest.mark.parametrize("impl", ["pyreid", "numpy-torchreid-style"])
def test_market_scale(benchmark, market_case, impl):
    if impl == "pyreid":
        fn, record = _measured(lambda *case: evaluate(*case))
    else:
        fn, record = _measured(numpy_reference)
    out = benchmark.pedantic(fn, args=market_case, rounds=3, iterations=1, warmup_rounds=0)
    ref_cmc, ref_map = numpy_reference(*market_case) if impl == "pyreid" else out
    if impl == "pyreid":
        # The reference's argsort is not stable, so a match tied with another
        # item may swap places: allow for that in the comparison.
        assert out["mAP"] == pytest.approx(ref_map, abs=1e-5)
        np.testing.assert_allclose(out["cmc"], ref_cmc, atol=1e-3)
    benchmark.extra_info.update(shape=f"{MARKET['num_q']}x{MARKET['num_g']}", **record)


@pytest.mark.benchmark(group="evaluation-msmt17")
def test_msmt17_scale(benchmark):
    case = make_case(**MSMT17)
    fn, record = _measured(lambda *c: evaluate(*c))
    start = time.perf_counter()
    out = benchmark.pedantic(fn, args=case, rounds=1, iterations=1, warmup_rounds=0)
    seconds = time.perf_counter() - start
    # Spot check against the reference on a slice of queries (the full
    # reference does not fit in memory).
    part = (case[0][:300], case[1][:300], case[2], case[3][:300], case[4])
    ref_cmc, ref_map = numpy_reference(*part)
    assert evaluate(*part)["mAP"] == pytest.approx(ref_map, abs=1e-5)
    benchmark.extra_info.update(shape=f"{MSMT17['num_q']}x{MSMT17['num_g']}", seconds=seconds,
                                input_gib=case[0].nbytes / 2**30, threads=torch.get_num_threads(),
                                mAP=out["mAP"], **record)
    assert record["peak_extra_gib"] < 6.0
