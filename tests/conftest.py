"""Shared fixtures, and the order the tests run in.

The traces of real (tiny) models that many tests read are made once per session
(tests/session_traces.py) by one background process, started as soon as collection shows which
of them the selected tests need; meanwhile the fast tier runs (it goes first: see
``pytest_collection_modifyitems``), so that the traces are ready, or nearly, when the
integration tier asks for them. A test that writes into a shared trace (a report stores its
results in the file) copies it first (``copy_of``).
"""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

# One intra-op thread for torch, here and in the subprocesses the tests start (unless set): the
# tiny models' ops gain nothing from a second thread, and on a loaded machine a parallel op waits
# at its barrier for a thread the scheduler has parked: a tiny diffusion run took 2.5x as long
# with 2 threads as with 1 under two busy loops on 2 cores. Read by torch when it is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Reports pick up the calibrations of the user's calibration directory (phprof.store.calibration):
# the tests, and the processes they start, see none but those they write themselves.
os.environ["PHPROF_CALIBRATION_DIR"] = tempfile.mkdtemp(prefix="phprof-test-calibrations-")
# A GPU run with --source auto reads the host's RAPL counters beside the (fake) GPU: the tests, and the
# processes they start, see no host's but those of the fake powercap trees they make (PHPROF_POWERCAP_ROOT).
os.environ["PHPROF_POWERCAP_ROOT"] = str(Path(tempfile.mkdtemp(prefix="phprof-test-powercap-")) / "none")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import fake_nvml  # noqa: E402
import session_traces  # noqa: E402
from session_traces import INTERRUPTED_RUN, NO_POWER, file_name, no_power_key  # noqa: E402


