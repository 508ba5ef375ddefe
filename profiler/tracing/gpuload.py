"""The CUDA load kernels of `phprof calibrate` (csrc/load.cu), driven through ctypes.

:class:`CudaLoad` runs a schedule of busy and idle segments on one GPU: the
kernel switches between a compute burner and an idle spin on the GPU's own
nanosecond timer and stamps when it began each segment; those stamps are
mapped to CLOCK_REALTIME by reading the GPU's timer between two host clock
reads. The library is built by setup.py where nvcc is found; otherwise it is
compiled here, once, into the user's cache, when nvcc can be found (the CUDA
toolkit, or a CUDA torch's ``CUDA_HOME``); else :class:`LoadUnavailable` says why.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import PhprofError

_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "load.cu"
_NVCC_FLAGS = ["-O2", "-shared", "-Xcompiler", "-fPIC", "-arch=all-major"]


class LoadUnavailable(PhprofError):
    """The CUDA load kernels cannot run here (no GPU, no built library, no nvcc)."""


def _nvcc() -> str | None:
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    try:
        from torch.utils.cpp_extension import CUDA_HOME

        homes.insert(0, CUDA_HOME)
    except Exception:  # noqa: BLE001  (no torch, or a torch without CUDA: the other places remain)
        pass
    for c in [os.environ.get("PHPROF_NVCC"), shutil.which("nvcc")] + [h and os.path.join(h, "bin", "nvcc")
                                                                       for h in homes]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def library_path() -> Path:
    """The built library: beside the package (setup.py), else the user's cache (built on demand)."""
    here = Path(__file__).resolve().parents[1]
    built = sorted(here.glob("_gpuload*.so"))
    if built:
        return built[0]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phprof" / "libphprof_load.so"
    if cache.exists() and cache.stat().st_mtime >= _SOURCE.stat().st_mtime:
        return cache
    nvcc = _nvcc()
    if nvcc is None or not _SOURCE.exists():
        raise LoadUnavailable("the CUDA load kernels were not built (no nvcc when phprof was installed) and no nvcc "
                              "is found now: install the CUDA toolkit (or set PHPROF_NVCC) and reinstall phprof")
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([nvcc, *_NVCC_FLAGS, str(_SOURCE), "-o", str(cache)], capture_output=True, text=True)
    if done.returncode != 0:
        raise LoadUnavailable(f"building the CUDA load kernels with {nvcc} failed: {done.stderr.strip()[-500:]}")
    return cache


class CudaLoad:
    """Busy and idle segments on GPU ``device`` with microsecond edges (see the module)."""

    def __init__(self, device: int = 0) -> None:
        try:
            lib = ctypes.CDLL(str(library_path()))
        except OSError as e:
            raise LoadUnavailable(f"the CUDA load kernels cannot be loaded ({e}): no CUDA runtime here?") from None
        ll, p = ctypes.c_longlong, ctypes.POINTER
        lib.phprof_load_clock.argtypes = [ctypes.c_int, p(ll)]
        lib.phprof_load_run.argtypes = [ctypes.c_int, p(ll), p(ctypes.c_int), ctypes.c_int, p(ll), ctypes.c_int,
                                        ctypes.c_int]
        lib.phprof_load_error.restype = ctypes.c_char_p
        self._lib, self.device = lib, device
        self.clock_offset_ns, self.clock_uncertainty_ns = self._clock()

    def _check(self, rc: int, what: str) -> None:
        if rc:
            raise LoadUnavailable(f"CUDA: {what}: {self._lib.phprof_load_error(rc).decode()}")

    def _clock(self) -> tuple[int, int]:
        """GPU timer minus CLOCK_REALTIME (ns), from the tightest of several reads, and its uncertainty."""
        gpu = ctypes.c_longlong()
        # warm-up: allocates the kernel's word, loads the module
        self._check(self._lib.phprof_load_clock(self.device, ctypes.byref(gpu)), "reading the GPU timer")
        best = None
        for _ in range(20):
            before = time.time_ns()
            self._check(self._lib.phprof_load_clock(self.device, ctypes.byref(gpu)), "reading the GPU timer")
            after = time.time_ns()
            if best is None or after - before < best[1]:
                best = (gpu.value - (before + after) // 2, after - before)
        return best[0], best[1] // 2

    def run(self, durations_s, busy, start_ns: int) -> np.ndarray:
        """Runs the segments from CLOCK_REALTIME ``start_ns`` on (blocks until done);
        returns the CLOCK_REALTIME instant each segment began."""
        durations = np.asarray(durations_s, float)
        n = len(durations)
        ends = (start_ns + self.clock_offset_ns + np.round(np.cumsum(durations) * 1e9)).astype(np.int64)
        on = np.asarray(busy, np.int32)
        marks = np.zeros(n, np.int64)
        ll = ctypes.POINTER(ctypes.c_longlong)
        # the kernel starts at once: wait on the host until just before start_ns
        while time.time_ns() < start_ns - 2_000_000:
            time.sleep(0.001)
        self._check(self._lib.phprof_load_run(self.device, ends.ctypes.data_as(ll),
                                              on.ctypes.data_as(ctypes.POINTER(ctypes.c_int)), n,
                                              marks.ctypes.data_as(ll), 0, 256), "running the load schedule")
        return marks - self.clock_offset_ns
