"""NVIDIA GPUs through NVML, read by the native sampling thread (csrc/sampler.cpp).

The library is dlopen'ed at run time: ``PHPROF_NVML_LIB`` names another file
(the fake library of the tests, a driver in a non-standard place), otherwise
the driver's ``libnvidia-ml.so.1`` is used.
"""
from __future__ import annotations

import os
import platform

from .base import Availability, Channel
from .native import NativeSource, native_module
from .rapl import Zone, zone_channels, zone_names
from .sensors import NOMINAL_INSTANT, SensorModel, nominal_behaviour, nominal_sensor

LIBRARY_ENV = "PHPROF_NVML_LIB"
DEFAULT_LIBRARY = "libnvidia-ml.so.1"

MEASURES = "GPU board energy and power through NVIDIA's NVML: energy counter, instant power, 1 s average power"

# Per field: quantity, unit, what the driver says it is. Listed best first:
# energy falls back to integrating the first power field that answers.
FIELDS = {
    "energy": ("energy", "mJ", "NVML total energy counter (mJ since driver load)"),
    "power_instant": ("power", "mW", "NVML instant power field (NVML_FI_DEV_POWER_INSTANT)"),
    "power_average": ("power", "mW", "NVML average power field (NVML_FI_DEV_POWER_AVERAGE)"),
}

def library_path() -> str:
    """The NVML library phprof loads: $PHPROF_NVML_LIB, else the driver's."""
    return os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY


def _unavailable_hint(library: str) -> str:
    if os.environ.get(LIBRARY_ENV):
        return f"{LIBRARY_ENV} is set to {library!r}; point it at a working libnvidia-ml.so.1."
    return (
        "No NVIDIA driver is installed or visible to this process (no GPU, or a container without the "
        f"driver mounted). If the library is elsewhere, set {LIBRARY_ENV}=/path/to/libnvidia-ml.so.1."
    )


