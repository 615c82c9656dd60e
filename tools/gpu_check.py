"""`make gpu-check`: build pyreid on a GPU machine and check its CUDA kernels, in one time-boxed command.

    python3 tools/gpu_check.py [--out gpu-report] [--stages build,smoke,tests,sanitizer,bench]
                               [--total-budget 450] [--budget STAGE=SECONDS ...] [--dry-run]

For a machine with a CUDA GPU and a CUDA build of torch already installed,
and no network: run from the repository root with that machine's Python (no
venv, nothing is downloaded). In order:

  env        the GPU, torch, CUDA toolkit, tools and Python modules here
  build      `setup.py build_ext --inplace` for GPU 0's architecture only, all cores
  smoke      tools/gpu_check_kernels.py: every CUDA op once, against the CPU op
  tests      `pytest -m cuda`: every CPU-vs-CUDA test
  sanitizer  the smoke under compute-sanitizer memcheck and racecheck (when installed)
  bench      the GPU benchmarks, cheapest first (knn, pairwise, cluster memory,
             then bench_gpu_targets.py at Market-1501, MSMT17 and 10^6 scale)

Correctness comes before speed: when time runs out it is the largest
benchmarks that are left out. Each stage has a budget (its timeout) and
starts only if that budget still fits in the total one, so the whole check
ends within --total-budget (default 450 s: under 8 minutes with start-up and
the report). The report (report.md, report.json, logs/) is rewritten after
every stage and its path printed at the end, also when a stage fails or the
check is interrupted. Exit status: 0 when every stage that ran passed, 1 when
one failed or timed out, 2 when this machine cannot run the check (no CUDA
device, no CUDA build of torch), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from gpu_check_report import build_report, write_report  # noqa: E402
from gpu_check_runner import (  # noqa: E402
    FAILING,
    Budget,
    Interrupted,
    Stage,
    StageResult,
    run_stages,
)

DEFAULT_OUT = "gpu-report"
DEFAULT_TOTAL_BUDGET_S = 450.0

# Seconds per stage, sized for one H100/H200 with 16 cores. The sum is more
# than the total on purpose: most stages end well inside their budget, and
# the last benchmarks run only with what the others left.
DEFAULT_BUDGETS: Dict[str, float] = {
    "env": 45,
    "build": 240,  # 9 .cu + 12 .cpp files with torch's headers, one architecture, in parallel
    "smoke": 45,
    "tests": 150,
    "sanitizer-memcheck": 75,
    "sanitizer-racecheck": 75,
    "bench-kernels": 75,
    "bench-market": 90,
    "bench-msmt17": 60,
    "bench-million": 120,
}

GROUPS = ("env", "build", "smoke", "tests", "sanitizer", "bench")

# Python modules without which a stage cannot run at all (it fails upfront,
# saying so); the probe looks for them and for OPTIONAL_MODULES.
IMPORT_PYREID = ("numpy", "PIL")  # `import pyreid` imports them (tests/test_gpu_check.py keeps this honest)
REQUIRED_MODULES: Dict[str, tuple] = {
    "build": ("setuptools",),
    "smoke": IMPORT_PYREID,
    "tests": (*IMPORT_PYREID, "pytest"),
    "sanitizer": IMPORT_PYREID,
    "bench": (*IMPORT_PYREID, "pytest", "pytest_benchmark"),
}
# Missing, these cost some tests (reported from the junit XML), not the stage.
OPTIONAL_MODULES: Dict[str, str] = {
    "sklearn": "tests/test_dbscan.py, test_kmeans.py, test_pseudo_labels.py and test_pseudo_label_quality.py import it",
    "scipy": "tests/test_dbscan.py imports it",
    "yaml": "the training-config tests load YAML (none is a CUDA test)",
    "torchvision": "the model tests build torchvision backbones (none is a CUDA test)",
}

# The benchmark stages: pytest selections, cheapest first.
BENCH_STAGES = (
    ("bench-kernels", "knn, pairwise_distance and ClusterMemory on CUDA",
     ["benchmarks/bench_knn.py", "benchmarks/bench_pairwise_distance.py", "benchmarks/bench_cluster_memory.py",
      "-k", "cuda"]),
    ("bench-market", "GPU targets at Market-1501 scale (jaccard_graph, pseudo-label step, re_ranking)",
     ["benchmarks/bench_gpu_targets.py", "-k", "market"]),
    ("bench-msmt17", "GPU target: re_ranking at MSMT17 test scale",
     ["benchmarks/bench_gpu_targets.py", "-k", "msmt17"]),
    ("bench-million", "GPU targets: jaccard_graph and dbscan on 10^6 points",
     ["benchmarks/bench_gpu_targets.py", "-k", "million"]),
)

# `-o addopts=` drops pyproject's `--benchmark-skip`, which pytest rejects
# when pytest-benchmark is not installed; no cache is written into the tree.
PYTEST_COMMON = ["-o", "addopts=", "-p", "no:cacheprovider", "-q"]


def tests_selection() -> List[str]:
    """pytest's arguments for the tests stage (without the junit path): every test marked `cuda`."""
    # A test module that cannot be imported here (a missing optional module)
    # costs its own tests, not every other module's.
    return ["tests", "-m", "cuda", *PYTEST_COMMON, "-rfE", "--durations=10", "--continue-on-collection-errors"]


