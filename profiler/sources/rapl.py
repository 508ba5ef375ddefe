"""CPU package and DRAM energy from Linux powercap (Intel/AMD RAPL) counters.

Each zone's ``energy_uj`` is a microjoule counter that wraps at
``max_energy_range_uj`` and updates about every millisecond. The files are
read by the same native sampling thread as NVML (pread on an open file), so
polling does not take the GIL. ``PHPROF_POWERCAP_ROOT`` replaces
``/sys/class/powercap`` (tests point it at a fake tree).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .base import Availability, Channel
from .native import NativeSource, native_module

ROOT_ENV = "PHPROF_POWERCAP_ROOT"
DEFAULT_ROOT = "/sys/class/powercap"
MEASURES = "CPU package and DRAM energy from Linux powercap RAPL counters (uJ, updated about every 1 ms)"
# core/uncore are parts of a package and psys contains it: summing them with
# the package would count energy twice, so only these are sampled by default.
DEFAULT_ZONES = ("package", "dram")


@dataclass(frozen=True)
class Zone:
    device: str  # "package-0", "dram-0"
    kind: str  # the zone's own name without index: "package", "dram", "core", ...
    path: Path  # the zone's directory
    max_energy_range_uj: int

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"


def powercap_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def find_zones(root: Path | None = None) -> tuple[list[Zone], str]:
    """The RAPL zones under the powercap root whose counters can be read, and,
    when there are none, why (in words a user can act on)."""
    root = root or powercap_root()
    if not root.is_dir():
        return [], f"{root} does not exist (not Linux, or a kernel without powercap)"
    dirs = sorted(p for p in root.iterdir() if p.name.startswith(("intel-rapl:", "amd-rapl:")))
    if not dirs:
        return [], f"{root} has no RAPL zones (usual in virtual machines and containers)"
    zones, problems = [], []
    for d in dirs:
        try:
            name = (d / "name").read_text().strip()
            max_range = int((d / "max_energy_range_uj").read_text())
            int((d / "energy_uj").read_text())
        except PermissionError:
            problems.append(f"{d / 'energy_uj'} is not readable (permission denied)")
            continue
        except (OSError, ValueError) as e:
            problems.append(f"{d}: {e}")
            continue
        kind = name.split("-")[0]
        parent = d.name.split(":")[1]
        device = name if name.startswith("package-") else f"{kind}-{parent}"
        zones.append(Zone(device, kind, d, max_range))
    if zones:
        return zones, ""
    why = "; ".join(problems[:3])
    if any("permission denied" in p for p in problems):
        why += (
            ". Since 2020 (CVE-2020-8694) energy_uj is readable by root only: run as root, or "
            "`sudo chmod a+r /sys/class/powercap/*/energy_uj /sys/class/powercap/*/*/energy_uj`"
        )
    return [], why


def default_zones(root: Path | None = None) -> tuple[list[Zone], str]:
    """The zones sampled by default (package and DRAM: see ``DEFAULT_ZONES``), and, when
    there are none, why."""
    found, why = find_zones(root)
    chosen = [z for z in found if z.kind in DEFAULT_ZONES]
    if found and not chosen:
        why = f"no package or DRAM zone (zones: {', '.join(z.device for z in found)})"
    return chosen, why


def zone_channels(zones: list[Zone]) -> tuple[Channel, ...]:
    """One channel per zone's counter file, in the order the sampler is given the files."""
    return tuple(
        Channel(
            f"rapl.{z.device}",
            z.device,
            "energy",
            "uJ",
            f"RAPL {z.kind} energy counter ({z.energy_file})",
            wrap=z.max_energy_range_uj,
            status_codes="errno",
        )
        for z in zones
    )


def zone_names(zones: list[Zone]) -> dict[str, str]:
    """What each zone measures, in words: the "product" of a host device."""
    what = {"package": "CPU package (RAPL)", "dram": "DRAM (RAPL)"}
    return {z.device: what.get(z.kind, f"RAPL {z.kind}") for z in zones}


class RaplSource(NativeSource):
    """Samples RAPL energy counters (package and DRAM zones by default)."""

    name = "rapl"

    def __init__(
        self,
        zones=DEFAULT_ZONES,
        interval_s: float | None = 1e-3,
        changed_only: bool = False,
        capacity: int = 1 << 20,
        root: Path | None = None,
    ) -> None:
        found, why = find_zones(root)
        if not found:
            raise OSError(f"RAPL is not available: {why}")
        chosen = [z for z in found if z.kind in zones or z.device in zones]
        if not chosen:
            have = ", ".join(z.device for z in found)
            raise ValueError(f"no RAPL zone matches {list(zones)} (zones here: {have})")
        interval_ns = 0 if not interval_s else round(interval_s * 1e9)
        sampler = native_module().Sampler(
            files=[str(z.energy_file) for z in chosen],
            interval_ns=interval_ns,
            changed_only=changed_only,
            capacity=capacity,
        )
        channels = zone_channels(chosen)
        self._zones = chosen
        settings = {
            "root": str(root or powercap_root()),
            "zones": [z.device for z in chosen],
            "interval_ns": interval_ns,
            "changed_only": changed_only,
        }
        super().__init__(sampler, channels, settings)

    def device_names(self) -> tuple[dict[str, str], str | None]:
        return zone_names(self._zones), None

    @classmethod
    def for_measuring(cls, found: Availability, interval_s: float | None = None) -> RaplSource:
        return cls(interval_s=interval_s)

    @classmethod
    def device_lines(cls, d: dict) -> list[str]:
        default = "" if d["default"] else " (not sampled by default: part of another zone)"
        return [f"{d['name']:<12} {d['zone']}, wraps at {d['wraps_at_uj']} uJ{default}"]

    @classmethod
    def probe(cls, root: Path | None = None) -> Availability:
        zones, why = find_zones(root)
        if not zones:
            return Availability(cls.name, False, MEASURES, why)
        devices = tuple(
            {
                "name": z.device,
                "zone": str(z.path),
                "default": z.kind in DEFAULT_ZONES,
                "wraps_at_uj": z.max_energy_range_uj,
            }
            for z in zones
        )
        return Availability(cls.name, True, MEASURES, f"powercap at {root or powercap_root()}", devices)
