"""The report of `make gpu-check`: one JSON file and one markdown page from what the stages left.

Inputs are the stages' own outputs, never re-measured here: pytest's junit
XML (every test's outcome), pytest-benchmark's JSON (each benchmark's figures
and, in `extra_info["target"]`, the goal its file states), the kernel smoke's
JSON and compute-sanitizer's summary lines in the stage logs.

Goals are read as written in the benchmark files:
  "< 100 ms", "< 5 s within 20 GB"   an absolute time (and peak GPU memory, GiB),
  "<= 1.5x mm_only"                  a ratio to another case of the same group
                                     (the one whose `impl` parameter is named).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

# ------------------------------------------------------------------ junit XML


def _case_outcome(testcase: ET.Element):
    """(outcome, message) of one junit testcase."""
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        child = testcase.find(tag)
        if child is not None:
            message = child.get("message") or ""
            if not message:  # some outcomes carry their text only in the body
                body = (child.text or "").strip().splitlines()
                message = body[-1] if body else ""
            return outcome, message
    return "passed", ""


def parse_junit(path: str) -> Dict:
    """Every test of a pytest junit XML file, with a summary; collection errors apart."""
    root = ET.parse(path).getroot()
    cases, collection_errors = [], []
    for testcase in root.iter("testcase"):
        classname, name = testcase.get("classname", ""), testcase.get("name", "")
        outcome, message = _case_outcome(testcase)
        if not classname and outcome == "error":
            # pytest reports a module it could not import as a nameless-class error.
            detail = (testcase.find("error").text or "").strip().splitlines()
            cause = next((line for line in reversed(detail) if "Error" in line), message)
            collection_errors.append({"module": name, "message": cause.lstrip("E ").strip()})
            continue
        cases.append({
            "id": f"{classname}::{name}" if classname else name,
            "module": classname,
            "name": name,
            "outcome": outcome,
            "seconds": float(testcase.get("time") or 0.0),
            "message": message[:500],
        })
    summary = {outcome: sum(c["outcome"] == outcome for c in cases) for outcome in ("passed", "failed", "error", "skipped")}
    summary["total"] = len(cases)
    summary["collection_errors"] = len(collection_errors)
    summary["seconds"] = round(sum(c["seconds"] for c in cases), 2)
    return {"summary": summary, "cases": cases, "collection_errors": collection_errors}


# --------------------------------------------------------- benchmark figures

ABSOLUTE_GOAL = re.compile(r"^<\s*(?P<value>[\d.]+)\s*(?P<unit>ms|s)(?:\s+within\s+(?P<memory>[\d.]+)\s*GB)?$")
RELATIVE_GOAL = re.compile(r"^<=\s*(?P<ratio>[\d.]+)x\s+(?P<baseline>.+)$")


def measured_ms(bench: Dict):
    """(milliseconds, source): CUDA-event median where the benchmark recorded one, else pytest-benchmark's."""
    extra = bench.get("extra_info", {})
    for key in ("cuda_median_ms", "cuda_event_median_ms"):
        if isinstance(extra.get(key), (int, float)):
            return float(extra[key]), f"extra_info.{key}"
    median = bench.get("stats", {}).get("median")
    return (median * 1e3, "stats.median") if isinstance(median, (int, float)) else (None, None)


def peak_gpu_mb(bench: Dict) -> Optional[float]:
    extra = bench.get("extra_info", {})
    for key in ("peak_gpu_mb", "peak_extra_memory_mb"):
        if isinstance(extra.get(key), (int, float)):
            return float(extra[key])
    return None