def bench_selection(selection: List[str]) -> List[str]:
    return [*selection, "--benchmark-only", "--benchmark-columns=median,rounds", *PYTEST_COMMON, "-s"]


VERIFY_BUILD = (
    'import pyreid; info = pyreid.build_info(); print("pyreid.build_info():", info); '
    'raise SystemExit(0 if info["cuda_kernels"] else '
    '"pyreid._C was built without CUDA kernels (see the pyreid: building line above)")'
)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _missing(probe: Optional[Dict], modules) -> List[str]:
    found = (probe or {}).get("modules", {})
    return [m for m in modules if probe is not None and not found.get(m, False)]


def _env_problem(probe_json: str) -> Optional[str]:
    """Why this machine cannot run the check, or None."""
    try:
        with open(probe_json) as f:
            probe = json.load(f)
    except (OSError, ValueError):
        return "the environment probe wrote no findings"
    info = probe.get("torch", {})
    if "version" not in info:
        return f"torch cannot be imported: {info.get('error')}"
    if not info.get("cuda"):
        return f"torch {info['version']} is a CPU build: gpu-check needs a CUDA build of torch"
    if not info.get("cuda_available"):
        error = f"; {info['error']}" if info.get("error") else ""
        return (f"no CUDA device: torch.cuda.is_available() is False (torch {info['version']}, "
                f"CUDA {info['cuda']}, {info.get('device_count', 0)} devices visible{error})")
    return None


def env_stage(out: str, python: str, budgets: Dict[str, float]) -> Stage:
    probe_json = os.path.join(out, "environment.json")
    modules = sorted({m for ms in REQUIRED_MODULES.values() for m in ms} | set(OPTIONAL_MODULES))
    return Stage(
        name="env",
        group="env",
        description="GPU, torch, CUDA toolkit, tools and Python modules of this machine",
        commands=[[python, "tools/gpu_check_probe.py", "--json", probe_json, "--modules", ",".join(modules)]],
        budget_s=budgets["env"],
        artifacts={"probe_json": probe_json},
        verify=lambda: _env_problem(probe_json),
    )


