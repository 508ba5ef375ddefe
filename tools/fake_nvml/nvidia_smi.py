"""An `nvidia-smi` for the fake NVML library: the few forms tools run, answered from the fake.

Tools look for `nvidia-smi` before they trust NVML (CodeCarbon runs `nvidia-smi --help`), and
some read `--query-gpu` output. `fake_nvml.build` writes an executable `nvidia-smi` beside the
library that calls :func:`main` with that library; `FakeNvml.env` puts it first on PATH.

Forms: ``--help`` (works without a GPU, as the real one does), ``-L``, ``--query-gpu=F,...
--format=csv[,noheader][,nounits] [-i N]`` and no arguments (one line per GPU). Everything
is read through the library's NVML entry points, so it shows what NVML shows. Without the
fake's state (PHPROF_FAKE_NVML_STATE unset in a process that created none), NVML's init
fails and this says what the real one says when no driver is loaded, with its exit code 9.
"""
from __future__ import annotations

import ctypes
import sys

USAGE = """NVIDIA System Management Interface -- fake NVML stand-in (tools/fake_nvml/nvidia_smi.py)

nvidia-smi [OPTION1 [ARG1]] [OPTION2 [ARG2]] ...

    -h,   --help                Print usage information and exit.
    -L,   --list-gpus           Display a list of GPUs connected to the system.
    -i,   --id=                 Target a specific GPU (index).
    --query-gpu=                Information about GPU. Fields: {fields}
    --format=                   csv, with optional noheader and nounits (csv,noheader,nounits).
"""
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")
BAD_ARGS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
EXIT_NO_DRIVER, EXIT_BAD_ARGS = 9, 2
NVML_FI_DEV_POWER_INSTANT = 186
MIB = 1 << 20


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Value(ctypes.Union):
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ullVal", ctypes.c_ulonglong)]


class _FieldValue(ctypes.Structure):
    _fields_ = [("fieldId", ctypes.c_uint), ("scopeId", ctypes.c_uint), ("timestamp", ctypes.c_longlong),
                ("latencyUsec", ctypes.c_longlong), ("valueType", ctypes.c_int), ("nvmlReturn", ctypes.c_int),
                ("value", _Value)]


class NvmlError(Exception):
    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed (NVML error {code})")
        self.code = code


class Gpu:
    """One device read through the library's NVML calls."""

    def __init__(self, nvml: ctypes.CDLL, index: int) -> None:
        self.nvml, self.index = nvml, index
        self.handle = ctypes.c_void_p()
        self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(self.handle))

    def _call(self, name: str, *args) -> None:
        rc = getattr(self.nvml, name)(*args)
        if rc:
            raise NvmlError(name, rc)

    def _text(self, name: str) -> str:
        buf = ctypes.create_string_buffer(96)
        self._call(name, self.handle, buf, ctypes.c_uint(96))
        return buf.value.decode()

    def _uint(self, name: str, *extra) -> int:
        v = ctypes.c_uint()
        self._call(name, self.handle, *extra, ctypes.byref(v))
        return v.value

    def memory(self) -> _Memory:
        m = _Memory()
        self._call("nvmlDeviceGetMemoryInfo", self.handle, ctypes.byref(m))
        return m

    def utilization(self) -> _Utilization:
        u = _Utilization()
        self._call("nvmlDeviceGetUtilizationRates", self.handle, ctypes.byref(u))
        return u

    def instant_mw(self) -> int:
        fv = _FieldValue(fieldId=NVML_FI_DEV_POWER_INSTANT, scopeId=0)
        self._call("nvmlDeviceGetFieldValues", self.handle, ctypes.c_int(1), ctypes.byref(fv))
        if fv.nvmlReturn:
            raise NvmlError("nvmlDeviceGetFieldValues", fv.nvmlReturn)
        return fv.value.uiVal


def _driver(nvml: ctypes.CDLL) -> str:
    buf = ctypes.create_string_buffer(80)
    rc = nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(80))
    if rc:
        raise NvmlError("nvmlSystemGetDriverVersion", rc)
    return buf.value.decode()


