"""Kineto's log, taken off stderr while a CUDA run records.

Kineto (torch.profiler's C++ side) writes its messages to the process's stderr
(file descriptor 2), one line each, ``LEVEL:date time pid:tid file:line] text``,
and only those at or above ``KINETO_LOG_LEVEL``; the same threshold decides
what it keeps for itself. Hiding the two lines it prints per profiler window
(the level above its errors) hides its warnings too, and those say when a
trace is incomplete: CUPTI failing to start, ``Dropped N activity records``,
``Exceeded max GPU buffer count ... - terminating tracing`` (device activity
is no longer recorded from there to the end of the window).

So on a CUDA run phprof asks for its warnings and reads fd 2 through a pipe:
Kineto's lines are kept (not printed), everything else goes on to the real
stderr as it comes. :func:`findings` says what a window's lines mean.
"""
from __future__ import annotations

import os
import re
import select
import threading
from dataclasses import dataclass, field

LEVEL_ENV = "KINETO_LOG_LEVEL"
QUIET = "6"  # above every level: Kineto prints nothing
WARNINGS = "2"  # its warnings and errors (and the per-window stage lines, which are dropped here)

_LINE = re.compile(rb"(VERBOSE|INFO|WARNING|ERROR|STAGE|USDT):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ [^\]\n]*\] ?")
_PREFIX = re.compile(_LINE.pattern.decode())
_LEVELS = (b"VERBOSE:", b"INFO:", b"WARNING:", b"ERROR:", b"STAGE:", b"USDT:")
_KEPT = ("WARNING", "ERROR")
_STOPPED = re.compile(r"Exceeded max GPU buffer count|stopped early|terminating tracing", re.I)
_DROPPED = re.compile(r"Dropped (\d+) activity records")

_set_by_phprof: str | None = None  # the level phprof put in the environment, if it did


def choose_level(cuda: bool) -> None:
    """Kineto's level for a run: its warnings on a CUDA run (read through :class:`KinetoLog`),
    nothing on the CPU; a level the user chose stays. Kineto reads it when it starts, once
    per process."""
    global _set_by_phprof
    current = os.environ.get(LEVEL_ENV)
    if current is None or current == _set_by_phprof:
        _set_by_phprof = os.environ[LEVEL_ENV] = WARNINGS if cuda else QUIET


def user_level() -> bool:
    """Whether the user chose Kineto's level (then its lines are printed as well as kept)."""
    return os.environ.get(LEVEL_ENV) not in (None, _set_by_phprof)


@dataclass
class Findings:
    """What Kineto said during a window."""

    stopped: bool = False  # it stopped recording device activity
    dropped: int = 0  # activity records it dropped
    messages: list[str] = field(default_factory=list)  # its warnings and errors, without their prefix


def findings(lines: list[str]) -> Findings:
    """What a window's lines (:meth:`KinetoLog.take`) say."""
    out = Findings()
    for line in lines:
        text = _PREFIX.sub("", line, count=1)
        if _STOPPED.search(text):
            out.stopped = True
        m = _DROPPED.search(text)
        if m:
            out.dropped += int(m.group(1))
        out.messages.append(text.strip())
    return out


class KinetoLog:
    """Reads fd 2 through a pipe between :meth:`start` and :meth:`stop`: Kineto's warning and
    error lines are kept (and printed too when ``echo``), every other byte is passed on to the
    real stderr. :meth:`take` returns the lines kept since the last call."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._held = b""  # the start of a line that may be Kineto's
        self._at_line_start = True
        self._saved = self._read = None
        self._thread: threading.Thread | None = None
        self._stop = False

    def start(self) -> None:
        import sys

        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to read, nothing is printed either
            return
        r, w = os.pipe()
        self._saved = saved
        os.dup2(w, 2)
        os.close(w)
        os.set_blocking(r, False)
        self._read = r
        self._thread = threading.Thread(target=self._run, name="phprof-kineto-log", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        """Puts stderr back; returns the lines kept and not yet taken."""
        import sys

        if self._saved is None:
            return []
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # the pipe's write end closes: the reader sees its end
        self._stop = True
        self._thread.join()
        with self._lock:
            self._drain()
            if self._held:
                self._line(self._held)
                self._held = b""
        os.close(self._read)
        os.close(self._saved)
        self._saved = self._read = None
        return self.take()

    def take(self) -> list[str]:
        with self._lock:
            if self._read is not None:
                self._drain()
            out, self._lines = self._lines, []
        return out

    # -- the pipe ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop:
            try:
                ready, _, _ = select.select([self._read], [], [], 0.05)
            except (OSError, ValueError):
                return
            if ready:
                with self._lock:
                    if self._drain():
                        return

    def _drain(self) -> bool:
        """Reads what the pipe holds (under the lock); True at its end."""
        while True:
            try:
                data = os.read(self._read, 65536)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        data = self._held + data
        self._held = b""
        while data:
            nl = data.find(b"\n")
            if not self._at_line_start:  # the rest of another writer's line
                end = len(data) if nl < 0 else nl + 1
                self._write(data[:end])
                data = data[end:]
                self._at_line_start = nl >= 0
                continue
            if nl >= 0:
                self._line(data[:nl + 1])
                data = data[nl + 1:]
            elif _maybe_kineto(data):
                self._held = data  # wait for the rest of the line
                return
            else:
                self._write(data)
                self._at_line_start = False
                return

    def _line(self, line: bytes) -> None:
        m = _LINE.match(line)
        if m is None:
            self._write(line)
            return
        if m.group(1).decode() in _KEPT:
            self._lines.append(line.decode(errors="replace").rstrip("\n"))
        if self.echo:
            self._write(line)

    def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self._saved, data):]
            except BlockingIOError:
                select.select([], [self._saved], [], 0.05)
            except OSError:
                return


def _maybe_kineto(data: bytes) -> bool:
    """Whether an unfinished line may be one of Kineto's."""
    return b"\r" not in data and (bool(_LINE.match(data)) or
                                  any(level.startswith(data[:len(level)]) for level in _LEVELS))