class NvmlSource(NativeSource):
    """Samples NVML fields of the given GPUs from a native thread.

    ``interval_s``: polling period (default 1 ms); ``None`` or 0 polls as fast
    as NVML answers. ``changed_only`` keeps only readings whose value changed,
    each with the last unchanged reading before it, so every sensor update
    stays bracketed. ``capacity``: readings buffered between drains; when it is
    full, new readings are dropped and counted (``PowerLog.dropped``).
    ``host_zones``: RAPL zones of the host (``phprof.sources.rapl.default_zones``)
    whose counters the same thread reads in each poll, after the GPUs' fields, as
    channels of their own (``rapl.package-0``): a GPU run's CPU package and DRAM
    energy beside its GPU's.
    """

    name = "nvml"

    def __init__(
        self,
        gpus=(0,),
        fields=None,
        interval_s: float | None = 1e-3,
        changed_only: bool = False,
        capacity: int = 1 << 20,
        library: str | None = None,
        host_zones: list[Zone] = (),
    ) -> None:
        native = native_module()
        host_zones = list(host_zones)
        library = library or library_path()
        gpus = list(gpus)
        if not gpus:
            raise ValueError("select at least one GPU, e.g. gpus=[0]")
        if fields is not None:
            unknown = [f for f in fields if f not in native.FIELDS]
            if unknown:
                raise ValueError(f"unknown NVML field {unknown[0]!r} (known: {', '.join(native.FIELDS)})")
        # canonical order, best first: energy falls back to the first power field that answers
        fields = tuple(f for f in native.FIELDS if fields is None or f in fields)
        interval_ns = 0 if not interval_s else round(interval_s * 1e9)
        try:
            sampler = native.Sampler(
                library=library,
                gpus=list(gpus),
                fields=list(fields),
                files=[str(z.energy_file) for z in host_zones],
                interval_ns=interval_ns,
                changed_only=changed_only,
                capacity=capacity,
            )
        except native.NvmlUnavailable as e:
            raise native.NvmlUnavailable(f"{e}. {_unavailable_hint(library)}") from None
        channels = tuple(
            Channel(f"gpu{gpu}.{field}", f"gpu{gpu}", *FIELDS[field])
            for kind, gpu, field in sampler.channels if kind == "nvml"
        ) + zone_channels(host_zones)
        self._host_zones = host_zones
        settings = {
            "library": library,
            "gpus": list(gpus),
            "fields": list(fields),
            "interval_ns": interval_ns,
            "changed_only": changed_only,
            "capacity": sampler.stats()["capacity"],
            **({"rapl_zones": [z.device for z in host_zones], "rapl_root": str(host_zones[0].path.parent)}
               if host_zones else {}),
        }
        super().__init__(sampler, channels, settings)

    @classmethod
    def for_measuring(cls, found: Availability, interval_s: float | None = None) -> NvmlSource:
        return cls(gpus=[d["index"] for d in found.devices], interval_s=interval_s)

    @classmethod
    def device_lines(cls, d: dict) -> list[str]:
        limit = f"  power limit {d['power_limit_w']:.0f} W" if d.get("power_limit_w") else ""
        out = [f"GPU {d['index']}: {d['name']}  {d['uuid']}{limit}"]
        for field, f in d["fields"].items():
            if f["ok"]:
                value = f"{f['value']} {f['unit']}"
                out.append(f"  {field:<14} ok   {value:>16}  read in {f['call_us']:.0f} us")
                out.append(f"  {'':<14}      nominal: {f['behaviour']}")
            else:
                out.append(f"  {field:<14} {f['error'] or 'error'} (NVML code {f['status']})")
        return out

    def windowed_sensor(self) -> SensorModel:
        """The instant power field's published model for the first GPU's family; the
        A100/H100 one where the family's is not known."""
        names, _ = self.device_names()
        return next((m for m in map(nominal_sensor, names.values()) if m is not None), NOMINAL_INSTANT)

    def device_names(self) -> tuple[dict[str, str], str | None]:
        found = self._found()
        return ({f"gpu{d['index']}": d["name"] for d in found} | zone_names(self._host_zones),
                found[0]["driver"] if found else None)

    def device_ids(self) -> dict[str, str]:
        """Each measured GPU's UUID, as NVML reports it; a host zone's, the host's name and its own."""
        host = platform.node()
        return {f"gpu{d['index']}": d["uuid"] for d in self._found()} | \
            {z.device: f"{host}/{z.device}" for z in self._host_zones}

    def power_limits(self) -> dict[str, float]:
        return {f"gpu{d['index']}": d["power_limit_w"] for d in self._found() if d.get("power_limit_w")}

    def _found(self) -> list[dict]:
        """The measured GPUs as the library's probe found them (probed once per source)."""
        if not hasattr(self, "_devices"):
            self._devices = [d for d in self.probe(self.settings["library"]).devices
                             if d["index"] in self.settings["gpus"]]
        return self._devices

    @classmethod
    def probe(cls, library: str | None = None) -> Availability:
        library = library or library_path()
        try:
            native = native_module()
        except ImportError as e:
            return Availability(cls.name, False, MEASURES, str(e))
        try:
            info = native.nvml_probe(library)
        except native.NvmlUnavailable as e:
            return Availability(cls.name, False, MEASURES, f"{e}. {_unavailable_hint(library)}")
        except native.NvmlError as e:
            return Availability(cls.name, False, MEASURES, f"the NVML library loaded but {e}")
        if not info["devices"]:
            return Availability(cls.name, False, MEASURES, f"NVML ({library}) answers but sees no GPU")
        driver = info["driver_version"] or "unknown"
        devices = []
        unreadable = tuple({"index": d["index"], "error": d["error"]} for d in info["devices"] if "error" in d)
        for d in info["devices"]:
            if "error" in d:
                continue
            fields = {}
            for field, r in d["fields"].items():
                fields[field] = {
                    "status": r["status"],
                    "ok": r["status"] == 0,
                    "error": r["error"],
                    "value": r["value"],
                    "unit": FIELDS[field][1],
                    "call_us": r["call_ns"] / 1e3,
                    "behaviour": nominal_behaviour(d["name"], field),
                }
            limit = d.get("power_limit_mw", 0)
            devices.append({"index": d["index"], "name": d["name"], "uuid": d["uuid"], "driver": driver,
                            "pci": list(d["pci"]) if d.get("pci") else None,
                            "power_limit_w": limit / 1e3 if limit else None, "fields": fields})
        failing = "; ".join(f"GPU {d['index']}: {d['error']}" for d in unreadable)
        gpus = f"{len(unreadable)} GPU{'s' if len(unreadable) > 1 else ''}"
        if not devices:
            return Availability(cls.name, False, MEASURES, f"NVML ({library}, driver {driver}) sees {gpus} but can "
                                f"read none: {failing}", unreadable=unreadable)
        return Availability(
            cls.name, True, MEASURES,
            f"library {library}, driver {driver}" + (f" ({gpus} unreadable: {failing})" if unreadable else ""),
            tuple(devices), unreadable)