def judge_goal(bench: Dict, group: List[Dict]) -> Dict:
    """{"goal", "verdict": met | missed | unknown | no goal, "detail"} for one benchmark."""
    goal = bench.get("extra_info", {}).get("target")
    if not goal:
        return {"goal": None, "verdict": "no goal", "detail": ""}
    ms, _ = measured_ms(bench)
    absolute, relative = ABSOLUTE_GOAL.match(goal.strip()), RELATIVE_GOAL.match(goal.strip())
    if ms is None:
        return {"goal": goal, "verdict": "unknown", "detail": "no time was recorded"}
    if absolute:
        limit_ms = float(absolute["value"]) * (1e3 if absolute["unit"] == "s" else 1.0)
        problems = [f"{ms:,.1f} ms is not < {limit_ms:,.0f} ms"] if ms >= limit_ms else []
        if absolute["memory"]:
            peak, limit_mb = peak_gpu_mb(bench), float(absolute["memory"]) * 1024
            if peak is None:
                return {"goal": goal, "verdict": "unknown", "detail": "no peak memory was recorded"}
            if peak >= limit_mb:
                problems.append(f"peak {peak:,.0f} MB is not within {limit_mb:,.0f} MB")
        detail = "; ".join(problems) or f"{ms:,.1f} ms"
        return {"goal": goal, "verdict": "missed" if problems else "met", "detail": detail}
    if relative:
        baseline_name = relative["baseline"].strip()
        baseline = next((b for b in group if b is not bench and b.get("params", {}).get("impl") == baseline_name), None)
        baseline_ms = measured_ms(baseline)[0] if baseline else None
        if not baseline_ms:
            return {"goal": goal, "verdict": "unknown", "detail": f"no '{baseline_name}' case in this group was measured"}
        ratio = ms / baseline_ms
        verdict = "met" if ratio <= float(relative["ratio"]) else "missed"
        return {"goal": goal, "verdict": verdict, "detail": f"{ratio:.2f}x {baseline_name} ({baseline_ms:,.1f} ms)"}
    return {"goal": goal, "verdict": "unknown", "detail": "the goal is not in a form this report reads"}


def _junit_key(module: str, name: str) -> str:
    """pytest-benchmark's fullname ("benchmarks/bench_knn.py::test_x[p]") from junit's classname and name."""
    return f"{module.replace('.', '/')}.py::{name}"


def benchmark_rows(stage: str, benchmark_json: Optional[str], junit: Optional[Dict]) -> List[Dict]:
    """One row per benchmark case of a stage: its test outcome, figures and goal."""
    benches = []
    if benchmark_json and os.path.exists(benchmark_json):
        with open(benchmark_json) as f:
            benches = json.load(f).get("benchmarks", [])
    by_group: Dict[str, List[Dict]] = {}
    for bench in benches:
        by_group.setdefault(bench.get("group") or "", []).append(bench)
    outcomes = {_junit_key(c["module"], c["name"]): c for c in (junit or {}).get("cases", [])}
    rows, seen = [], set()
    for bench in benches:
        fullname = bench.get("fullname", bench.get("name", ""))
        seen.add(fullname)
        ms, source = measured_ms(bench)
        case = outcomes.get(fullname, {})
        rows.append({
            "stage": stage,
            "name": fullname,
            "group": bench.get("group"),
            "outcome": case.get("outcome", "passed"),
            "message": case.get("message", ""),
            "median_ms": None if ms is None else round(ms, 3),
            "measured_by": source,
            "peak_gpu_mb": peak_gpu_mb(bench),
            "rounds": bench.get("stats", {}).get("rounds"),
            "extra_info": bench.get("extra_info", {}),
            **judge_goal(bench, by_group.get(bench.get("group") or "", [])),
        })
    # Cases that failed (or were skipped) before they were timed have no figures.
    for fullname, case in outcomes.items():
        if fullname not in seen:
            rows.append({"stage": stage, "name": fullname, "group": None, "outcome": case["outcome"],
                         "message": case["message"], "median_ms": None, "measured_by": None, "peak_gpu_mb": None,
                         "rounds": None, "extra_info": {}, "goal": None, "verdict": "not measured", "detail": ""})
    for error in (junit or {}).get("collection_errors", []):
        rows.append({"stage": stage, "name": error["module"], "group": None, "outcome": "not collected",
                     "message": error["message"], "median_ms": None, "measured_by": None, "peak_gpu_mb": None,
                     "rounds": None, "extra_info": {}, "goal": None, "verdict": "not measured", "detail": ""})
    return rows


# ------------------------------------------------------------- sanitizer logs

SANITIZER_SUMMARY = re.compile(r"(ERROR SUMMARY: (\d+) errors?|RACECHECK SUMMARY: (\d+) hazards? displayed[^\n]*)")


