"""Controller for the fake NVML library (tools/fake_nvml/fake_nvml.c).

The fake is a shared library with the NVML entry points phprof and pynvml call (and those
CodeCarbon and Zeus call on their way to a GPU's energy), backed by a power-sensor model (see
the comment at the top of fake_nvml.c) whose state lives in a memory-mapped file, so that a
test, the sampler in the same process and any subprocess started with `FakeNvml.env` all see
the same true power signal and the same sensor readings. A process that has neither created
nor been told of a state sees no GPU: NVML's init fails as with no driver loaded. `build()`
also writes an `nvidia-smi` stand-in beside the library (tools/fake_nvml/nvidia_smi.py), for
tools that look for one; `FakeNvml.env` puts both first on PATH and LD_LIBRARY_PATH.

Typical use::

    lib = fake_nvml.build(tmp_dir)                       # compiles libnvidia-ml.so.1 once
    with fake_nvml.FakeNvml(lib, tmp_dir / "state", n_devices=2, preset="h100") as fake:
        fake.square_wave(0, 300.0, 70.0, 0.05, 0.5, start_ns, 100)
        ...                                              # run the code under test
        fake.true_energy(0, t0, t1)                      # ground truth, J

All times are CLOCK_REALTIME nanoseconds (`time.time_ns()`), the clock of Kineto traces.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FIELDS",
    "LIB_NAME",
    "SMI_NAME",
    "DeviceInfo",
    "FakeNvml",
    "FakeNvmlError",
    "PRESETS",
    "PRESET_DEVICES",
    "PRESET_IDLE_W",
    "SensorModel",
    "build",
]

FIELDS = ("energy", "power_instant", "power_average")
LIB_NAME = "libnvidia-ml.so.1"  # the name pynvml dlopens, so LD_LIBRARY_PATH=<build dir> works
SMI_NAME = "nvidia-smi"  # the stand-in written beside it
MAX_TAGS = 1024

_HERE = Path(__file__).resolve().parent
_SOURCE = _HERE / "fake_nvml.c"
_HEADER = _HERE.parent.parent / "csrc" / "nvml_api.h"
_SMI_SOURCE = _HERE / "nvidia_smi.py"
_CFLAGS = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra"]
_LIBS = ["-lm", "-lpthread"]
_MODES = {"continuous": 0, "windowed": 1}


class FakeNvmlError(RuntimeError):
    """A fake NVML control call failed for a reason other than a bad argument."""


def build(out_dir) -> Path:
    """Compile fake_nvml.c into ``out_dir/libnvidia-ml.so.1`` and return its path.

    The compiler is ``$CC`` (may hold extra words) or ``cc``. A build is reused when a stamp
    next to it records the same source, header and command. ``out_dir/nvidia-smi`` is written
    too: an executable that runs tools/fake_nvml/nvidia_smi.py against this library.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cc = shlex.split(os.environ.get("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        raise FakeNvmlError(
            f"no C compiler found ({cc[0] if cc else '$CC is empty'}): install cc/gcc or set $CC"
        )
    target = out_dir / LIB_NAME
    stamp = out_dir / (LIB_NAME + ".sha256")
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), _HEADER.read_bytes(), " ".join(cc + _CFLAGS + _LIBS).encode()):
        digest.update(part)
        digest.update(b"\0")
    key = digest.hexdigest()
    _write_smi(out_dir)
    if target.exists() and stamp.exists() and stamp.read_text() == key:
        return target
    # Compile to a private name, then rename: a process that has the old library loaded keeps
    # its inode, and concurrent builds never see a half-written file.
    tmp = out_dir / f".{LIB_NAME}.{os.getpid()}.tmp"
    cmd = cc + _CFLAGS + [str(_SOURCE), "-o", str(tmp)] + _LIBS
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FakeNvmlError(f"compiling the fake NVML library failed: {shlex.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, target)
    stamp.write_text(key)
    return target


def _write_smi(out_dir: Path) -> None:
    """The nvidia-smi stand-in: this interpreter running nvidia_smi.py on the library beside it."""
    text = (f"#!{sys.executable}\n"
            "# The fake NVML library's nvidia-smi (written by tools/fake_nvml.build).\n"
            f"import sys\nsys.path.insert(0, {str(_HERE.parent)!r})\n"
            "from fake_nvml.nvidia_smi import main\n"
            f"sys.exit(main(library={str(out_dir.resolve() / LIB_NAME)!r}))\n")
    smi = out_dir / SMI_NAME
    if not smi.exists() or smi.read_text() != text:
        tmp = out_dir / f".{SMI_NAME}.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, smi)


@dataclass(frozen=True)
class SensorModel:
    """One NVML reading's sensor (see fake_nvml.c).

    Update k happens at u_k = creation + phase + k*period and is visible from u_k + lag.
    Power fields show the mean true power over [u_k - window, u_k] (mW) times gain and
    (1 + noise * N(0, 1)), rounded to ``resolution`` mW. The energy counter shows
    initial_mj + gain * energy since the origin (mJ, floored to ``resolution``); in "windowed"
    mode it adds window-average * period per update instead, i.e. it only integrates what its
    own windows saw (window <= period). ``phase_s=None`` draws the phase from the seed.
    ``status`` is the NVML return code of reads (0 = supported, 3 = NOT_SUPPORTED).
    """

    period_s: float
    window_s: float
    lag_s: float = 0.0
    phase_s: float | None = None
    noise: float = 0.0
    gain: float = 1.0
    resolution: int = 1
    mode: str = "continuous"
    status: int = 0
    initial_mj: int = 0


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    idle_w: float
    architecture: int  # nvmlDeviceArchitecture_t: 7 = Ampere, 9 = Hopper
    power_limit_w: float
    memory_total_bytes: int  # what nvmlDeviceGetMemoryInfo reports as total


# Sources: shared/docs/sensors.md.
# - Energy counter: update period 10-100 ms reported (pynvml PR #18 ~10 ms; ML.ENERGY, PETSc
#   20-100 ms); 20 ms chosen. Real counters are large since driver load: initial_mj.
# - Instant power (A100/H100): refreshed every ~100 ms from a ~25 ms window (Yang et al.,
#   arXiv 2312.02741: A100 update 101 ms, window 25 ms; H100 PCIe update 100 ms, window 21-25 ms).
# - Average power / GetPowerUsage: a 1 s average on Ampere except GA100 and newer (H100), but
#   on GA100 (A100) GetPowerUsage is the instant value, so "a100" models it as the instant sensor.
# - Power readings have +-5% error: noise 1% here, gain 1 (set gain to model the systematic part).
# The "a100" entry must match the C defaults in fake_nvml.c (a test checks it).
_MS = 1e-3
PRESETS: dict[str, dict[str, SensorModel]] = {
    "a100": {
        "energy": SensorModel(period_s=20 * _MS, window_s=20 * _MS, initial_mj=8_000_000_000),
        "power_instant": SensorModel(period_s=101 * _MS, window_s=25 * _MS, noise=0.01),
        "power_average": SensorModel(period_s=101 * _MS, window_s=25 * _MS, noise=0.01),
    },
    "h100": {
        "energy": SensorModel(period_s=20 * _MS, window_s=20 * _MS, initial_mj=12_000_000_000),
        "power_instant": SensorModel(period_s=100 * _MS, window_s=25 * _MS, noise=0.01),
        "power_average": SensorModel(period_s=100 * _MS, window_s=1000 * _MS, noise=0.01),
    },
    # Exactness tests: 1 ms updates of 1 ms windows, no noise, no gain error.
    "ideal": {
        "energy": SensorModel(period_s=1 * _MS, window_s=1 * _MS),
        "power_instant": SensorModel(period_s=1 * _MS, window_s=1 * _MS),
        "power_average": SensorModel(period_s=1 * _MS, window_s=1 * _MS),
    },
}
_MIB = 1 << 20
PRESET_DEVICES: dict[str, DeviceInfo] = {  # memory: the MiB nvidia-smi shows for each board
    "a100": DeviceInfo("NVIDIA A100-SXM4-80GB", idle_w=60.0, architecture=7, power_limit_w=400.0,
                       memory_total_bytes=81920 * _MIB),
    "h100": DeviceInfo("NVIDIA H100 80GB HBM3", idle_w=70.0, architecture=9, power_limit_w=700.0,
                       memory_total_bytes=81559 * _MIB),
    "ideal": DeviceInfo("Fake Ideal GPU", idle_w=60.0, architecture=9, power_limit_w=700.0,
                        memory_total_bytes=81920 * _MIB),
}
PRESET_IDLE_W: dict[str, float] = {name: info.idle_w for name, info in PRESET_DEVICES.items()}


_c_int, _c_ll, _c_ull, _c_dbl = ctypes.c_int, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_double
_P = ctypes.POINTER
# Control API signatures (restype, argtypes), declared once per loaded library.
_SIGNATURES = {
    "fake_nvml_strerror": (ctypes.c_char_p, [_c_int]),
    "fake_nvml_create": (_c_int, [ctypes.c_char_p, _c_int, _c_ll]),
    "fake_nvml_attach": (_c_int, [ctypes.c_char_p]),
    "fake_nvml_detach": (_c_int, []),
    "fake_nvml_device_count": (_c_int, []),
    "fake_nvml_set_name": (_c_int, [_c_int, ctypes.c_char_p]),
    "fake_nvml_set_uuid": (_c_int, [_c_int, ctypes.c_char_p]),
    "fake_nvml_set_pci": (_c_int, [_c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint]),
    "fake_nvml_set_handle_status": (_c_int, [_c_int, _c_int]),
    "fake_nvml_set_idle": (_c_int, [_c_int, _c_dbl]),
    "fake_nvml_set_seed": (_c_int, [_c_int, _c_ull]),
    "fake_nvml_set_architecture": (_c_int, [_c_int, ctypes.c_uint]),
    "fake_nvml_set_power_limit": (_c_int, [_c_int, ctypes.c_uint]),
    "fake_nvml_set_memory_total": (_c_int, [_c_int, _c_ull]),
    "fake_nvml_set_processes": (_c_int, [_c_int, _c_int, _c_int, _P(ctypes.c_uint), _P(_c_ull)]),
    "fake_nvml_configure_field": (
        _c_int,
        [_c_int, _c_int, _c_int, _c_ll, _c_ll, _c_ll, _c_ll, _c_dbl, _c_dbl, _c_ull, _c_int, _c_ull],
    ),
    "fake_nvml_get_field": (
        _c_int,
        [_c_int, _c_int, _P(_c_int), _P(_c_ll), _P(_c_ll), _P(_c_ll), _P(_c_ll),
         _P(_c_dbl), _P(_c_dbl), _P(_c_ull), _P(_c_int), _P(_c_ull)],
    ),
    "fake_nvml_set_call_latency": (_c_int, [_c_int, _c_ll]),
    "fake_nvml_set_power": (_c_int, [_c_int, _c_dbl, _c_int]),
    "fake_nvml_set_power_at": (_c_int, [_c_int, _c_dbl, _c_int, _c_ll]),
    "fake_nvml_true_energy": (_c_int, [_c_int, _c_ll, _c_ll, _P(_c_dbl)]),
    "fake_nvml_tag_energy": (_c_int, [_c_int, _c_int, _P(_c_dbl)]),
    "fake_nvml_counter_at": (_c_int, [_c_int, _c_ll, _P(_c_ull)]),
    "fake_nvml_power_at": (_c_int, [_c_int, _c_int, _c_ll, _P(ctypes.c_uint)]),
    "fake_nvml_update_visible_at": (_c_int, [_c_int, _c_int, _c_ll, _P(_c_ll)]),
    "fake_nvml_update_index_at": (_c_int, [_c_int, _c_int, _c_ll, _P(_c_ll)]),
    "fake_nvml_counter_origin": (_c_int, [_c_int, _P(_c_ll)]),
    "fake_nvml_reset_counter": (_c_int, [_c_int]),
    "fake_nvml_calls": (_c_ll, [_c_int, _c_int]),
    "fake_nvml_overrun": (_c_int, [_c_int]),
}
_EINVAL, _ETIME = -1, -2


@functools.lru_cache(maxsize=None)
def _load(lib_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(lib_path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


# One state is mapped per library instance per process: the FakeNvml that owns it, by lib path.
_ACTIVE: dict[str, FakeNvml] = {}


def _seconds_to_ns(seconds: float, what: str) -> int:
    ns = round(seconds * 1e9)
    if ns < 0:
        raise ValueError(f"{what} must be >= 0, got {seconds!r} s")
    return ns


class FakeNvml:
    """Creates a fake NVML state file, applies a preset and drives the true power signal.

    ``lib_path`` is loaded with ``ctypes.CDLL`` (the library phprof's sampler dlopens: in one
    process both share one mapping). Creating a FakeNvml supersedes any earlier one of the same
    library in this process. Field arguments are names from FIELDS or indices 0-2.
    """

    def __init__(self, lib_path, state_path, n_devices=1, preset="a100", seed=0, ring_capacity=262144):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        if not 1 <= n_devices <= 8:
            raise ValueError(f"n_devices must be 1..8, got {n_devices}")
        if ring_capacity < 4:
            raise ValueError(f"ring_capacity must be >= 4, got {ring_capacity}")
        self._open(lib_path, state_path)
        self._check(self._lib.fake_nvml_create(str(self.state_path).encode(), n_devices, ring_capacity),
                    f"creating state {self.state_path}")
        _ACTIVE[str(self.lib_path)] = self
        self.n_devices = n_devices
        self.seed = seed
        info, models = PRESET_DEVICES[preset], PRESETS[preset]
        for dev in range(n_devices):
            self._check(self._lib.fake_nvml_set_seed(dev, seed), "set_seed")
            self.set_name(dev, info.name)
            self._check(self._lib.fake_nvml_set_architecture(dev, info.architecture), "set_architecture")
            self._check(self._lib.fake_nvml_set_power_limit(dev, round(info.power_limit_w * 1000)),
                        "set_power_limit")
            self.set_memory_total(dev, info.memory_total_bytes)
            for field, model in models.items():
                self.configure(dev, field, model)
            self.set_idle(dev, info.idle_w)

    @classmethod
    def attach(cls, lib_path, state_path) -> FakeNvml:
        """Map an existing state file (e.g. in a subprocess that writes power events)."""
        self = cls.__new__(cls)
        self._open(lib_path, state_path)
        self._check(self._lib.fake_nvml_attach(str(self.state_path).encode()), f"attaching {self.state_path}")
        _ACTIVE[str(self.lib_path)] = self
        self.n_devices = self._lib.fake_nvml_device_count()
        self.seed = None
        return self

    def _open(self, lib_path, state_path):
        self.lib_path = Path(lib_path).resolve()
        self.state_path = Path(state_path).resolve()
        self._lib = _load(str(self.lib_path))
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------

    def _check(self, rc: int, what: str) -> int:
        if rc >= 0:
            return rc
        msg = f"fake NVML: {what}: {self._lib.fake_nvml_strerror(rc).decode()}"
        if rc in (_EINVAL, _ETIME):
            raise ValueError(msg)
        raise FakeNvmlError(msg)

    @property
    def _c(self) -> ctypes.CDLL:
        """The library, after checking that this object still owns the mapped state."""
        if self._closed:
            raise FakeNvmlError("this FakeNvml is closed")
        if _ACTIVE.get(str(self.lib_path)) is not self:
            raise FakeNvmlError("this FakeNvml was superseded by a newer one using the same library")
        return self._lib

    def _dev(self, device: int) -> int:
        if not isinstance(device, (int, np.integer)) or not 0 <= device < self.n_devices:
            raise ValueError(f"device must be an index in 0..{self.n_devices - 1}, got {device!r}")
        return int(device)

    @staticmethod
    def _field(field) -> int:
        if isinstance(field, str):
            if field not in FIELDS:
                raise ValueError(f"unknown field {field!r}; known: {FIELDS}")
            return FIELDS.index(field)
        if isinstance(field, (int, np.integer)) and 0 <= field < len(FIELDS):
            return int(field)
        raise ValueError(f"field must be one of {FIELDS} or 0..{len(FIELDS) - 1}, got {field!r}")

    @staticmethod
    def _tag(tag) -> int:
        if not isinstance(tag, (int, np.integer)) or not 0 <= tag < MAX_TAGS:
            raise ValueError(f"tag must be an int in 0..{MAX_TAGS - 1}, got {tag!r}")
        return int(tag)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should load this fake and see this state: phprof's
        library setting, the state, and the library's folder first on LD_LIBRARY_PATH (for
        pynvml, which loads libnvidia-ml.so.1 by name) and on PATH (its nvidia-smi)."""
        folder = str(self.lib_path.parent)

        def first(var: str) -> str:
            rest = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != folder]
            return os.pathsep.join([folder, *rest])

        return {"PHPROF_NVML_LIB": str(self.lib_path), "PHPROF_FAKE_NVML_STATE": str(self.state_path),
                "LD_LIBRARY_PATH": first("LD_LIBRARY_PATH"), "PATH": first("PATH")}

    # -- configuration --------------------------------------------------------------------

    def configure(self, device: int, field, model: SensorModel) -> None:
        """Set a field's sensor model. Restarts the device's signal (one idle event at now)."""
        if model.mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {model.mode!r}")
        phase = -1 if model.phase_s is None else _seconds_to_ns(model.phase_s, "phase_s")
        self._check(
            self._c.fake_nvml_configure_field(
                self._dev(device), self._field(field), int(model.status),
                _seconds_to_ns(model.period_s, "period_s"), _seconds_to_ns(model.window_s, "window_s"),
                _seconds_to_ns(model.lag_s, "lag_s"), phase, float(model.noise), float(model.gain),
                int(model.resolution), _MODES[model.mode], int(model.initial_mj)),
            f"configure(device={device}, field={field!r}, {model})")

    def get_model(self, device: int, field) -> SensorModel:
        """The configured sensor model of a field (phase_s None when drawn from the seed)."""
        status, mode = ctypes.c_int(), ctypes.c_int()
        period, window, lag, phase = (ctypes.c_longlong() for _ in range(4))
        noise, gain = ctypes.c_double(), ctypes.c_double()
        resolution, initial = ctypes.c_ulonglong(), ctypes.c_ulonglong()
        self._check(self._c.fake_nvml_get_field(
            self._dev(device), self._field(field), status, period, window, lag, phase,
            noise, gain, resolution, mode, initial), "get_model")
        return SensorModel(
            period_s=period.value / 1e9, window_s=window.value / 1e9, lag_s=lag.value / 1e9,
            phase_s=None if phase.value < 0 else phase.value / 1e9, noise=noise.value, gain=gain.value,
            resolution=resolution.value, mode=next(k for k, v in _MODES.items() if v == mode.value),
            status=status.value, initial_mj=initial.value)

    def set_name(self, device: int, name: str) -> None:
        self._check(self._c.fake_nvml_set_name(self._dev(device), name.encode()),
                    f"set_name({name!r}): names are 1..95 bytes")

    def set_uuid(self, device: int, uuid: str) -> None:
        """The device's UUID as nvmlDeviceGetUUID reports it (``GPU-`` and 36 characters on a
        real board; by default ``GPU-fake-<state>-<index>``)."""
        self._check(self._c.fake_nvml_set_uuid(self._dev(device), uuid.encode()),
                    f"set_uuid({uuid!r}): UUIDs are 1..79 bytes")

    def set_pci(self, device: int, domain: int, bus: int, pci_device: int = 0) -> None:
        """Where the board sits on the PCI bus (nvmlDeviceGetPciInfo_v3; by default domain 0,
        bus 0x07 + 0x10 * index, device 0)."""
        self._check(self._c.fake_nvml_set_pci(self._dev(device), domain, bus, pci_device),
                    f"set_pci({domain:#x}, {bus:#x}, {pci_device:#x}): bus 0..0xff, device 0..0x1f")

    def set_handle_status(self, device: int, status: int) -> None:
        """What nvmlDeviceGetHandleByIndex_v2 returns for the device: 0 a handle, else that NVML
        error code (15: GPU is lost, 4: no permission), as for a board the driver cannot reach."""
        self._check(self._c.fake_nvml_set_handle_status(self._dev(device), status), f"set_handle_status({status})")

    def set_memory_total(self, device: int, total_bytes: int) -> None:
        """The device's memory, as nvmlDeviceGetMemoryInfo reports its total (bytes)."""
        self._check(self._c.fake_nvml_set_memory_total(self._dev(device), int(total_bytes)),
                    f"set_memory_total({total_bytes!r})")

    def set_processes(self, device: int, processes, kind: str = "compute") -> None:
        """The processes NVML lists on the device (``kind`` "compute" or "graphics"), as
        ``(pid, used_bytes)`` pairs, at most 16; their memory is the device's used memory."""
        kinds = ("compute", "graphics")
        if kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {kind!r}")
        procs = list(processes)
        pids = (ctypes.c_uint * max(len(procs), 1))(*[int(p) for p, _ in procs])
        used = (ctypes.c_ulonglong * max(len(procs), 1))(*[int(b) for _, b in procs])
        self._check(self._c.fake_nvml_set_processes(self._dev(device), kinds.index(kind), len(procs), pids, used),
                    f"set_processes({procs!r}): at most 16 (pid, bytes) pairs")

    def set_idle(self, device: int, watts: float) -> None:
        """Set the idle level. Restarts the device's signal at that level."""
        self._check(self._c.fake_nvml_set_idle(self._dev(device), float(watts)), f"set_idle({watts!r})")

    def set_call_latency(self, device: int, seconds: float) -> None:
        """Busy-wait added to each NVML sensor read of the device (mimics real call cost)."""
        self._check(self._c.fake_nvml_set_call_latency(self._dev(device), _seconds_to_ns(seconds, "latency")),
                    "set_call_latency")

    # -- the true power signal ------------------------------------------------------------

    def set_power(self, device: int, watts: float, tag: int = 0) -> None:
        """True power is `watts` from now on; energy spent at this level is counted under `tag`."""
        self._check(self._c.fake_nvml_set_power(self._dev(device), float(watts), self._tag(tag)),
                    f"set_power({watts!r})")

    def set_power_at(self, device: int, watts: float, t_ns: int, tag: int = 0) -> None:
        """True power is `watts` from t_ns on (t_ns may be in the future, not before the last event)."""
        self._check(self._c.fake_nvml_set_power_at(self._dev(device), float(watts), self._tag(tag), int(t_ns)),
                    f"set_power_at({watts!r}, t_ns={t_ns})")

    def square_wave(self, device: int, high_w: float, low_w: float, period_s: float, duty: float,
                    start_ns: int, n_periods: int, tag_high: int = 1, tag_low: int = 0) -> int:
        """Schedule n_periods of `high_w` for duty*period then `low_w`, from start_ns.

        A final `low_w` event at the end closes the last interval, so tag energies cover the whole
        wave. Edges are rounded to integer ns once per period. Returns the end time (ns).
        """
        if not 0 < duty < 1:
            raise ValueError(f"duty must be in (0, 1), got {duty!r}")
        if n_periods < 1:
            raise ValueError(f"n_periods must be >= 1, got {n_periods!r}")
        period_ns = _seconds_to_ns(period_s, "period_s")
        high_ns = round(duty * period_ns)
        if not 0 < high_ns < period_ns:
            raise ValueError(f"period {period_s!r} s with duty {duty!r} leaves no low or no high time")
        for i in range(n_periods):
            t = int(start_ns) + i * period_ns
            self.set_power_at(device, high_w, t, tag_high)
            self.set_power_at(device, low_w, t + high_ns, tag_low)
        end = int(start_ns) + n_periods * period_ns
        self.set_power_at(device, low_w, end, tag_low)
        return end

    def true_energy(self, device: int, t0_ns: int, t1_ns: int) -> float:
        """Exact integral of the true power over [t0_ns, t1_ns], J."""
        out = ctypes.c_double()
        self._check(self._c.fake_nvml_true_energy(self._dev(device), int(t0_ns), int(t1_ns), out),
                    "true_energy")
        return out.value

    def tag_energy(self, device: int, tag: int) -> float:
        """True energy (J) of the closed intervals spent at `tag` (an interval closes at the next event)."""
        out = ctypes.c_double()
        self._check(self._c.fake_nvml_tag_energy(self._dev(device), self._tag(tag), out), "tag_energy")
        return out.value

    # -- the sensors ----------------------------------------------------------------------

    def counter_at(self, device: int, t_ns: int) -> int:
        """The energy counter an NVML read at t_ns returns (mJ), ignoring the field's status."""
        out = ctypes.c_ulonglong()
        self._check(self._c.fake_nvml_counter_at(self._dev(device), int(t_ns), out), "counter_at")
        return out.value

    def power_at(self, device: int, field, t_ns: int) -> int:
        """The power field an NVML read at t_ns returns (mW), ignoring the field's status."""
        f = self._field(field)
        if f == 0:
            raise ValueError("power_at needs a power field; use counter_at for the energy counter")
        out = ctypes.c_uint()
        self._check(self._c.fake_nvml_power_at(self._dev(device), f, int(t_ns), out), "power_at")
        return out.value

    def update_index_at(self, device: int, field, t_ns: int) -> int:
        """Index k of the update a read at t_ns shows (largest k with u_k + lag <= t_ns)."""
        out = ctypes.c_longlong()
        self._check(self._c.fake_nvml_update_index_at(self._dev(device), self._field(field), int(t_ns), out),
                    "update_index_at")
        return out.value

    def update_visible_at(self, device: int, field, k: int) -> int:
        """Time (ns) from which update k of the field is visible: u_k + lag."""
        out = ctypes.c_longlong()
        self._check(self._c.fake_nvml_update_visible_at(self._dev(device), self._field(field), int(k), out),
                    "update_visible_at")
        return out.value

    def update_times(self, device: int, field, t0_ns: int, t1_ns: int) -> np.ndarray:
        """Instants in [t0_ns, t1_ns] at which the field's reading changes to a new update (int64 ns)."""
        k0 = self.update_index_at(device, field, t0_ns)
        if self.update_visible_at(device, field, k0) < t0_ns:
            k0 += 1
        k1 = self.update_index_at(device, field, t1_ns)
        if k1 < k0:
            return np.empty(0, dtype=np.int64)
        first = self.update_visible_at(device, field, k0)
        period = self.update_visible_at(device, field, k0 + 1) - first
        return first + period * np.arange(k1 - k0 + 1, dtype=np.int64)

    def counter_origin(self, device: int) -> int:
        """Time (ns) since which the energy counter counts (last signal restart or reset_counter)."""
        out = ctypes.c_longlong()
        self._check(self._c.fake_nvml_counter_origin(self._dev(device), out), "counter_origin")
        return out.value

    def reset_counter(self, device: int) -> None:
        """A driver reload: the energy counter restarts at 0 from now."""
        self._check(self._c.fake_nvml_reset_counter(self._dev(device)), "reset_counter")

    def calls(self, device: int, field) -> int:
        """Number of NVML reads of the field on the device (all processes)."""
        return self._check(self._c.fake_nvml_calls(self._dev(device), self._field(field)), "calls")

    def overrun(self, device: int) -> bool:
        """Whether an NVML read of the device needed power events the ring no longer held."""
        return bool(self._check(self._c.fake_nvml_overrun(self._dev(device)), "overrun"))

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the state (if this object still owns it). Stop any in-process NVML reader first."""
        if self._closed:
            return
        self._closed = True
        if _ACTIVE.get(str(self.lib_path)) is self:
            del _ACTIVE[str(self.lib_path)]
            self._lib.fake_nvml_detach()

    def __enter__(self) -> FakeNvml:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Ground truth for attribution: a known power per module of a real model.
OUTSIDE_W, OUTSIDE_TAG = 100.0, 1000


def _dwell(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class _ModulePower:
    """The power switching of :func:`power_per_module` and :func:`power_per_module_everywhere`:
    a module's call draws ``levels[name]`` under ``tags[name]`` while it is the innermost one
    running, OUTSIDE_W (OUTSIDE_TAG) while none is."""

    def __init__(self, fake, levels: dict, tags: dict, device: int, dwell_s: float) -> None:
        self.fake, self.levels, self.tags, self.device, self.dwell_s = fake, levels, tags, device, dwell_s
        self.stack: list[str] = []

    def name_all(self, model) -> dict[int, str]:
        """Levels and tags for every module of ``model`` (random, 80-400 W, one seed per
        model), by the path phprof names it with (the root: its class); id(module) -> path."""
        rng = np.random.default_rng(0)
        names = {}
        for i, (path, module) in enumerate(model.named_modules()):
            name = path or type(model).__name__
            self.tags[name], self.levels[name] = i + 1, float(rng.uniform(80, 400))
            names[id(module)] = name
        return names

    def enter(self, name: str) -> None:
        self.stack.append(name)
        self.fake.set_power(self.device, self.levels[name], self.tags[name])
        _dwell(self.dwell_s)

    def leave(self) -> None:
        self.stack.pop()
        top = self.stack[-1] if self.stack else None
        self.fake.set_power(self.device, self.levels[top] if top else OUTSIDE_W, self.tags[top] if top else OUTSIDE_TAG)
        if top:
            _dwell(self.dwell_s)


def power_per_module(fake, levels: dict, tags: dict, device: int = 0, dwell_s: float = 0.0):
    """A ``setup`` for phprof.trace: every module's forward draws its own known
    power on the fake GPU (random, 80-400 W; the innermost running module's level
    holds, OUTSIDE_W between forwards), so the fake's per-tag energy is each
    module's true energy. Fills ``levels`` and ``tags`` by module path.

    The hooks switch the power a few microseconds away from the edges of the
    module's profiler scope, so a module whose forward lasts tens of
    microseconds has no well-defined true power on phprof's timeline:
    ``dwell_s`` makes each forward busy-wait that long after switching (and
    each parent again after its child returns), which makes those edges small.
    The hooks are the module's own: they run after phprof's global ones open a
    module's scope, and after they close it, so each wait lies in the scope
    whose power it draws."""

    def setup(model):
        _hook_all(_ModulePower(fake, levels, tags, device, dwell_s), model)

    return setup


def _hook_all(power: _ModulePower, model) -> list:
    names = power.name_all(model)
    handles = []
    for module in model.modules():
        name = names[id(module)]
        handles.append(module.register_forward_pre_hook(lambda mod, args, name=name: power.enter(name)))
        handles.append(module.register_forward_hook(lambda mod, args, out: power.leave()))
    return handles


@contextlib.contextmanager
def power_per_module_everywhere(fake, levels: dict, tags: dict, device: int = 0, dwell_s: float = 0.0):
    """:func:`power_per_module` for code that builds its models itself (a user's
    script under ``phprof run``): while inside, every torch module called draws
    its own known power. A global hook finds the roots: a module called outside
    every other, not under a root found before, is one, and gets
    :func:`power_per_module`'s hooks on every module under it, each named by its
    path (the root by its class), as phprof names the first root it finds (a
    second root's paths are not prefixed as phprof prefixes them: give such a
    run one model). A module made on the fly inside a forward is part of its
    caller. Fills ``levels`` and ``tags`` as roots are found."""
    from torch.nn.modules import module as torch_module

    power = _ModulePower(fake, levels, tags, device, dwell_s)
    known: set[int] = set()
    handles: list = []

    def discover(module, args):
        if id(module) in known or power.stack:
            return
        known.update(id(m) for m in module.modules())
        handles.extend(_hook_all(power, module))
        # this call's own pre-hook was not run (torch had read the hooks already): its power now, without
        # the wait (it would lie before phprof's scope of the root); its forward hook runs as it returns
        power.stack.append(type(module).__name__)
        fake.set_power(device, levels[power.stack[-1]], tags[power.stack[-1]])

    handles.append(torch_module.register_module_forward_pre_hook(discover))
    try:
        yield levels, tags
    finally:
        for h in handles:
            h.remove()
        fake.set_power(device, OUTSIDE_W, OUTSIDE_TAG)


class FakeLoad:
    """A load for ``phprof.api.calibrate_gpu`` on the fake GPU: the CUDA load
    kernels' ``run``, with the fake's true power following the commanded segments
    (``busy_w`` while busy, the device's idle level while idle), switched on the host's
    own clock (no GPU timer to match: ``clock_uncertainty_ns`` is 0)."""

    clock_uncertainty_ns = 0

    def __init__(self, fake: FakeNvml, device: int = 0, busy_w: float = 300.0, idle_w: float | None = None):
        self.fake, self.device, self.busy_w = fake, device, busy_w
        self.idle_w = PRESET_IDLE_W["a100"] if idle_w is None else idle_w

    def run(self, durations_s, busy, start_ns: int) -> np.ndarray:
        t, marks = int(start_ns), []
        for d, b in zip(durations_s, busy):
            self.fake.set_power_at(self.device, self.busy_w if b else self.idle_w, t, tag=1 if b else 0)
            marks.append(t)
            t += round(float(d) * 1e9)
        self.fake.set_power_at(self.device, self.idle_w, t, tag=0)
        while time.time_ns() < t:
            time.sleep(min(0.05, max((t - time.time_ns()) / 1e9, 0)))
        return np.array(marks, np.int64)
