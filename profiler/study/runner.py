"""Running the grid's cells: each (model, task) as its own `phprof trace` process, resumably.

A study's folder::

    DIR/study-plan.json           the cells' options (a later run in DIR must use the same)
    DIR/cells/TASK/MODEL/         one folder per cell:
        cell.json                 its manifest: status (running, done, failed), attempts, its row
        trace.h5                  the trace, once complete (written as trace.partial.h5, renamed)
        report.html               its report page (what the study page's points link to)
        attempt-N.log             what `phprof trace` printed, per attempt
    DIR/study.{csv,json,md,html}  the tables and the page (phprof.study.table), rewritten as cells finish

A cell is done when its manifest says so; every manifest is written to a temporary file and
renamed, so a study killed at any instant leaves each cell done, or not done with nothing of it
kept but its logs. A later run skips the done cells, reruns the rest (a cell whose process
outlived a killed study is waited for first), and retries a failed cell once; a cell that failed
twice is reported and not tried again unless asked (``retry_failed``).

Devices: one cell per GPU at a time, never two on one GPU (their energies would mix); on the
CPU, one cell at a time. Each cell's process is told to stop (SIGTERM) when the study's process
dies, however it dies, and runs in its own session, so a Ctrl-C reaches the study alone, which
stops its cells after their current inference.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError, PhprofError
from .grid import Cell

PLAN_FILE = "study-plan.json"
MANIFEST = "cell.json"
TRACE, PARTIAL, REPORT = "trace.h5", "trace.partial.h5", "report.html"
ATTEMPTS = 2  # a failed cell is retried once
FORMAT_VERSION = 1


class StudyError(PhprofError):
    """A study that cannot run (its folder is in use, or holds a study of other options)."""


@dataclass(frozen=True)
class CellOptions:
    """What each cell's `phprof trace` is given (the same for every cell of a study)."""

    inferences: int = 1000
    warmup: int = 10
    size: str = "full"
    source: str = "auto"
    idle_s: float = 2.0
    dtype: str = "float32"
    batch_size: int = 1
    weights: str = "random"
    new_tokens: int | None = None  # generation tasks only (default: the task's)
    steps: int | None = None  # image generation only (default: the pipeline's)
    anti_alias: bool = True

    def trace_args(self, cell: Cell, device: str, output: Path) -> list[str]:
        """The `phprof trace` command line of one cell on one device."""
        from ..models import get_task

        call = get_task(cell.task).call
        args = [cell.model, "--task", cell.task, "-n", str(self.inferences), "--warmup", str(self.warmup),
                "--size", self.size, "--source", self.source, "--idle", repr(self.idle_s), "--dtype", self.dtype,
                "--batch-size", str(self.batch_size), "--weights", self.weights, "--device", device,
                "-o", str(output), "--overwrite"]
        if self.new_tokens is not None and call == "generate":
            args += ["--new-tokens", str(self.new_tokens)]
        if self.steps is not None and call == "diffusion":
            args += ["--steps", str(self.steps)]
        if not self.anti_alias:
            args.append("--no-anti-alias")
        return args

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- files ------------------------------------------------------------------------------------
def write_json(path: Path, value) -> None:
    """``value`` as JSON in ``path``, atomically: written beside it, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StudyError(f"{path} cannot be read ({e}): remove it to run its cell again") from None


def cell_dir(directory: Path, cell: Cell) -> Path:
    return directory / "cells" / cell.key


def check_plan(directory: Path, options: CellOptions) -> None:
    """Records the cells' options in a new study folder, or checks a resumed one's."""
    path = directory / PLAN_FILE
    plan = read_json(path)
    if plan is None:
        write_json(path, {"format": "phprof-study", "version": FORMAT_VERSION, "options": options.as_dict()})
        return
    differ = {k: (v, plan["options"].get(k)) for k, v in options.as_dict().items() if plan["options"].get(k) != v}
    if differ:
        said = ", ".join(f"{k} {old!r} (now {new!r})" for k, (new, old) in differ.items())
        raise StudyError(f"{directory} holds a study run with other options: {said}; continue it with the same "
                         "options, or give another folder (-o)")


@contextlib.contextmanager
def locked(directory: Path):
    """Holds the study folder: a second study in it fails at once rather than mixing its cells."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"another phprof study is running in {directory}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- devices ------------------------------------------------------------------------------------
def devices(gpus: str | None = "all") -> list[str]:
    """Where cells run, one at a time each: ``"all"`` every CUDA device torch sees (else the CPU),
    ``"none"`` the CPU, or indices ``"0,2"`` (``phprof.api.parse_gpus``)."""
    from ..api import parse_gpus

    found = parse_gpus("all" if gpus in (None, "") else gpus, what="--gpus ")
    if found is None:
        raise OptionError(f"--gpus {gpus!r}: give all, none, or GPU indices (0,1)")
    return found


