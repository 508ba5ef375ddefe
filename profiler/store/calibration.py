"""Sensor calibrations: what `phprof calibrate` found of a GPU's power fields, and their files.

A :class:`Calibration` holds, per power field of one GPU (``power_instant``,
``power.draw``...), a :class:`FieldCalibration`: the update period and its
jitter, the averaging window, the lag, the window and lag together, the
load's levels as the field saw them (or the field's gain and offset against an
external meter), the step responses (rise time, settling tail), and notes. Each
fitted number is a :class:`Fitted`: a value with its 90% interval, whether that
interval touches a limit of the search, and, where the data could not identify
it, no value and the reason.

Files are JSON (``format: phprof-sensor-calibration``), one per GPU and driver,
named from both, in :func:`calibration_dir` (``$PHPROF_CALIBRATION_DIR``, else
``$XDG_CONFIG_HOME/phprof/calibrations``, else ``~/.config/phprof/calibrations``),
or wherever the user writes them. :func:`find_calibration` picks the file of a
trace's GPU. This module is the only code that knows the file's layout; a
hand-written ``{"period_s": ..., "window_s": ..., "lag_s": ...}`` is read too
(:func:`read_sensor_file`).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import PhprofError
from ..sources.sensors import SensorModel

FORMAT = "phprof-sensor-calibration"
VERSION = 1
DIR_ENV = "PHPROF_CALIBRATION_DIR"


class CalibrationFileError(PhprofError):
    """A calibration file that cannot be read or written."""


@dataclass(frozen=True)
class Fitted:
    """One fitted number: the value and its 90% interval. ``value`` None: the data
    do not identify it (``why_unknown`` says why); ``at_limit``: "lower" or
    "upper" where the interval reaches the edge of the range searched, so the
    truth may lie beyond it."""

    value: float | None
    low: float | None = None
    high: float | None = None
    at_limit: str = ""
    why_unknown: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None

    @classmethod
    def unknown(cls, why: str) -> Fitted:
        return cls(None, why_unknown=why)

    def text(self, scale: float = 1.0, unit: str = "", digits: int = 0) -> str:
        """``25 ms [21, 29]``, with ``(at the upper search limit)`` or ``not identified: why``."""
        if self.value is None:
            return f"not identified: {self.why_unknown}"
        out = f"{self.value * scale:.{digits}f}{' ' + unit if unit else ''}"
        if self.low is not None and self.high is not None:
            out += f" [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        if self.at_limit:
            out += f" (at the {self.at_limit} limit of the search: the truth may lie beyond)"
        return out


@dataclass(frozen=True)
class StepResponse:
    """How a signal (a field, or the meter: the load itself) followed one step of the load."""

    edge_s: float  # the step's instant, s since the epoch
    rising: bool
    before_w: float  # the level before the step
    after_w: float  # the level it settled at
    delay_s: float | None  # from the step to half-way (None: never got there)
    rise_s: float | None  # 10% to 90% of the step (a fall: 90% to 10%)
    resolution_s: float  # how well these times are known (the field's update period, or the meter's sampling)
    excess_w: float | None = None  # after a falling step: the level 1-2 s later minus the level before the load
    settle_s: float | None = None  # after a falling step: until within the band of the level before the load
    settle_band_w: float | None = None


@dataclass(frozen=True)
class FieldCalibration:
    """What a calibration found of one power field (see the module)."""

    field: str  # the log's name of the field ("power_instant", "power.draw"...)
    nvml_field: str  # the NVML field phprof samples that this is ("power_instant", "power_average"; "" : none)
    against: str  # what the field was fitted against: "meter" or "schedule"
    readings: int
    updates: int  # changes of value seen
    poll_s: float  # median interval between the log's readings
    period_s: Fitted
    jitter_s: float | None  # RMS of the update instants around a strict period (polling's spread included)
    window_s: Fitted
    lag_s: Fitted
    window_plus_lag_s: Fitted  # the end-to-start reach of the window: what a single step fixes
    residual_w: float | None  # RMS of the updates around the fitted model
    spread_w: float  # RMS of the updates around their mean: what a model must beat
    low_w: Fitted = Fitted.unknown("no load schedule given")  # the load's levels as the field reads them
    high_w: Fitted = Fitted.unknown("no load schedule given")
    gain: Fitted = Fitted.unknown("no meter given")  # field = gain x meter + offset
    offset_w: Fitted = Fitted.unknown("no meter given")
    steps: tuple[StepResponse, ...] = ()
    notes: tuple[str, ...] = ()

    def sensor_model(self, source: str) -> SensorModel | None:
        """The model attribution uses, with its intervals; None where period or window is not identified."""
        if not (self.period_s.known and self.window_s.known):
            return None
        lag = self.lag_s if self.lag_s.known else Fitted(0.0)
        return SensorModel(self.period_s.value, self.window_s.value, lag.value, source,
                           window_low_s=self.window_s.low, window_high_s=self.window_s.high,
                           lag_low_s=lag.low, lag_high_s=lag.high, field=self.nvml_field or self.field)


@dataclass(frozen=True)
class Calibration:
    """A GPU's power fields as calibrated, keyed by GPU name, driver version and field."""

    gpu: str  # the product name NVML reports ("NVIDIA A100-SXM4-80GB"); "" : unknown
    driver: str  # "" : unknown
    created_ns: int
    how: str  # "from-log DRIVER_LOG" or "on the GPU" and its schedule, in words
    fields: tuple[FieldCalibration, ...]
    idle_w: float | None = None  # measured with no load (GPU runs)
    nvml_call_us: dict[str, float] = field(default_factory=dict)  # median cost of one NVML read, per field
    meter: tuple[StepResponse, ...] = ()  # the load's own step responses, from the meter
    meter_levels_w: tuple[float, float] | None = None  # the meter's mean while the load was off, and on
    notes: tuple[str, ...] = ()

    VIEW = "calibration"  # what phprof.render renders it as

    def of(self, name: str) -> FieldCalibration | None:
        """The calibration of a field by its log name or the NVML field it is."""
        return next((f for f in self.fields if name in (f.field, f.nvml_field)), None)