def sanitizer_summary(log_path: Optional[str]) -> Dict:
    """compute-sanitizer's summary line and error count (None when the run ended before printing it)."""
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except (OSError, TypeError):
        return {"errors": None, "summary": None}
    matches = SANITIZER_SUMMARY.findall(text)
    if not matches:
        return {"errors": None, "summary": None}
    line, errors, hazards = matches[-1]
    return {"errors": int(errors or hazards), "summary": line.strip()}


def _build_line(log_path: Optional[str]) -> Optional[str]:
    """setup.py's one line on what it builds (CUDA kernels or not, CUDA_HOME, architectures)."""
    try:
        with open(log_path, errors="replace") as f:
            return next((line.strip() for line in f if line.startswith("pyreid: building")), None)
    except (OSError, TypeError):
        return None


def _load_json(path: Optional[str]):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------- report


def build_report(environment: Optional[Dict], results, *, total_budget_s: float, wall_s: float,
                 started_at: str, status: str, exit_code: Optional[int]) -> Dict:
    """The report as one JSON-ready dict, from the probe's findings and the stage results."""
    ran = [r for r in results if r.status not in ("skipped", "not_run")]
    report = {
        "status": status,
        "exit_code": exit_code,
        "started_at": started_at,
        "wall_s": round(wall_s, 1),
        "total_budget_s": total_budget_s,
        "environment": environment or {},
        "stages": [],
        "kernels": None,
        "tests": None,
        "benchmarks": [],
        "sanitizer": [],
    }
    for result in results:
        stage = result.stage
        entry = {
            "name": stage.name,
            "group": stage.group,
            "description": stage.description,
            "status": result.status,
            "reason": result.reason,
            "wall_s": round(result.wall_s, 1),
            "budget_s": stage.budget_s,
            "returncode": result.returncode,
            "commands": stage.command_lines(),
            "log": result.log,
        }
        if stage.group == "build":
            entry["build_line"] = _build_line(result.log)
        report["stages"].append(entry)
    for result in ran:
        stage, artifacts = result.stage, result.stage.artifacts
        junit = parse_junit(artifacts["junit"]) if os.path.exists(artifacts.get("junit", "")) else None
        if stage.group == "smoke":
            report["kernels"] = _load_json(artifacts.get("kernels_json"))
        elif stage.group == "tests":
            report["tests"] = junit
        elif stage.group == "bench":
            report["benchmarks"] += benchmark_rows(stage.name, artifacts.get("benchmark_json"), junit)
        elif stage.group == "sanitizer":
            kernels = _load_json(artifacts.get("kernels_json")) or {}
            report["sanitizer"].append({
                "stage": stage.name,
                "status": result.status,
                **sanitizer_summary(result.log),
                "cases_failed": [c["name"] for c in kernels.get("cases", []) if c["status"] != "passed"],
            })
    return report


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else ""


def _seconds(value) -> str:
    return f"{value:.0f} s" if isinstance(value, (int, float)) else ""


def _environment_line(env: Dict) -> str:
    gpu, torch_info = env.get("gpu") or {}, env.get("torch") or {}
    parts = []
    if gpu:
        parts.append(f"**{gpu.get('name')}** (sm_{''.join(map(str, gpu.get('capability', [])))}, "
                     f"{gpu.get('total_memory_gib')} GiB, {gpu.get('multiprocessors')} SMs)")
    else:
        parts.append("**no CUDA device**")
    drivers = env.get("nvidia_smi") or []
    if drivers:
        parts.append(f"driver {drivers[0].get('driver_version')}")
    if torch_info.get("version"):
        parts.append(f"torch {torch_info['version']} (CUDA {torch_info.get('cuda')})")
    elif torch_info.get("error"):
        parts.append(f"torch not importable: {torch_info['error']}")
    parts.append(f"nvcc {env.get('nvcc_release') or 'not found'}")
    parts.append(f"Python {env.get('python', '?')}")
    parts.append(f"{env.get('cpus', '?')} CPUs")
    return " · ".join(parts)