def plan(out: str, python: str, budgets: Dict[str, float], probe: Optional[Dict]) -> List[Stage]:
    """Every stage after env, in order. `probe` is None for --dry-run: values it would give are placeholders."""
    gpu = (probe or {}).get("gpu") or {}
    arch = gpu.get("arch", "<GPU 0's compute capability>")
    sanitizer = (probe or {}).get("compute_sanitizer") if probe is not None else "compute-sanitizer"
    needs = ("env", "build")
    stages = [
        Stage(
            name="build",
            group="build",
            description=f"setup.py build_ext --inplace for sm_{arch.replace('.', '')} on {_cpus()} cores",
            commands=[[python, "setup.py", "build_ext", "--inplace"], [python, "-c", VERIFY_BUILD]],
            budget_s=budgets["build"],
            env={"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(_cpus()),
                 # pip installs ninja next to this Python; torch's build looks for it on PATH.
                 **({"PATH": probe["tool_path"]} if probe and probe.get("tool_path") else {})},
            needs=("env",),
        ),
        Stage(
            name="smoke",
            group="smoke",
            description="every CUDA op once on small inputs, against the CPU op",
            commands=[[python, "tools/gpu_check_kernels.py", "--json", os.path.join(out, "kernels.json")]],
            budget_s=budgets["smoke"],
            artifacts={"kernels_json": os.path.join(out, "kernels.json")},
            needs=needs,
        ),
        Stage(
            name="tests",
            group="tests",
            description="pytest -m cuda: every CPU-vs-CUDA test",
            commands=[[python, "-m", "pytest", *tests_selection(), f"--junitxml={os.path.join(out, 'tests.junit.xml')}"]],
            budget_s=budgets["tests"],
            artifacts={"junit": os.path.join(out, "tests.junit.xml")},
            needs=needs,
        ),
    ]
    for tool in ("memcheck", "racecheck"):
        name = f"sanitizer-{tool}"
        kernels_json = os.path.join(out, f"{name}.json")
        stages.append(Stage(
            name=name,
            group="sanitizer",
            description=f"the kernel smoke under compute-sanitizer --tool {tool}",
            commands=[[sanitizer or "compute-sanitizer", "--tool", tool, "--error-exitcode", "1",
                       python, "tools/gpu_check_kernels.py", "--json", kernels_json]],
            budget_s=budgets[name],
            # Without the caching allocator every tensor is its own cudaMalloc,
            # so memcheck sees an access past a tensor's end instead of landing
            # in a neighbour inside one cached block.
            env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"},
            artifacts={"kernels_json": kernels_json},
            needs=needs,
            skip_reason=None if sanitizer else "compute-sanitizer not found (not on PATH nor in the CUDA toolkit)",
        ))
    for name, description, selection in BENCH_STAGES:
        stages.append(Stage(
            name=name,
            group="bench",
            description=description,
            commands=[[python, "-m", "pytest", *bench_selection(selection),
                       f"--benchmark-json={os.path.join(out, name + '.json')}",
                       f"--junitxml={os.path.join(out, name + '.junit.xml')}"]],
            budget_s=budgets[name],
            artifacts={"benchmark_json": os.path.join(out, name + ".json"),
                       "junit": os.path.join(out, name + ".junit.xml")},
            needs=needs,
        ))
    for stage in stages:
        missing = _missing(probe, REQUIRED_MODULES.get(stage.group, ()))
        if missing:
            stage.fail_reason = f"missing Python module(s) {', '.join(missing)}, which this stage imports"
    return stages


def stage_names() -> List[str]:
    return ["env", *(stage.name for stage in plan("out", "python", DEFAULT_BUDGETS, None))]


def select(stages: List[Stage], wanted: Optional[List[str]]) -> List[Stage]:
    """The stages named in --stages, by stage name or group, in plan order."""
    if not wanted:
        return stages
    return [s for s in stages if s.name in wanted or s.group in wanted]


def print_plan(stages: List[Stage], out: str, total_budget_s: float) -> None:
    print(f"gpu-check plan: {len(stages)} stages, total budget {total_budget_s:.0f} s, report in {out}/")
    for number, stage in enumerate(stages, 1):
        print(f"\n{number:2d}. {stage.name} (budget {stage.budget_s:.0f} s): {stage.description}")
        for key, value in stage.env.items():
            if key != "PATH":
                print(f"      env {key}={value}")
        for line in stage.command_lines():
            print(f"      $ {line}")
        for reason in (stage.skip_reason, stage.fail_reason):
            if reason:
                print(f"      ! {reason}")
    print(f"\nBudgets add up to {sum(s.budget_s for s in stages):.0f} s; a stage starts only if its budget "
          f"fits in what is left of the {total_budget_s:.0f} s, otherwise it is skipped and the report says so.")


def _remove_stale(stages: List[Stage], out: str) -> None:
    """Deletes what an earlier run left for these stages, so the report never shows an old figure as new."""
    for stage in stages:
        for path in [*stage.artifacts.values(), os.path.join(out, "logs", f"{stage.name}.log")]:
            if os.path.exists(path):
                os.remove(path)