# ---- the order: the fast tier first --------------------------------------------------------------
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The fast tier first, then the integration tests that read none of the session's traces,
    then those that do (each in collection order): failures of the fast tier show at once, and
    the background job makes the traces in the meantime."""
    def order(item):
        reads_a_trace = any(name in _NEEDS for name in getattr(item, "fixturenames", ()))
        return item.get_closest_marker("integration") is not None, reads_a_trace

    items.sort(key=order)


# ---- the session's traces ------------------------------------------------------------------------
# which traces each fixture reads (the keys of tests/session_traces.py), in the order they are made
_NEEDS = {
    "gpt2_trace": ["gpt2"],
    "traced_without_power": [no_power_key(m, t) for m, t in NO_POWER],
    "silent_trace": [no_power_key("gpt2", "text-generation")],
    "t5_trace": ["t5"],
    "files": ["gpt2", "t5"],
    "t5_small_trace": ["t5-small"],
    "bloomz_trace": ["bloomz"],
    "quick_study": ["study-quick"],
}
_ORDER = ["gpt2"] + [no_power_key(m, t) for m, t in NO_POWER] + ["t5", "t5-small", "bloomz", "study-quick"]
# generous: the job makes everything in ~1 minute on 2 idle cores
_JOB_TIMEOUT_S = 1200.0


class _Job:
    """The background process making the session's traces, and what it has made."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.keys: list[str] = []
        self.started = 0.0

    def start(self, base: Path, keys: list[str]) -> None:
        self.dir = base / "session-traces"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.log = open(self.dir / "job.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(session_traces.__file__)), str(self.dir), *keys],
                                     cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.started = time.monotonic()

    def get(self, key: str, tmp_path_factory, fake_lib):
        """What the fixture of `key` returns: from the job when it makes that trace (waiting for
        it), else made here."""
        if self.proc is None or key not in self.keys:
            return session_traces.make(key, tmp_path_factory.mktemp(file_name(key)), fake_lib)
        done, failed = self.dir / f"{file_name(key)}.pkl", self.dir / f"{file_name(key)}.err"
        while not done.exists():
            if failed.exists():
                pytest.fail(f"making the session's trace {key!r} failed:\n{failed.read_text()}")
            if self.proc.poll() is not None and not done.exists():
                pytest.fail(f"the session's trace job exited ({self.proc.returncode}) before making {key!r}: "
                            f"{(self.dir / 'job.log').read_text()[-4000:]}")
            if time.monotonic() - self.started > _JOB_TIMEOUT_S:
                pytest.fail(f"the session's trace {key!r} was not made within {_JOB_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        return pickle.loads(done.read_bytes())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.log.close()


_JOB = _Job()


# ---- the `phprof trace` runs that tests/test_trace.py interrupts -------------------------------
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CLI_TIMEOUT_S = 600.0  # for a run's first window, once started: generous (~10 s on 2 idle cores)


def _has_window(out: Path) -> bool:
    """Whether the first profiler window is in the file (peeking past its writer's file lock)."""
    import h5py

    try:
        with h5py.File(out, "r", locking=False) as f:
            return f["windows"].shape[0] >= 1
    except (OSError, KeyError):
        return False


class _CliRun:
    def __init__(self, sig: signal.Signals, work: Path) -> None:
        self.sig, self.work, self.out = sig, work, work / "t.h5"
        self.proc: subprocess.Popen | None = None
        self.parked = threading.Event()  # set once stopped after its first window, or failed
        self.error: str | None = None

    def stderr(self) -> str:
        return (self.work / "stderr").read_text()


class _CliRuns:
    """One `phprof trace` subprocess per signal, started side by side (each spends its first
    seconds importing torch and transformers) by a thread, once the trace job is done (or at
    once without one), so that they run while the other tests do. Each is parked (SIGSTOP) as
    soon as its first profiler window is in its file: stopped, it costs nothing until its test
    signals it and resumes it (SIGCONT)."""

    def __init__(self) -> None:
        self.runs: dict[signal.Signals, _CliRun] = {}
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()  # the session is ending: start no run, park none

    def start(self, base: Path, after: subprocess.Popen | None = None) -> None:
        if self.thread is not None:
            return
        for sig in SIGNALS:
            work = base / f"interrupt-{sig.name}"
            work.mkdir(parents=True, exist_ok=True)
            self.runs[sig] = _CliRun(sig, work)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # now: tests change os.environ while they run
        env.pop("PHPROF_NVML_LIB", None)
        self.thread = threading.Thread(target=self._run, args=(after, env), daemon=True)
        self.thread.start()

    def _run(self, after, env) -> None:
        try:
            deadline = time.monotonic() + _JOB_TIMEOUT_S
            while after is not None and after.poll() is None and time.monotonic() < deadline:
                if self.stopping.wait(0.2):
                    return
            for run in self.runs.values():
                if self.stopping.is_set():  # a session that ended before the job did: no orphans
                    return
                with open(run.work / "stdout", "w") as out, open(run.work / "stderr", "w") as err:
                    run.proc = subprocess.Popen(
                        [Path(sys.executable).parent / "phprof", "trace", *INTERRUPTED_RUN, "-o", str(run.out)],
                        cwd=run.work, env=env, stdout=out, stderr=err)
            waiting, deadline = list(self.runs.values()), time.monotonic() + _CLI_TIMEOUT_S
            while waiting and not self.stopping.is_set():
                for run in list(waiting):
                    if run.proc.poll() is not None:
                        run.error = f"the run ended (exit {run.proc.returncode}) before writing a window: {run.stderr()}"
                    elif _has_window(run.out):
                        run.proc.send_signal(signal.SIGSTOP)
                    elif time.monotonic() > deadline:
                        run.error = f"no window was written within {_CLI_TIMEOUT_S:.0f} s"
                    else:
                        continue
                    run.parked.set()
                    waiting.remove(run)
                time.sleep(0.1)
        except BaseException as e:  # noqa: BLE001  (the tests report it)
            for run in self.runs.values():
                run.error = run.error or f"starting the run failed: {e!r}"
                run.parked.set()

    def stop(self) -> None:
        """Kills the runs, and keeps the thread from starting any later."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        for run in self.runs.values():
            if run.proc is not None and run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


_CLI = _CliRuns()


def _basetemp(config) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)
    return factory.getbasetemp() if factory is not None else Path(tempfile.mkdtemp(prefix="phprof-tests-"))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """SIGTERM ends the session as Ctrl-C does (pytest then calls pytest_sessionfinish, which stops
    the background processes): a CI job's timeout leaves no run behind."""
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_finish(session):
    """Starts the job for the traces the selected tests read, and the runs they interrupt."""
    if session.config.option.collectonly or not session.items or os.environ.get("PHPROF_TEST_BACKGROUND") == "0":
        return  # PHPROF_TEST_BACKGROUND=0: every trace made in this process when a test asks for it
    names = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    wanted = {key for name in names for key in _NEEDS.get(name, ())}
    if wanted:
        _JOB.start(_basetemp(session.config), [key for key in _ORDER if key in wanted])
    if "interrupted_runs" in names:
        _CLI.start(_basetemp(session.config), after=_JOB.proc)


def pytest_sessionfinish(session):
    _CLI.stop()
    _JOB.stop()


@pytest.fixture(scope="session")
def interrupted_runs(tmp_path_factory):
    """{signal: run}: a `phprof trace` subprocess per signal, each stopped (SIGSTOP) once its
    first profiler window was in its file: ``run.proc``, ``run.out`` (the trace file),
    ``run.parked`` (an Event, set once stopped, or failed: ``run.error``), ``run.stderr()``."""
    _CLI.start(tmp_path_factory.getbasetemp())  # started at collection, normally
    return _CLI.runs


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory):
    """Path of the fake libnvidia-ml.so.1, built once per session."""
    return fake_nvml.build(tmp_path_factory.mktemp("fake_nvml"))


@pytest.fixture
def fake(fake_lib, tmp_path):
    """A fresh fake NVML state: 2 A100-like devices, seed 1."""
    f = fake_nvml.FakeNvml(fake_lib, tmp_path / "state", n_devices=2, preset="a100", seed=1)
    yield f
    f.close()


@pytest.fixture(scope="session")
def session_trace(tmp_path_factory, fake_lib):
    """session_trace(key): the session's trace `key` (tests/session_traces.py)."""
    made = {}

    def get(key):
        if key not in made:
            made[key] = _JOB.get(key, tmp_path_factory, fake_lib)
        return made[key]

    return get


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(path): a private copy of a session trace, for a test that writes into it."""
    def copy(path, name=None):
        dest = tmp_path / (name or Path(path).name)
        shutil.copy(path, dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def gpt2_trace(session_trace):
    """A tiny gpt2 traced for >= 11 s against the fake GPU (anti-aliasing on), every module drawing
    a known power: (path, truth), truth holding the fake's true energy over the inferences' span
    ("span_j"), over the profiler windows ("windows_j") and per module ("modules"), the run's
    summary, and its "inferences" and "new_tokens"."""
    return session_trace("gpt2")


@pytest.fixture(scope="session")
def t5_trace(session_trace):
    """A tiny Flan-T5 on zero-shot summarization, 20 inferences of 4 new tokens, every module
    drawing its own power in the fake GPU."""
    return session_trace("t5")


@pytest.fixture(scope="session")
def files(tmp_path_factory, gpt2_trace, t5_trace):
    """Copies of the gpt2 and Flan-T5 traces, attributed once (the results are stored in them)."""
    import phprof

    work = tmp_path_factory.mktemp("compare")
    a, b = work / "gpt2.h5", work / "flan-t5.h5"
    shutil.copy(gpt2_trace[0], a)
    shutil.copy(t5_trace, b)
    for path in (a, b):
        phprof.results(path)  # attributed once, stored in the copy
    return a, b


@pytest.fixture(scope="session")
def t5_small_trace(session_trace):
    """t5-small's config.json (a path, not a built-in id: a relu T5) traced tiny on zero-shot
    summarization, every module drawing its own power in the fake GPU."""
    return session_trace("t5-small")


@pytest.fixture(scope="session")
def bloomz_trace(session_trace):
    """A tiny BLOOMz-560m, 3 inferences of 2 new tokens, against the fake GPU: a trace with energy."""
    return session_trace("bloomz")


@pytest.fixture(scope="session")
def quick_study(session_trace):
    """`phprof study --quick` over every task (each cell a `phprof trace` process, 2 inferences of
    the tiny model) timed against the fake GPU: the study's run (phprof.study.StudyRun), its
    folder ``run.directory``."""
    return session_trace("study-quick")


@pytest.fixture(scope="session")
def traced_without_power(session_trace):
    """traced_without_power(model, task=None): (path, summary) of `model` traced tiny for `task`
    (default: its own) on this CPU with no power source: 3 inferences after 1 warm-up, 2 new
    tokens (generation) or 2 denoising steps (diffusion)."""
    from phprof import models

    def get(model, task=None):
        task = models.get_task(task).name if task else models.resolve(model).task
        return session_trace(no_power_key(model, task))

    return get


@pytest.fixture
def silent_trace(traced_without_power, copy_of):
    """A tiny gpt2 traced with no power source (times, no energy): a copy of the session's, since
    the views and reports of it store their results in the file."""
    return copy_of(traced_without_power("gpt2", "text-generation")[0], "gpt2-no-power.h5")
