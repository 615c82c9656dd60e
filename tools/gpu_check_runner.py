"""Runs the stages of `make gpu-check`, each under its own time budget and all under a total one.

A GPU machine is lent for minutes, so nothing may run unbounded: every
command runs in its own process group with the stage's remaining time as its
timeout, and on timeout the whole group (ninja, nvcc, pytest workers, the
program under compute-sanitizer) is killed. A stage starts only if its full
budget still fits in the total budget; otherwise it is skipped, and the
report says why. A stage that needs another (everything needs the build)
is skipped when that one did not pass.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

# Seconds a killed process group gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 5.0

PASSED, FAILED, TIMED_OUT, SKIPPED, INTERRUPTED, NOT_RUN = (
    "passed",
    "failed",
    "timed_out",
    "skipped",
    "interrupted",
    "not_run",
)
# Statuses that make the check fail (a skip does not: it is reported).
FAILING = (FAILED, TIMED_OUT, INTERRUPTED)


class Interrupted(Exception):
    """SIGTERM or Ctrl-C reached gpu-check while a stage was running."""


@dataclass
class Stage:
    """One step of the check: commands run in order under one time budget."""

    name: str
    group: str
    description: str
    commands: List[List[str]]
    budget_s: float
    env: Dict[str, str] = field(default_factory=dict)
    # Files the stage writes, by kind ("junit", "benchmark_json", "kernels_json").
    artifacts: Dict[str, str] = field(default_factory=dict)
    # Stages that must have passed (when they were part of this run).
    needs: Sequence[str] = ()
    # Known before running: the stage cannot run here (a tool is missing) ...
    skip_reason: Optional[str] = None
    # ... or it cannot succeed (a Python module it imports is missing).
    fail_reason: Optional[str] = None
    # Called after the commands succeeded; returns why the stage failed, or None.
    verify: Optional[Callable[[], Optional[str]]] = None

    def command_lines(self) -> List[str]:
        return [shlex.join(command) for command in self.commands]


@dataclass
class StageResult:
    stage: Stage
    status: str
    reason: str = ""
    wall_s: float = 0.0
    returncode: Optional[int] = None
    log: Optional[str] = None


class Budget:
    """The total time budget, counted from when gpu-check started."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.total_s = float(total_s)
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(command: Sequence[str], *, cwd: str, env: Dict[str, str], log, timeout_s: float) -> Optional[int]:
    """Runs one command with stdout and stderr into `log`; its exit status, or None if it timed out."""
    proc = subprocess.Popen(
        list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return proc.wait(timeout=max(timeout_s, 0.0))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        # A finished command may have left children in its group (a daemonised
        # helper, an orphaned compiler): they must not outlive the stage.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _unmet_need(stage: Stage, earlier: Sequence[StageResult]) -> Optional[str]:
    by_name = {result.stage.name: result for result in earlier}
    for name in stage.needs:
        result = by_name.get(name)
        if result is not None and result.status != PASSED:
            return f"needs stage '{name}', which {result.status.replace('_', ' ')}"
    return None


def decide_without_running(stage: Stage, budget: Budget, earlier: Sequence[StageResult]) -> Optional[StageResult]:
    """The stage's result when it must not run (skipped, or failed upfront), else None."""
    unmet = _unmet_need(stage, earlier)
    if unmet:
        return StageResult(stage, SKIPPED, unmet)
    if stage.skip_reason:
        return StageResult(stage, SKIPPED, stage.skip_reason)
    if stage.fail_reason:
        return StageResult(stage, FAILED, stage.fail_reason)
    left = budget.remaining()
    if stage.budget_s > left:
        return StageResult(
            stage, SKIPPED, f"its budget of {stage.budget_s:.0f} s does not fit in the {max(left, 0):.0f} s left"
        )
    return None


def run_stage(
    stage: Stage,
    budget: Budget,
    *,
    cwd: str,
    log_dir: str,
    base_env: Optional[Dict[str, str]] = None,
    earlier: Sequence[StageResult] = (),
) -> StageResult:
    """Runs one stage under its budget (or skips it, with the reason)."""
    decided = decide_without_running(stage, budget, earlier)
    if decided is not None:
        return decided
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f"{stage.name}.log")
    env = {**(os.environ if base_env is None else base_env), **stage.env}
    start = time.monotonic()
    deadline = start + stage.budget_s
    result = StageResult(stage, PASSED, log=log_path)
    with open(log_path, "w") as log:
        for command in stage.commands:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            try:
                returncode = run_command(command, cwd=cwd, env=env, log=log, timeout_s=deadline - time.monotonic())
            except FileNotFoundError:
                result.status, result.reason = FAILED, f"command not found: {command[0]}"
                break
            except BaseException:
                result.status, result.reason = INTERRUPTED, "gpu-check was interrupted while this stage ran"
                result.wall_s = time.monotonic() - start
                raise
            finally:
                log.flush()
            result.returncode = returncode
            if returncode is None:
                result.status = TIMED_OUT
                result.reason = f"killed after its budget of {stage.budget_s:.0f} s (`{shlex.join(command)}`)"
                break
            if returncode != 0:
                result.status = FAILED
                result.reason = f"exit status {returncode} from `{shlex.join(command)}`"
                break
        if result.status == PASSED and stage.verify is not None:
            problem = stage.verify()
            if problem:
                result.status, result.reason = FAILED, problem
                log.write(f"gpu-check: {problem}\n")
    result.wall_s = time.monotonic() - start
    return result


def run_stages(
    stages: Sequence[Stage],
    budget: Budget,
    *,
    cwd: str,
    log_dir: str,
    earlier: Sequence[StageResult] = (),
    base_env: Optional[Dict[str, str]] = None,
    on_result: Callable[[List[StageResult]], None] = lambda results: None,
    say: Callable[[str], None] = print,
) -> List[StageResult]:
    """Runs the stages in order; `on_result` sees every result so far after each stage (to write the report)."""
    results: List[StageResult] = []
    for index, stage in enumerate(stages):
        decided = decide_without_running(stage, budget, [*earlier, *results])
        if decided is not None:
            results.append(decided)
            say(f"[gpu-check] {stage.name}: {decided.status}: {decided.reason}")
            on_result([*earlier, *results])
            continue
        say(f"[gpu-check] {stage.name}: {stage.description} (budget {stage.budget_s:.0f} s, "
            f"{max(budget.remaining(), 0):.0f} s left)")
        try:
            result = run_stage(stage, budget, cwd=cwd, log_dir=log_dir, base_env=base_env,
                               earlier=[*earlier, *results])
        except (Interrupted, KeyboardInterrupt):
            results.append(StageResult(stage, INTERRUPTED, "gpu-check was interrupted while this stage ran",
                                       log=os.path.join(log_dir, f"{stage.name}.log")))
            results += [StageResult(later, NOT_RUN, "gpu-check was interrupted") for later in stages[index + 1:]]
            on_result([*earlier, *results])
            raise
        results.append(result)
        note = f": {result.reason}" if result.reason else ""
        say(f"[gpu-check] {stage.name}: {result.status.replace('_', ' ')} after {result.wall_s:.1f} s{note}")
        if result.status in FAILING and result.returncode != 0 and result.log:
            say(log_tail(result.log))  # a failing command's last words; a failed check says enough itself
        on_result([*earlier, *results])
    return results


def log_tail(path: str, lines: int = 15) -> str:
    """The last lines of a stage's log, indented, to show next to a failure."""
    try:
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(f"    | {line}" for line in tail)
