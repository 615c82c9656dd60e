"""Measuring helpers for the benchmarks: peak memory of a call, CUDA event timing."""

import gc
import statistics

import torch


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(fn, device="cpu"):
    """Run fn() once; return (result, peak extra memory in MB on `device`).

    CUDA: the caching allocator's peak above what was allocated before.
    CPU: the process's peak resident set above its resident set before the
    call (Linux: writing 5 to /proc/self/clear_refs resets the high-water mark
    VmHWM, so the peak belongs to this call alone).
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        return result, (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    result = fn()
    return result, (_status_kb("VmHWM") - base) / 1024


def cuda_median_ms(fn, warmup=3, reps=10):
    """Median time of fn() in ms from CUDA events, after warm-up (do_bench style)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def synchronized(fn, device):
    """fn wrapped so that CUDA work finishes inside the timed region."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def benchmark_on(benchmark, fn, device, rounds=5):
    """Times fn (already synchronized) with pytest-benchmark, plus CUDA-event median ms on a GPU."""
    if torch.device(device).type == "cuda":
        benchmark.extra_info["cuda_event_median_ms"] = cuda_median_ms(fn, warmup=1, reps=5)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
