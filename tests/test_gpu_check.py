"""`make gpu-check` (tools/gpu_check*.py), as far as a machine without a GPU can test it.

What needs a GPU (the build for its architecture, the CUDA tests, the
sanitizer runs, the benchmark figures) cannot run here; these tests check
the plan, the time-boxing, the report writer on fabricated pytest outputs,
that the test and benchmark selections collect what they should, that the
kernel smoke runs (both sides on the CPU), and that without a GPU the check
says so, writes its report and fails.
"""

import ast
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import gpu_check  # noqa: E402
import gpu_check_kernels  # noqa: E402
from gpu_check_report import build_report, judge_goal, parse_junit, sanitizer_summary, write_report  # noqa: E402
from gpu_check_runner import (  # noqa: E402
    FAILED,
    NOT_RUN,
    PASSED,
    SKIPPED,
    TIMED_OUT,
    Budget,
    Stage,
    StageResult,
    run_stage,
    run_stages,
)

PY = sys.executable


def stage(name, commands, budget_s=10, **kwargs):
    return Stage(name=name, group=kwargs.pop("group", name), description=f"test stage {name}",
                 commands=commands, budget_s=budget_s, **kwargs)


def alive(pid, settle_s=3.0):
    """True if pid still runs after settle_s (a killed process takes a moment to exit; a zombie counts as dead)."""
    deadline = time.monotonic() + settle_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pid)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ the plan


def test_dry_run_prints_every_stage_with_its_command_and_budget(tmp_path, capsys):
    out = tmp_path / "report"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name, budget in gpu_check.DEFAULT_BUDGETS.items():
        assert re.search(rf"\d+\. {re.escape(name)} \(budget {budget:.0f} s\)", text), name
    assert "setup.py build_ext --inplace" in text
    assert "env FORCE_CUDA=1" in text and "env TORCH_CUDA_ARCH_LIST=<GPU 0's compute capability>" in text
    assert re.search(r"env MAX_JOBS=\d+", text)
    assert "-m pytest tests -m cuda" in text and "--continue-on-collection-errors" in text
    assert "compute-sanitizer --tool memcheck --error-exitcode 1" in text
    assert "compute-sanitizer --tool racecheck" in text
    assert "benchmarks/bench_gpu_targets.py -k million --benchmark-only" in text
    assert f"--benchmark-json={out}/bench-million.json" in text
    assert "total budget 450 s" in text
    assert not out.exists(), "a dry run writes nothing"