def _die_with_parent() -> None:
    """In the cell's process, before it runs: SIGTERM when the study's process dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch_trace(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m phprof trace ARGS`` in its own session, its output into ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "phprof", "trace", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


# ---- one run over the cells -----------------------------------------------------------------
@dataclass
class Outcome:
    """What a run over the cells did."""

    done: list[Cell] = field(default_factory=list)  # this run
    skipped: list[Cell] = field(default_factory=list)  # done before
    failed: list[Cell] = field(default_factory=list)  # failed twice (this run or before)
    left: list[Cell] = field(default_factory=list)  # not run: the study was interrupted
    interrupted: bool = False


@dataclass
class _Running:
    cell: Cell
    proc: subprocess.Popen
    attempt: dict
    started: float


def _error_of(log: Path) -> str:
    """The error a failed `phprof trace` printed: its `Error:` line, else the exception that ended
    it (a traceback's last line), else its last lines."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    said = [x for x in lines if x.startswith("Error:")]
    if said:
        return said[-1]
    if any(x.startswith("Traceback") for x in lines):
        return lines[-1]
    return " | ".join(lines[-3:]) or "no output"


def _alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # the same process: a phprof trace (a pid may have been reused)
        return b"phprof" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _wait_for_stale(pid: int, timeout_s: float = 120.0) -> None:
    """A cell's process that outlived its killed study: it was told to stop; give it time, then kill it."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def failed_attempts(manifest: dict | None) -> int:
    return sum(a.get("outcome") == "failed" for a in (manifest or {}).get("attempts", []))


def run_cells(directory: Path, cells: list[Cell], options: CellOptions, make_row, *, where: list[str],
              progress=None, retry_failed: bool = False, launch=launch_trace, on_change=None,
              poll_s: float = 0.2) -> Outcome:
    """Runs the cells not done yet (see the module's docstring), at most one per device of
    ``where`` at a time. ``make_row(cell, trace_path, report_path)`` turns a complete trace into
    the cell's row (and writes its report page); ``on_change()`` is called after each cell ends
    (the tables are rewritten); ``progress(text)`` is told what happens; ``launch(args, log)``
    starts a cell's process (default: `python -m phprof trace`)."""
    say = progress or (lambda text: None)
    out = Outcome()
    queue: list[Cell] = []
    for cell in cells:
        folder = cell_dir(directory, cell)
        manifest = read_json(folder / MANIFEST)
        if manifest is not None and manifest.get("options") not in (None, options.as_dict()):
            raise StudyError(f"{folder} was run with other options; remove it, or continue with its options")
        status = (manifest or {}).get("status")
        if status == "done" and (folder / TRACE).exists():
            out.skipped.append(cell)
            continue
        if status == "failed" and not retry_failed:
            out.failed.append(cell)
            continue
        for attempt in (manifest or {}).get("attempts", []):
            if attempt.get("outcome") is None:  # its study was killed while it ran
                _wait_for_stale(attempt.get("pid"))
                attempt["outcome"], attempt["error"] = "interrupted", "the study stopped while it ran"
        if manifest is not None and status == "failed":
            manifest["attempts"] = [dict(a, outcome="failed before") if a.get("outcome") == "failed" else a
                                    for a in manifest["attempts"]]
        if manifest is not None:
            manifest["status"] = "pending"
            write_json(folder / MANIFEST, manifest)
        queue.append(cell)
    if out.skipped:
        say(f"{len(out.skipped)} of {len(cells)} cells done before: kept")
    if out.failed:
        say(f"{len(out.failed)} cells failed {ATTEMPTS} times before: not run again (--retry-failed to retry them)")

    total = len(queue)
    running: dict[str, _Running] = {}
    durations: list[float] = []
    stop = {"signals": 0}

    def on_signal(signum, frame):
        stop["signals"] += 1
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                r.proc.send_signal(signal.SIGTERM if stop["signals"] == 1 else signal.SIGKILL)
        if stop["signals"] == 1:
            say("stopping: the running cells end after their current inference, then the study stops "
                "(again to kill them at once); the same command continues it")

    handlers = {}
    if hasattr(signal, "pthread_sigmask") and _main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        while (queue and not stop["signals"]) or running:
            for device in where:
                if device in running or not queue or stop["signals"]:
                    continue
                cell = queue.pop(0)
                running[device] = _start(directory, cell, options, device, launch)
                say(f"running {cell.task} / {cell.model} on {device} "
                    f"(attempt {failed_attempts(read_json(cell_dir(directory, cell) / MANIFEST)) + 1}); "
                    + _left(len(out.done) + len(out.failed), total, queue, running, durations, len(where)))
            time.sleep(poll_s)
            for device, r in list(running.items()):
                if r.proc.poll() is None:
                    continue
                del running[device]
                seconds = time.monotonic() - r.started
                state = _finish(directory, r, options, make_row, interrupted=bool(stop["signals"]))
                if state == "done":
                    out.done.append(r.cell)
                    durations.append(seconds)
                    say(f"[{len(out.done) + len(out.failed)}/{total}] done: {r.cell.task} / {r.cell.model} in "
                        f"{seconds:.1f} s")
                elif state == "retry":
                    queue.append(r.cell)
                    say(f"failed: {r.cell.task} / {r.cell.model} ({r.attempt['error']}): retried once, later")
                elif state == "failed":
                    out.failed.append(r.cell)
                    say(f"[{len(out.done) + len(out.failed)}/{total}] FAILED twice: {r.cell.task} / "
                        f"{r.cell.model}: {r.attempt['error']} (log: {cell_dir(directory, r.cell) / r.attempt['log']})")
                else:  # interrupted
                    out.left.append(r.cell)
                if on_change is not None:
                    on_change()
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    out.left += queue
    out.interrupted = bool(stop["signals"])
    return out


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _left(finished: int, total: int, queue, running, durations: list[float], lanes: int) -> str:
    text = f"{finished} of {total} finished"
    if durations:  # the cells to come at this run's pace so far, spread over the devices
        mean = sum(durations) / len(durations)
        todo = len(queue) + len(running)
        rest = mean * todo / max(1, min(lanes, todo))
        text += f", about {_duration(rest)} left (at {mean:.0f} s per cell so far)"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _start(directory: Path, cell: Cell, options: CellOptions, device: str, launch) -> _Running:
    folder = cell_dir(directory, cell)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_json(folder / MANIFEST) or {
        "format": "phprof-study-cell", "version": FORMAT_VERSION, "model": cell.model, "task": cell.task,
        "cell": dataclasses.asdict(cell), "options": options.as_dict(), "attempts": []}
    for stale in (folder / PARTIAL, folder / TRACE):
        stale.unlink(missing_ok=True)
    n = len(manifest["attempts"]) + 1
    attempt = {"attempt": n, "device": device, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "log": f"attempt-{n}.log", "outcome": None}
    proc = launch(options.trace_args(cell, device, folder / PARTIAL), folder / attempt["log"])
    attempt["pid"] = proc.pid
    manifest["attempts"].append(attempt)
    manifest["status"] = "running"
    write_json(folder / MANIFEST, manifest)
    return _Running(cell, proc, attempt, time.monotonic())


def _finish(directory: Path, r: _Running, options: CellOptions, make_row, interrupted: bool) -> str:
    """Records how a cell's process ended: "done", "retry", "failed" or "interrupted"."""
    folder = cell_dir(directory, r.cell)
    manifest = read_json(folder / MANIFEST)
    attempt = next(a for a in manifest["attempts"] if a["attempt"] == r.attempt["attempt"])
    attempt["exit"] = r.proc.returncode
    attempt["seconds"] = round(time.monotonic() - r.started, 3)
    state = None
    if r.proc.returncode == 0 and _complete(folder / PARTIAL):
        os.replace(folder / PARTIAL, folder / TRACE)
        try:
            manifest["row"] = make_row(r.cell, folder / TRACE, folder / REPORT)
            attempt["outcome"], state = "complete", "done"
        except PhprofError as e:
            attempt["outcome"], attempt["error"] = "failed", f"its report failed: {e}"
        except Exception as e:  # noqa: BLE001  (a bug in the report of one cell: reported, the study goes on)
            import traceback

            with open(folder / attempt["log"], "a") as log:
                log.write("\nthe study's report of this trace failed:\n" + traceback.format_exc())
            attempt["outcome"], attempt["error"] = "failed", f"its report failed: {type(e).__name__}: {e}"
    elif interrupted:
        attempt["outcome"], attempt["error"], state = "interrupted", "the study was stopped", "interrupted"
    else:
        attempt["outcome"], attempt["error"] = "failed", _error_of(folder / attempt["log"])
        if r.proc.returncode == 0:
            attempt["error"] = "the trace ended without completing: " + attempt["error"]
    if state is None:
        state = "retry" if failed_attempts(manifest) < ATTEMPTS else "failed"
        (folder / TRACE).unlink(missing_ok=True)
    r.attempt.update(attempt)
    manifest["status"] = {"done": "done", "failed": "failed"}.get(state, "pending")
    write_json(folder / MANIFEST, manifest)
    return state


def _complete(path: Path) -> bool:
    from ..store import load_header

    try:
        return path.exists() and load_header(path).complete
    except PhprofError:
        return False