def render_markdown(report: Dict) -> str:
    env = report["environment"]
    skipped = sum(s["status"] in ("skipped", "not_run") for s in report["stages"])
    lines = [
        f"# pyreid gpu-check: {report['status'].upper()}"
        + (f" ({skipped} stage{'s' if skipped != 1 else ''} skipped)" if skipped else ""),
        "",
        _environment_line(env),
        "",
        f"Started {report['started_at']}; {report['wall_s']:.0f} s of a {report['total_budget_s']:.0f} s budget. "
        f"Exit status {report['exit_code']}. Logs of every stage: `logs/<stage>.log`.",
        "",
        "## Stages",
        "",
        "| stage | status | wall | budget | note |",
        "|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        note = stage["reason"] or stage.get("build_line") or stage["description"]
        lines.append(f"| {stage['name']} | {stage['status'].replace('_', ' ')} | {_seconds(stage['wall_s']) if stage['log'] else ''} "
                     f"| {_seconds(stage['budget_s'])} | {_cell(note)} |")

    kernels = report.get("kernels")
    if kernels:
        lines += ["", "## Kernel smoke (each CUDA op against the CPU op)", ""]
        lines += [f"On {kernels.get('gpu') or kernels.get('device')}; pyreid.build_info(): {kernels.get('build_info')}.", ""]
        if kernels.get("problem"):
            lines += [f"**{kernels['problem']}**", ""]
        if kernels.get("cases"):
            lines += ["| case | ops | result | time | message |", "|---|---|---|---|---|"]
            for c in kernels["cases"]:
                lines.append(f"| {c['name']} | {', '.join(c['ops'])} | {c['status']} | {c['seconds']:.2f} s | {_cell(c['message'])} |")

    tests = report.get("tests")
    if tests:
        s = tests["summary"]
        lines += ["", "## Tests (`pytest -m cuda`)", "",
                  f"{s['passed']} passed, {s['failed']} failed, {s['error']} errors, {s['skipped']} skipped "
                  f"of {s['total']} tests ({s['seconds']:.0f} s of test time)."]
        for error in tests["collection_errors"]:
            lines.append(f"- not collected: `{error['module']}`: {_cell(error['message'])}")
        bad = [c for c in tests["cases"] if c["outcome"] in ("failed", "error")]
        if bad:
            lines += ["", "| failing test | outcome | message |", "|---|---|---|"]
            lines += [f"| `{c['id']}` | {c['outcome']} | {_cell(c['message'][:200])} |" for c in bad]
        lines += ["", "<details><summary>Every test</summary>", "", "| test | outcome | time |", "|---|---|---|"]
        lines += [f"| `{c['id']}` | {c['outcome']} | {c['seconds']:.2f} s |" for c in tests["cases"]]
        lines += ["", "</details>"]

    if report["benchmarks"]:
        lines += ["", "## Benchmarks (CUDA-event medians where recorded)", "",
                  "| case | outcome | median | peak GPU | goal | verdict |", "|---|---|---|---|---|---|"]
        for b in report["benchmarks"]:
            median = f"{b['median_ms']:,.2f} ms" if b["median_ms"] is not None else ""
            peak = f"{b['peak_gpu_mb']:,.0f} MB" if b["peak_gpu_mb"] is not None else ""
            verdict = f"{b['verdict']}" + (f" ({b['detail']})" if b["detail"] else "")
            outcome = b["outcome"] + (f": {b['message'][:120]}" if b["message"] and b["outcome"] != "passed" else "")
            lines.append(f"| `{b['name']}` | {_cell(outcome)} | {median} | {peak} | {_cell(b['goal'])} | {_cell(verdict)} |")

    if report["sanitizer"]:
        lines += ["", "## compute-sanitizer (the kernel smoke under each tool)", "",
                  "| stage | status | errors | summary | cases that disagreed |", "|---|---|---|---|---|"]
        for s in report["sanitizer"]:
            errors = "" if s["errors"] is None else s["errors"]
            lines.append(f"| {s['stage']} | {s['status'].replace('_', ' ')} | {errors} | {_cell(s['summary'])} "
                         f"| {_cell(', '.join(s['cases_failed']))} |")
    return "\n".join(lines) + "\n"


def write_report(report: Dict, out_dir: str):
    """Writes report.json and report.md into out_dir (atomically: a killed run leaves the previous pair)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, text in (("report.json", json.dumps(report, indent=2, default=str) + "\n"),
                       ("report.md", render_markdown(report))):
        path = os.path.join(out_dir, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        paths[name] = path
    return paths["report.md"], paths["report.json"]