# ---- files ----------------------------------------------------------------------------------------

def calibration_dir() -> Path:
    """Where calibrations are kept: $PHPROF_CALIBRATION_DIR, else the user's config directory."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "phprof" / "calibrations"


def default_path(gpu: str, driver: str) -> Path:
    """The file of a GPU and driver in :func:`calibration_dir`."""
    slug = "-".join(re.findall(r"[A-Za-z0-9.]+", f"{gpu or 'unknown-gpu'} driver {driver or 'unknown'}"))
    return calibration_dir() / f"{slug}.json"


def write_calibration(cal: Calibration, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, **plain(cal)}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise CalibrationFileError(f"cannot write the calibration {path}: {e}") from None
    return path


def read_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    return _checked(path, _read_json(path))


def _checked(path: Path, data: dict) -> Calibration:
    if data.get("format") != FORMAT:
        raise CalibrationFileError(f"{path} is not a phprof calibration (format {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise CalibrationFileError(f"{path}: calibration version {data.get('version')} (this phprof reads {VERSION}); "
                                   "run `phprof calibrate` again")
    try:
        return _calibration(data)
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationFileError(f"{path}: a damaged calibration ({type(e).__name__}: {e})") from None


def read_sensor_file(path: str | Path, field_name: str = "power_instant") -> tuple[SensorModel, Calibration | None]:
    """The sensor model of ``field_name`` in a calibration file, or of a hand-written
    ``{"period_s", "window_s", "lag_s"}`` JSON (then no Calibration)."""
    path = Path(path)
    data = _read_json(path)
    if data.get("format") == FORMAT:
        cal = _checked(path, data)
        f = cal.of(field_name) or (cal.fields[0] if len(cal.fields) == 1 else None)
        if f is None:
            raise CalibrationFileError(f"{path} has no calibration of {field_name} (fields: "
                                       f"{', '.join(x.field for x in cal.fields) or 'none'})")
        model = calibrated_model(path, cal, f)
        if model is None:
            raise CalibrationFileError(f"{path}: the calibration of {f.field} did not identify its "
                                       f"{'period' if not f.period_s.known else 'window'} "
                                       f"({(f.period_s if not f.period_s.known else f.window_s).why_unknown})")
        return model, cal
    try:
        return SensorModel(float(data["period_s"]), float(data["window_s"]), float(data.get("lag_s", 0.0)),
                           str(data.get("source", f"calibration file {path}"))), None
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationFileError(f"{path} is not a sensor calibration (a `phprof calibrate` file, or JSON with "
                                   f"period_s, window_s, lag_s): {type(e).__name__}: {e}") from None


def calibrated_model(path: Path, cal: Calibration, f: FieldCalibration) -> SensorModel | None:
    """A field's model from a calibration file, its source naming the file, GPU, driver and field."""
    return f.sensor_model(f"calibration {path.name} ({cal.gpu or 'unknown GPU'}, driver {cal.driver or 'unknown'}, "
                          f"field {f.field})")


def find_calibration(gpu: str, driver: str | None, directory: Path | None = None) \
        -> tuple[Path, Calibration, str] | None:
    """The calibration of a GPU among the files of ``directory`` (default
    :func:`calibration_dir`): the newest of the same GPU and driver, else the newest
    of the same GPU with a note that its driver differs; None when there is none.
    Returns (path, calibration, note)."""
    directory = directory or calibration_dir()
    if not gpu or not directory.is_dir():
        return None
    found = []
    for p in sorted(directory.glob("*.json")):
        try:
            cal = read_calibration(p)
        except CalibrationFileError:
            continue
        if cal.gpu == gpu:
            found.append((cal.driver == (driver or ""), cal.created_ns, p, cal))
    if not found:
        return None
    same, _, path, cal = max(found, key=lambda x: (x[0], x[1]))
    note = "" if same else (f"calibrated with driver {cal.driver or 'unknown'}, the trace ran driver "
                            f"{driver or 'unknown'}: the sensor may differ")
    return path, cal, note


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationFileError(f"no such calibration file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationFileError(f"{path} is not a readable JSON calibration: {e}") from None
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{path} is not a sensor calibration (a JSON object)")
    return data


def plain(v):
    """A calibration (or any part) as JSON-able data."""
    if hasattr(v, "__dataclass_fields__"):
        return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fitted(d) -> Fitted:
    return Fitted(**d)


def _field(d: dict) -> FieldCalibration:
    d = dict(d)
    for k in ("period_s", "window_s", "lag_s", "window_plus_lag_s", "low_w", "high_w", "gain", "offset_w"):
        d[k] = _fitted(d[k])
    d["steps"] = tuple(StepResponse(**s) for s in d.get("steps", ()))
    d["notes"] = tuple(d.get("notes", ()))
    return FieldCalibration(**d)


def _calibration(d: dict) -> Calibration:
    d = {k: v for k, v in d.items() if k not in ("format", "version")}
    d["fields"] = tuple(_field(f) for f in d["fields"])
    d["meter"] = tuple(StepResponse(**s) for s in d.get("meter", ()))
    d["meter_levels_w"] = tuple(d["meter_levels_w"]) if d.get("meter_levels_w") else None
    d["notes"] = tuple(d.get("notes", ()))
    return Calibration(**d)