# field -> (read, unit): read(gpu, nvml) gives the value nvidia-smi prints before its unit
FIELDS = {
    "index": (lambda g, n: g.index, ""),
    "name": (lambda g, n: g._text("nvmlDeviceGetName"), ""),
    "uuid": (lambda g, n: g._text("nvmlDeviceGetUUID"), ""),
    "driver_version": (lambda g, n: _driver(n), ""),
    "power.draw": (lambda g, n: f"{g._uint('nvmlDeviceGetPowerUsage') / 1000:.2f}", "W"),
    "power.draw.instant": (lambda g, n: f"{g.instant_mw() / 1000:.2f}", "W"),
    "power.limit": (lambda g, n: f"{g._uint('nvmlDeviceGetPowerManagementLimit') / 1000:.2f}", "W"),
    "enforced.power.limit": (lambda g, n: f"{g._uint('nvmlDeviceGetEnforcedPowerLimit') / 1000:.2f}", "W"),
    "memory.total": (lambda g, n: g.memory().total // MIB, "MiB"),
    "memory.used": (lambda g, n: g.memory().used // MIB, "MiB"),
    "memory.free": (lambda g, n: g.memory().free // MIB, "MiB"),
    "utilization.gpu": (lambda g, n: g.utilization().gpu, "%"),
    "utilization.memory": (lambda g, n: g.utilization().memory, "%"),
    "temperature.gpu": (lambda g, n: g._uint("nvmlDeviceGetTemperature", ctypes.c_int(0)), ""),
}


def _options(argv: list[str]) -> dict[str, str] | None:
    """--key=value, --key value and -k value forms; None for anything else."""
    out, i = {}, 0
    aliases = {"-h": "help", "-L": "list-gpus", "-i": "id"}
    while i < len(argv):
        a = argv[i]
        key = aliases.get(a) or (a[2:].split("=", 1)[0] if a.startswith("--") else None)
        if key is None:
            return None
        if "=" in a:
            out[key] = a.split("=", 1)[1]
        elif key in ("id", "query-gpu", "format"):
            if i + 1 >= len(argv):
                return None
            out[key] = argv[i + 1]
            i += 1
        else:
            out[key] = ""
        i += 1
    return out


def main(argv: list[str] | None = None, library: str = "libnvidia-ml.so.1", out=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    opts = _options(argv)
    if opts is None or not set(opts) <= {"help", "list-gpus", "id", "query-gpu", "format"}:
        print(BAD_ARGS, file=out)
        return EXIT_BAD_ARGS
    if "help" in opts:
        print(USAGE.format(fields=", ".join(FIELDS)), file=out)
        return 0
    nvml = ctypes.CDLL(library)
    if nvml.nvmlInit_v2():
        print(NO_DRIVER, file=out)
        return EXIT_NO_DRIVER
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)):
            print(NO_DRIVER, file=out)
            return EXIT_NO_DRIVER
        indices = list(range(count.value))
        if "id" in opts:
            if not opts["id"].isdigit() or int(opts["id"]) not in indices:
                print(f"No devices were found matching the id {opts['id']!r}.", file=out)
                return 6
            indices = [int(opts["id"])]
        gpus = [Gpu(nvml, i) for i in indices]
        if "query-gpu" in opts:
            return _query(gpus, nvml, opts, out)
        if "format" in opts:
            print(BAD_ARGS, file=out)
            return EXIT_BAD_ARGS
        for g in gpus:
            if "list-gpus" in opts:
                print(f"GPU {g.index}: {g._text('nvmlDeviceGetName')} (UUID: {g._text('nvmlDeviceGetUUID')})",
                      file=out)
            else:
                m = g.memory()
                print(f"GPU {g.index}  {g._text('nvmlDeviceGetName')}  {g._uint('nvmlDeviceGetPowerUsage') / 1000:.0f}W / "
                      f"{g._uint('nvmlDeviceGetEnforcedPowerLimit') / 1000:.0f}W  {m.used // MIB}MiB / "
                      f"{m.total // MIB}MiB  {g.utilization().gpu}%", file=out)
        return 0
    except NvmlError as e:
        print(f"Unable to query the GPU: {e}", file=out)
        return 15
    finally:
        nvml.nvmlShutdown()


def _query(gpus: list[Gpu], nvml: ctypes.CDLL, opts: dict[str, str], out) -> int:
    fmt = opts.get("format", "").split(",")
    if fmt[0] != "csv" or not set(fmt[1:]) <= {"noheader", "nounits"}:
        print('"--format" must be csv, with optional noheader and nounits: ' + BAD_ARGS, file=out)
        return EXIT_BAD_ARGS
    names = [f.strip() for f in opts["query-gpu"].split(",") if f.strip()]
    if names == ["count"]:
        print(len(gpus) if "noheader" in fmt else f"count\n{len(gpus)}", file=out)
        return 0
    for f in names:
        if f not in FIELDS:
            print(f'Field "{f}" is not a valid field to query.', file=out)
            return EXIT_BAD_ARGS
    units = "nounits" not in fmt
    if "noheader" not in fmt:
        print(", ".join(f"{f} [{FIELDS[f][1]}]" if units and FIELDS[f][1] else f for f in names), file=out)
    for g in gpus:
        row = []
        for f in names:
            read, unit = FIELDS[f]
            v = read(g, nvml)
            row.append(f"{v} {unit}" if units and unit else str(v))
        print(", ".join(row), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
