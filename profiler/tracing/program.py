"""A user's program, run as ``python script.py`` or ``python -m module`` would, under a session.

``sys.argv``, ``sys.path[0]`` and ``__main__`` are what plain Python gives
the program: for a script, ``argv[0]`` as given, ``sys.path[0]`` its folder,
``__file__`` its absolute path; for ``-m``, ``argv[0]`` the module's file and
``sys.path[0]`` the working directory. Its exit is read as Python reads it:
returning, ``sys.exit(code)`` (None is 0, an int itself, anything else
printed and 1), an exception (its traceback printed, without phprof's own
frames, status 1), Ctrl-C (a KeyboardInterrupt: the traceback, then death by
SIGINT) or SIGTERM (death by SIGTERM, after the file is saved).
"""
from __future__ import annotations

import builtins
import os
import runpy
import signal
import subprocess
import sys
import tokenize
import traceback
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PhprofError
from .session import Profile, Terminated, TraceSummary

_PACKAGE = str(Path(__file__).resolve().parent.parent)


class ProgramError(PhprofError):
    """A program that cannot be started: no such script or module."""


@dataclass(frozen=True)
class Program:
    """What to run: a script's path, or a module's name (``-m``), and its arguments."""

    target: str
    args: tuple[str, ...] = ()
    module: bool = False

    @property
    def name(self) -> str:
        """A short name for the default output file."""
        return self.target.rsplit(".", 1)[-1] if self.module else Path(self.target).stem

    def describe(self, cwd: str | None = None) -> dict:
        """The program, for the trace file's /meta."""
        cwd = cwd or os.getcwd()
        where = cwd if self.module else str(Path(self.target).resolve().parent)
        return {"kind": "module" if self.module else "script", "target": self.target,
                "path": None if self.module else str(Path(self.target).resolve()), "argv": list(self.args),
                "cwd": cwd, "python": sys.executable, "git": git_state(where)}

    def check(self) -> None:
        """ProgramError before anything starts for a script or module that is not there."""
        if self.module:
            import importlib.util

            sys.path.insert(0, os.getcwd())
            try:
                found = importlib.util.find_spec(self.target)
            except (ImportError, ValueError) as e:
                raise ProgramError(f"no module named {self.target!r} ({e})") from None
            finally:
                sys.path.pop(0)
            if found is None:
                raise ProgramError(f"no module named {self.target!r} (from {os.getcwd()})")
        elif not Path(self.target).exists():
            raise ProgramError(f"can't open file {str(Path(self.target).resolve())!r}: no such file")


@dataclass
class ProgramExit:
    """How the program ended, as Python would end it."""

    code: int  # the exit status plain Python gives (for a signal: 128 + its number)
    signal: int | None = None  # the program died of this signal: phprof should too
    summary: TraceSummary | None = None


def git_state(folder: str) -> dict | None:
    """The git commit of a folder's checkout and whether it has uncommitted changes; None outside one."""
    def git(*args) -> str | None:
        try:
            p = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "root": git("rev-parse", "--show-toplevel")}


def run_program(program: Program, session: Profile) -> ProgramExit:
    """Runs the program inside the session (entered here; its errors, a file
    that exists say, are raised before the program starts); the session's file
    is closed when this returns, whatever ended the program."""
    program.check()
    try:
        session.__enter__()
    except (KeyboardInterrupt, Terminated) as e:  # during the idle period: the file is closed, interrupted
        return _exit_of(e, session.summary)
    saved_argv, saved_path0, saved_main = list(sys.argv), sys.path[0], sys.modules["__main__"]
    error: BaseException | None = None
    try:
        _execute(program)
    except BaseException as e:  # noqa: BLE001 - the program's exit, whatever it is, is read below
        error = e
    finally:
        sys.argv[:] = saved_argv
        sys.path[0] = saved_path0
        sys.modules["__main__"] = saved_main
    try:
        session.__exit__(type(error) if error is not None else None, error, None)
    except KeyboardInterrupt as e:  # a second Ctrl-C while the file was saved: it is closed, interrupted
        error = error or e
    return _exit_of(error, session.summary)


def _execute(program: Program) -> None:
    if program.module:
        sys.argv[:] = ["-m", *program.args]  # runpy puts the module's file in argv[0]
        sys.path[0] = os.getcwd()
        runpy.run_module(program.target, run_name="__main__", alter_sys=True)
        return
    path = Path(program.target)
    sys.argv[:] = [program.target, *program.args]
    sys.path[0] = str(path.resolve().parent)
    if path.is_dir() or zipfile.is_zipfile(path):
        runpy.run_path(program.target, run_name="__main__")  # a folder or zip with a __main__.py
        return
    filename = program.target if path.is_absolute() else os.path.join(os.getcwd(), program.target)
    with tokenize.open(program.target) as f:  # the source's own encoding, as Python reads it
        code = compile(f.read(), filename, "exec")
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__builtins__ = builtins
    main.__spec__ = None
    main.__loader__ = None
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _exit_of(error: BaseException | None, summary: TraceSummary | None) -> ProgramExit:
    if error is None:
        return ProgramExit(0, summary=summary)
    if isinstance(error, Terminated):
        return ProgramExit(128 + signal.SIGTERM, signal.SIGTERM, summary)
    if isinstance(error, SystemExit):
        code = error.code
        if code is None:
            return ProgramExit(0, summary=summary)
        if isinstance(code, int):
            return ProgramExit(code, summary=summary)
        print(code, file=sys.stderr)
        return ProgramExit(1, summary=summary)
    print_traceback(error)
    if isinstance(error, KeyboardInterrupt):
        return ProgramExit(128 + signal.SIGINT, signal.SIGINT, summary)
    return ProgramExit(1, summary=summary)


def print_traceback(error: BaseException) -> None:
    """The traceback Python prints, without phprof's and runpy's frames."""
    te = traceback.TracebackException.from_exception(error)
    todo = [te]
    while todo:
        t = todo.pop()
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if not (f.filename.startswith(_PACKAGE) or f.filename == runpy.__file__)])
        todo += [x for x in (t.__cause__, t.__context__) if x is not None]
    print("".join(te.format()), end="", file=sys.stderr, flush=True)