def test_dry_run_with_stages_plans_only_those_and_env(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--stages", "tests,bench-million"]) == 0
    planned = re.findall(r"^\s*\d+\. (\S+) \(budget", capsys.readouterr().out, flags=re.M)
    assert planned == ["env", "tests", "bench-million"]


def test_stage_groups_select_all_their_stages():
    stages = gpu_check.select(gpu_check.plan("out", PY, gpu_check.DEFAULT_BUDGETS, None), ["sanitizer", "bench"])
    assert [s.name for s in stages] == [
        "sanitizer-memcheck", "sanitizer-racecheck", "bench-kernels", "bench-market", "bench-msmt17", "bench-million"
    ]


def test_budgets_can_be_set_per_stage_and_per_group():
    args = gpu_check.parse_args(["--budget", "bench=10", "--budget", "build=99", "--total-budget", "120"])
    assert args.budgets["build"] == 99 and args.total_budget == 120
    assert all(args.budgets[name] == 10 for name in args.budgets if name.startswith("bench-"))
    assert args.budgets["tests"] == gpu_check.DEFAULT_BUDGETS["tests"]


@pytest.mark.parametrize("argv", [["--stages", "tests,nonsense"], ["--budget", "nonsense=3"], ["--budget", "tests"]])
def test_unknown_stages_and_bad_budgets_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2


def test_dry_run_works_without_torch():
    # The GPU machine's Python may be broken in ways the plan must still show.
    script = ("import runpy, sys; sys.argv = ['gpu_check.py', '--dry-run']\n"
              "try:\n    runpy.run_path('tools/gpu_check.py', run_name='__main__')\n"
              "except SystemExit as e:\n    assert e.code == 0, e.code\n"
              "print('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([PY, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout


def test_missing_required_modules_fail_their_stages_upfront():
    probe = {"modules": {"setuptools": True, "numpy": True, "PIL": True, "pytest": True, "pytest_benchmark": False},
             "gpu": {"arch": "9.0"}, "compute_sanitizer": None}
    stages = {s.name: s for s in gpu_check.plan("out", PY, gpu_check.DEFAULT_BUDGETS, probe)}
    assert all("pytest_benchmark" in stages[name].fail_reason for name in stages if name.startswith("bench-"))
    assert stages["tests"].fail_reason is None and stages["build"].fail_reason is None
    assert "compute-sanitizer not found" in stages["sanitizer-memcheck"].skip_reason
    assert stages["build"].env["TORCH_CUDA_ARCH_LIST"] == "9.0"


def test_import_pyreid_needs_only_the_modules_the_plan_checks():
    # gpu_check.IMPORT_PYREID must name every third-party module `import pyreid` adds to torch's.
    script = ("import sys, json, torch\nbefore = {m.split('.')[0] for m in sys.modules}\nimport pyreid\n"
              "added = {m.split('.')[0] for m in sys.modules} - before\n"
              "print(json.dumps(sorted(m for m in added if m not in sys.stdlib_module_names)))")
    done = subprocess.run([PY, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    added = set(json.loads(done.stdout.strip().splitlines()[-1])) - {"pyreid"}
    assert added <= set(gpu_check.IMPORT_PYREID)


# ---------------------------------------------------------- the time-boxing


def test_a_stage_past_its_budget_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The command starts a grandchild and waits: both must die at the deadline.
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    start = time.monotonic()
    result = run_stage(stage("slow", [[PY, "-c", script]], budget_s=2), Budget(60), cwd=ROOT, log_dir=str(tmp_path))
    assert result.status == TIMED_OUT
    assert result.reason.startswith("killed after its budget of 2 s (`")
    assert 1.9 < result.wall_s < 8 and time.monotonic() - start < 10
    assert pid_file.exists() and not alive(int(pid_file.read_text()))


def test_later_stages_are_skipped_when_the_total_budget_is_spent(tmp_path):
    stages = [
        stage("first", [["sleep", "2"]], budget_s=3),
        stage("too_big", [["true"]], budget_s=3),  # 4 - 2 s left: does not fit
        stage("small", [["true"]], budget_s=1),  # still fits: a skip does not stop the run
    ]
    lines = []
    results = run_stages(stages, Budget(4), cwd=ROOT, log_dir=str(tmp_path), say=lines.append)
    assert [r.status for r in results] == [PASSED, SKIPPED, PASSED]
    assert re.match(r"its budget of 3 s does not fit in the [12] s left", results[1].reason)
    assert any(line.startswith("[gpu-check] too_big: skipped: its budget of 3 s") for line in lines)


def test_a_failing_command_stops_its_stage_and_the_stages_that_need_it(tmp_path):
    marker = tmp_path / "second-command-ran"
    stages = [
        stage("build", [[PY, "-c", "print('compiling'); raise SystemExit(3)"], ["touch", str(marker)]]),
        stage("tests", [["true"]], needs=("build",)),
        stage("other", [["true"]]),
    ]
    results = run_stages(stages, Budget(60), cwd=ROOT, log_dir=str(tmp_path), say=lambda line: None)
    assert [r.status for r in results] == [FAILED, SKIPPED, PASSED]
    assert results[0].returncode == 3 and results[0].reason.startswith("exit status 3 from `")
    assert not marker.exists()
    assert results[1].reason == "needs stage 'build', which failed"
    log = (tmp_path / "build.log").read_text()
    assert "compiling" in log and log.startswith("$ ")


def test_a_missing_command_and_a_failed_check_fail_the_stage(tmp_path):
    missing = run_stage(stage("a", [["no-such-command-for-gpu-check"]]), Budget(60), cwd=ROOT, log_dir=str(tmp_path))
    assert missing.status == FAILED and missing.reason == "command not found: no-such-command-for-gpu-check"
    checked = run_stage(stage("b", [["true"]], verify=lambda: "the output says no"), Budget(60), cwd=ROOT,
                        log_dir=str(tmp_path))
    assert checked.status == FAILED and checked.reason == "the output says no"


def test_sigterm_stops_the_running_stage_and_marks_the_rest_not_run(tmp_path):
    record, child_pid = tmp_path / "results.json", tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import json, signal, sys
        sys.path.insert(0, {TOOLS!r})
        from gpu_check import _on_sigterm
        from gpu_check_runner import Budget, Interrupted, Stage, run_stages
        signal.signal(signal.SIGTERM, _on_sigterm)
        sleeper = "import os, time; open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        stages = [Stage("long", "x", "sleeps", [[sys.executable, "-c", sleeper]], 60),
                  Stage("after", "x", "never runs", [["true"]], 5)]
        def save(results):
            json.dump([[r.stage.name, r.status] for r in results], open({str(record)!r}, "w"))
        try:
            run_stages(stages, Budget(100), cwd=".", log_dir={str(tmp_path)!r}, on_result=save, say=lambda s: None)
        except Interrupted:
            print("interrupted")
    """)
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not child_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out
    assert json.loads(record.read_text()) == [["long", "interrupted"], ["after", NOT_RUN]]
    assert not alive(int(child_pid.read_text()))


# ---------------------------------------------------------------- the report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="2" failures="1" skipped="1" tests="5" time="3.5">
<testcase classname="" name="tests.test_dbscan" time="0.000">
  <error message="collection failure">ImportError while importing test module
E   ModuleNotFoundError: No module named 'sklearn'</error></testcase>
<testcase classname="tests.test_knn" name="test_cpu_and_cuda_agree[cosine-float32-True]" time="0.250"/>
<testcase classname="tests.test_knn" name="test_cuda_ties_exact_across_many_tiles" time="1.500">
  <failure message="AssertionError: indices differ">trace</failure></testcase>
<testcase classname="tests.test_dbscan" name="test_labels[cuda]" time="0.010">
  <skipped type="pytest.skip" message="needs a CUDA device">skip</skipped></testcase>
<testcase classname="tests.test_jaccard" name="test_cuda_input" time="0.020">
  <error message="failed on setup with &quot;RuntimeError: CUDA error&quot;">trace</error></testcase>
</testsuite></testsuites>
"""

BENCH_JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="6">
<testcase classname="benchmarks.bench_gpu_targets" name="test_jaccard_graph_market_train" time="3"/>
<testcase classname="benchmarks.bench_gpu_targets" name="test_re_ranking_msmt17_test" time="9"/>
<testcase classname="benchmarks.bench_gpu_targets" name="test_pseudo_label_step_market_train" time="2">
  <failure message="AssertionError: labels differ from the CPU's">trace</failure></testcase>
<testcase classname="benchmarks.bench_knn" name="test_knn_cuda[pyreid-100000-2048-31]" time="5"/>
<testcase classname="benchmarks.bench_knn" name="test_knn_cuda[mm_only-100000-2048-31]" time="5"/>
<testcase classname="benchmarks.bench_cluster_memory" name="test_cluster_memory_forward_backward_cuda[hard]" time="1"/>
</testsuite></testsuites>
"""


def bench(fullname, group, median_s, extra, params=None):
    return {"group": group, "name": fullname.split("::")[1], "fullname": fullname, "params": params or {},
            "extra_info": extra, "stats": {"median": median_s, "rounds": 5}}


BENCH_JSON = {"benchmarks": [
    bench("benchmarks/bench_gpu_targets.py::test_jaccard_graph_market_train", None, 0.09,
          {"cuda_median_ms": 61.5, "peak_gpu_mb": 900, "target": "< 100 ms"}),
    bench("benchmarks/bench_gpu_targets.py::test_re_ranking_msmt17_test", None, 4.0,
          {"cuda_median_ms": 3900.0, "peak_gpu_mb": 25000, "target": "< 5 s within 20 GB"}),
    bench("benchmarks/bench_knn.py::test_knn_cuda[pyreid-100000-2048-31]", "knn cuda N=100000", 1.0,
          {"cuda_event_median_ms": 1200.0, "target": "<= 1.5x mm_only"}, {"impl": "pyreid"}),
    bench("benchmarks/bench_knn.py::test_knn_cuda[mm_only-100000-2048-31]", "knn cuda N=100000", 1.0,
          {"cuda_event_median_ms": 1000.0}, {"impl": "mm_only"}),
    bench("benchmarks/bench_cluster_memory.py::test_cluster_memory_forward_backward_cuda[hard]", "cm", 0.002,
          {"cuda_event_median_ms": 1.75}),
]}


@pytest.fixture
def fabricated_run(tmp_path):
    """Stage results as a GPU run would leave them, from fabricated pytest and sanitizer outputs."""
    (tmp_path / "tests.junit.xml").write_text(JUNIT)
    (tmp_path / "bench.junit.xml").write_text(BENCH_JUNIT)
    (tmp_path / "bench.json").write_text(json.dumps(BENCH_JSON))
    (tmp_path / "memcheck.log").write_text("========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 2 errors\n")
    (tmp_path / "memcheck.json").write_text(json.dumps({"cases": [{"name": "knn", "status": "failed"},
                                                                 {"name": "dbscan_dense", "status": "passed"}]}))
    (tmp_path / "build.log").write_text("$ python setup.py\npyreid: building pyreid._C with CUDA kernels: yes\n")
    results = [
        StageResult(stage("build", [["true"]], budget_s=240), PASSED, wall_s=120.0, returncode=0,
                    log=str(tmp_path / "build.log")),
        StageResult(stage("tests", [["true"]], artifacts={"junit": str(tmp_path / "tests.junit.xml")}), FAILED,
                    "exit status 1", 80.0, 1, str(tmp_path / "tests.log")),
        StageResult(stage("sanitizer-memcheck", [["true"]], group="sanitizer",
                          artifacts={"kernels_json": str(tmp_path / "memcheck.json")}), FAILED, "exit status 1",
                    40.0, 1, str(tmp_path / "memcheck.log")),
        StageResult(stage("bench-x", [["true"]], group="bench",
                          artifacts={"junit": str(tmp_path / "bench.junit.xml"),
                                     "benchmark_json": str(tmp_path / "bench.json")}), FAILED, "exit status 1",
                    50.0, 1, str(tmp_path / "bench.log")),
        StageResult(stage("bench-million", [["true"]], group="bench", budget_s=120), SKIPPED,
                    "its budget of 120 s does not fit in the 35 s left"),
    ]
    environment = {"gpu": {"name": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "total_memory_gib": 79.1,
                           "multiprocessors": 132},
                   "torch": {"version": "2.11.0+cu130", "cuda": "13.0"}, "nvcc_release": "13.0",
                   "python": "3.12.3", "cpus": 16, "nvidia_smi": [{"driver_version": "580.65"}]}
    report = build_report(environment, results, total_budget_s=450, wall_s=415.2,
                          started_at="2026-01-01T00:00:00+00:00", status="failed", exit_code=1)
    return report, write_report(report, str(tmp_path / "out"))


def test_junit_results_are_read_test_by_test(tmp_path):
    (tmp_path / "tests.junit.xml").write_text(JUNIT)
    junit = parse_junit(str(tmp_path / "tests.junit.xml"))
    assert junit["summary"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1, "total": 4,
                                "collection_errors": 1, "seconds": 1.78}
    outcomes = {c["id"]: (c["outcome"], c["message"]) for c in junit["cases"]}
    assert outcomes["tests.test_knn::test_cuda_ties_exact_across_many_tiles"] == ("failed", "AssertionError: indices differ")
    assert outcomes["tests.test_dbscan::test_labels[cuda]"] == ("skipped", "needs a CUDA device")
    assert outcomes["tests.test_jaccard::test_cuda_input"][0] == "error"
    assert junit["collection_errors"] == [{"module": "tests.test_dbscan",
                                           "message": "ModuleNotFoundError: No module named 'sklearn'"}]


def test_report_json_puts_each_figure_next_to_its_goal(fabricated_run):
    report, (markdown_path, json_path) = fabricated_run
    data = json.loads(open(json_path).read())
    assert data == json.loads(json.dumps(report, default=str))
    rows = {row["name"].split("::")[1]: row for row in data["benchmarks"]}
    assert rows["test_jaccard_graph_market_train"]["verdict"] == "met"
    assert rows["test_jaccard_graph_market_train"]["median_ms"] == 61.5
    assert rows["test_jaccard_graph_market_train"]["measured_by"] == "extra_info.cuda_median_ms"
    msmt = rows["test_re_ranking_msmt17_test"]
    assert msmt["verdict"] == "missed" and msmt["detail"] == "peak 25,000 MB is not within 20,480 MB"
    knn = rows["test_knn_cuda[pyreid-100000-2048-31]"]
    assert knn["verdict"] == "met" and knn["detail"] == "1.20x mm_only (1,000.0 ms)"
    assert rows["test_cluster_memory_forward_backward_cuda[hard]"]["verdict"] == "no goal"
    failed_before_timing = rows["test_pseudo_label_step_market_train"]
    assert failed_before_timing["outcome"] == "failed" and failed_before_timing["verdict"] == "not measured"
    assert data["tests"]["summary"]["failed"] == 1
    assert data["sanitizer"] == [{"stage": "sanitizer-memcheck", "status": "failed", "errors": 2,
                                  "summary": "ERROR SUMMARY: 2 errors", "cases_failed": ["knn"]}]
    stages = {s["name"]: s for s in data["stages"]}
    assert stages["build"]["build_line"] == "pyreid: building pyreid._C with CUDA kernels: yes"
    assert stages["bench-million"]["status"] == "skipped" and "35 s left" in stages["bench-million"]["reason"]


def test_report_markdown_shows_machine_stages_tests_and_goals(fabricated_run):
    _, (markdown_path, _) = fabricated_run
    text = open(markdown_path).read()
    assert text.startswith("# pyreid gpu-check: FAILED (1 stage skipped)")
    assert "**NVIDIA H100 80GB HBM3** (sm_90, 79.1 GiB, 132 SMs) · driver 580.65 · torch 2.11.0+cu130 (CUDA 13.0)" in text
    assert "415 s of a 450 s budget" in text
    assert "| bench-million | skipped |  | 120 s | its budget of 120 s does not fit in the 35 s left |" in text
    assert "1 passed, 1 failed, 1 errors, 1 skipped of 4 tests" in text
    assert "- not collected: `tests.test_dbscan`: ModuleNotFoundError: No module named 'sklearn'" in text
    assert "| `tests.test_knn::test_cuda_ties_exact_across_many_tiles` | failed | AssertionError: indices differ |" in text
    assert ("| `benchmarks/bench_gpu_targets.py::test_jaccard_graph_market_train` | passed | 61.50 ms | 900 MB "
            "| < 100 ms | met (61.5 ms) |") in text
    assert "| sanitizer-memcheck | failed | 2 | ERROR SUMMARY: 2 errors | knn |" in text


@pytest.mark.parametrize("goal,ms,peak,verdict", [
    ("< 100 ms", 99.9, None, "met"),
    ("< 100 ms", 100.0, None, "missed"),
    ("< 60 s", 59_000, None, "met"),
    ("< 5 s within 20 GB", 4_000, 20 * 1024 - 1, "met"),
    ("< 5 s within 20 GB", 4_000, None, "unknown"),
    ("about fast", 1.0, None, "unknown"),
])
def test_goals_are_read_as_the_benchmark_files_write_them(goal, ms, peak, verdict):
    extra = {"cuda_median_ms": ms, "target": goal, **({} if peak is None else {"peak_gpu_mb": peak})}
    assert judge_goal({"extra_info": extra}, [])["verdict"] == verdict


def test_sanitizer_summaries_are_read_from_the_logs(tmp_path):
    log = tmp_path / "racecheck.log"
    log.write_text("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n")
    assert sanitizer_summary(str(log)) == {"errors": 0,
                                           "summary": "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"}
    log.write_text("killed before the summary\n")
    assert sanitizer_summary(str(log)) == {"errors": None, "summary": None}


# ------------------------------------------------- what the stages select


def test_every_cuda_kernel_has_a_smoke_case():
    registered = set()
    for path in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        registered |= set(re.findall(r'm\.impl\("(\w+)"', open(path).read()))
    assert registered and registered == set(gpu_check_kernels.covered_ops())


def test_kernel_smoke_runs_every_case_with_both_sides_on_the_cpu():
    status, findings = gpu_check_kernels.check("cpu")
    assert status == 0, findings["problem"]
    assert [c["name"] for c in findings["cases"]] == [name for name, _, _ in gpu_check_kernels.CASES]
    assert all(c["status"] == "passed" for c in findings["cases"])


@pytest.mark.skipif(gpu_check_kernels.torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_kernel_smoke_without_a_gpu_says_so():
    status, findings = gpu_check_kernels.check("cuda")
    assert status == 2 and findings["problem"].startswith("no CUDA device visible")


COLLECT_PLUGIN = '''
import json, os, re
import pytest

state = {"selected": [], "deselected": [], "errors": []}

def _row(item):
    reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
    return {"id": item.nodeid, "cuda_marker": item.get_closest_marker("cuda") is not None,
            "needs_cuda": bool(re.search(r"needs (a )?(CUDA device|GPU)", reasons))}

def pytest_deselected(items):
    state["deselected"] += [_row(item) for item in items]

def pytest_collectreport(report):
    if report.failed:
        state["errors"].append(report.nodeid)

def pytest_collection_finish(session):
    state["selected"] = [_row(item) for item in session.items]
    with open(os.environ["GPU_CHECK_COLLECTED"], "w") as f:
        json.dump(state, f)
'''

# Stands in for a GPU machine without these (gpu-check must not depend on them to collect).
BLOCK_MODULES = '''
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"yaml", "torchvision", "matplotlib", "pytest_benchmark"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
'''


@pytest.fixture(scope="module")
def cuda_selection(tmp_path_factory):
    """What the tests stage's own pytest arguments collect, without yaml, torchvision and pytest-benchmark."""
    folder = tmp_path_factory.mktemp("collect")
    (folder / "gpu_check_collect_plugin.py").write_text(COLLECT_PLUGIN)
    (folder / "sitecustomize.py").write_text(BLOCK_MODULES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), ROOT]),
           "GPU_CHECK_COLLECTED": str(folder / "collected.json")}
    command = [PY, "-m", "pytest", *gpu_check.tests_selection(), "--collect-only", "-p", "gpu_check_collect_plugin"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((folder / "collected.json").read_text()), done.stdout


def test_the_cuda_selection_collects_without_errors(cuda_selection):
    collected, stdout = cuda_selection
    assert collected["errors"] == []
    assert len(collected["selected"]) > 0
    assert re.search(rf"{len(collected['selected'])}/\d+ tests collected", stdout)
    assert all(row["cuda_marker"] for row in collected["selected"])


def test_no_test_that_needs_a_gpu_is_left_out_of_the_cuda_selection(cuda_selection):
    collected, _ = cuda_selection
    left_out = [row["id"] for row in collected["deselected"] if row["needs_cuda"]]
    assert left_out == []
    assert any("test_knn.py::test_cpu_and_cuda_agree" in row["id"] for row in collected["selected"])


def _test_functions(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def test_the_benchmark_stages_select_every_gpu_case_once():
    selections = [selection for _, _, selection in gpu_check.BENCH_STAGES]
    # Every test of bench_gpu_targets.py falls in exactly one stage ("-k" with one plain keyword).
    targets = [s[s.index("-k") + 1] for s in selections if s[0] == "benchmarks/bench_gpu_targets.py"]
    for name in _test_functions("benchmarks/bench_gpu_targets.py"):
        assert sum(keyword in name for keyword in targets) == 1, name
    kernels = next(s for s in selections if "benchmarks/bench_knn.py" in s)
    keyword = kernels[kernels.index("-k") + 1]
    for path in [p for p in kernels if p.endswith(".py")]:
        cuda_cases = [name for name in _test_functions(path) if keyword in name]
        assert cuda_cases and all(name.endswith("_cuda") for name in cuda_cases), path


# ------------------------------------------------------- the whole command


def test_without_a_gpu_the_check_says_so_writes_its_report_and_fails(tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no device, also on a machine that has one
    done = subprocess.run([PY, "tools/gpu_check.py", "--out", str(out), "--stages", "build,tests"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gpu-check: no CUDA device: torch.cuda.is_available() is False" in done.stdout
    assert f"gpu-check: report: {out}/report.md" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["exit_code"] == 2
    assert [(s["name"], s["status"]) for s in report["stages"]] == [("env", "failed"), ("build", "skipped"),
                                                                     ("tests", "skipped")]
    assert report["environment"]["torch"]["cuda_available"] is False
    assert "no CUDA device" in (out / "report.md").read_text()
    assert (out / "logs" / "env.log").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_uses_the_system_python_and_never_the_venv():
    # Under `make test` the parent make's MAKEFLAGS / MAKELEVEL would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    make = ["make", "--no-print-directory", "-n", "gpu-check"]
    done = subprocess.run(make, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "python3 tools/gpu_check.py"
    done = subprocess.run(make + ["GPU_CHECK_PYTHON=/opt/py", "GPU_CHECK_ARGS=--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "/opt/py tools/gpu_check.py --dry-run"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_report_folder_is_ignored_by_git():
    done = subprocess.run(["git", "check-ignore", "-q", "gpu-report/report.md"], cwd=ROOT, timeout=30)
    assert done.returncode == 0