def parse_budget(text: str):
    name, _, seconds = text.partition("=")
    try:
        return name.strip(), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STAGE=SECONDS, got {text!r}") from None


def parse_args(argv):
    names = stage_names()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"stages: {', '.join(names)}; groups: {', '.join(GROUPS)}",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the report and logs (default: %(default)s)")
    parser.add_argument("--stages", help="comma-separated stages or groups to run (env always runs); default: all")
    parser.add_argument("--total-budget", type=float, default=DEFAULT_TOTAL_BUDGET_S,
                        help="seconds for the whole check (default: %(default)s)")
    parser.add_argument("--budget", type=parse_budget, action="append", default=[],
                        help="STAGE=SECONDS (a stage or group name), repeatable")
    parser.add_argument("--python", default=sys.executable, help="Python that builds and runs pyreid (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
    args = parser.parse_args(argv)
    known = set(names) | set(GROUPS)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    for name in [*(args.stages or []), *(name for name, _ in args.budget)]:
        if name not in known:
            parser.error(f"unknown stage {name!r}; stages: {', '.join(names)}; groups: {', '.join(GROUPS)}")
    budgets = dict(DEFAULT_BUDGETS)
    for name, seconds in args.budget:
        for stage in budgets:
            if stage == name or stage.split("-")[0] == name:
                budgets[stage] = seconds
    args.budgets = budgets
    return args


def _on_sigterm(signum, frame):
    raise Interrupted()


def main(argv=None) -> int:
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    python = args.python
    if args.dry_run:
        print_plan([env_stage(out, python, args.budgets), *select(plan(out, python, args.budgets, None), args.stages)],
                   out, args.total_budget)
        return 0

    budget = Budget(args.total_budget)
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    base_env = dict(os.environ)
    # Every stage imports the repository's pyreid (the in-place build), wherever it runs from.
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    base_env["PYTHONUNBUFFERED"] = "1"  # logs in order, complete up to a kill
    log_dir = os.path.join(out, "logs")
    environment: Dict = {}
    results: List[StageResult] = []
    # What the report says if the check itself crashes (the traceback follows it).
    status, exit_code = "crashed", 1

    def write(so_far, final_status="running", final_exit=None):
        results[:] = so_far
        report = build_report(environment, results, total_budget_s=budget.total_s, wall_s=budget.elapsed(),
                              started_at=started_at, status=final_status, exit_code=final_exit)
        return write_report(report, out)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        env = env_stage(out, python, args.budgets)
        _remove_stale([env], out)
        run_stages([env], budget, cwd=ROOT, log_dir=log_dir, base_env=base_env, on_result=write)
        try:
            with open(env.artifacts["probe_json"]) as f:
                environment = json.load(f)
        except (OSError, ValueError):
            environment = {}
        if results[0].status != "passed":
            print(f"gpu-check: {results[0].reason or 'the environment probe failed'}")
        stages = select(plan(out, python, args.budgets, environment or None), args.stages)
        _remove_stale(stages, out)
        run_stages(stages, budget, cwd=ROOT, log_dir=log_dir, base_env=base_env, earlier=list(results),
                   on_result=write)
        if results[0].status != "passed":
            status, exit_code = "failed", 2
        elif any(r.status in FAILING for r in results):
            status, exit_code = "failed", 1
        else:
            status, exit_code = "passed", 0
    except (Interrupted, KeyboardInterrupt):
        status, exit_code = "interrupted", 130
        print("gpu-check: interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous)
        markdown, data = write(list(results), status, exit_code)
        failed = [r.stage.name for r in results if r.status in FAILING]
        skipped = [r.stage.name for r in results if r.status == "skipped"]
        print(f"gpu-check: {status}" + (f"; failed: {', '.join(failed)}" if failed else "")
              + (f"; skipped: {', '.join(skipped)}" if skipped else "")
              + f" ({budget.elapsed():.0f} s)")
        print(f"gpu-check: report: {markdown} (and {os.path.basename(data)}, logs/)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
