"""From measured energy to grams of CO2-equivalent.

Carbon is energy times the carbon intensity of the grid that supplied it:

    g CO2eq = kWh at the device * PUE * g CO2eq per kWh of the grid

The intensity is a yearly average, looked up by a short key in a table that
ships with the package (``data/carbon_intensity.csv``): ISO-3166 country codes
(``fr``, ``us``), ``world``, and cloud regions with their provider's prefix
(``aws:us-west-2``, ``gcp:europe-west4``, ``azure:westeurope``). Each row
names its source and year; the figures are lifecycle averages, except the one
row that reproduces the 2023 "Power Hungry Processing" study. A user who
knows better (a provider's own figure, an hourly value) passes it to
:func:`custom` instead.

The PUE (power usage effectiveness, facility energy over IT energy) scales
what the device drew to what the data centre drew; 1.0 leaves the device's
energy as it is.
"""
from __future__ import annotations

import csv
import difflib
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

DEFAULT_REGION = "world"
JOULES_PER_KWH = 3.6e6
JOULES_PER_WH = 3.6e3
# No grid averages more than this (coal-only grids are near 1,000-1,100 g/kWh
# lifecycle); a larger value is a unit mistake (g/MWh, lb/MWh) rather than a grid.
MAX_G_PER_KWH = 2000.0
KINDS = ("country", "world", "cloud")
_TABLE = "carbon_intensity.csv"
_COLUMNS = ["key", "kind", "name", "g_co2eq_per_kwh", "year", "source"]
# Keys people type that are not the ISO code.
_COMMON_MISTAKES = {"uk": ["gb"], "usa": ["us"]}

# Energy the 2023 study (Luccioni, Jernite, Strubell, "Power Hungry Processing",
# arXiv 2311.16863) reports for training the BLOOMz models: the BLOOM base
# model's pre-training, then the BLOOMz multitask fine-tuning, in kWh. As quoted
# in the project's shared docs/paper.md, section "Headline numbers", paragraph
# "Training vs inference parity"; keys are the model ids of its "Models" list.
STUDY_TRAINING_KWH: dict[str, float] = {
    "bigscience/bloomz-7b1": 51_686.0,
    "bigscience/bloomz-3b": 25_634.0,
    "bigscience/bloomz-1b7": 17_052.0,
    "bigscience/bloomz-560m": 10_505.0,
}
STUDY_FINETUNING_KWH: dict[str, float] = {
    "bigscience/bloomz-7b1": 7_571.0,
    "bigscience/bloomz-3b": 3_242.0,
    "bigscience/bloomz-1b7": 1_081.0,
    "bigscience/bloomz-560m": 543.0,
}


@dataclass(frozen=True)
class CarbonIntensity:
    """A grid's average carbon intensity and where the figure comes from."""

    key: str  # what the user types: "fr", "world", "aws:us-west-2", or "custom"
    name: str  # what the key stands for, for reports
    g_co2eq_per_kwh: float
    year: int | None  # the year the average covers; None for a user-given value
    source: str  # publisher, dataset, method (lifecycle or direct), and grid used
    kind: str = "custom"  # "country", "world", "cloud", or "custom"


class UnknownRegion(ValueError):
    """A region key that the bundled table does not have."""


def parse_table(text: str) -> dict[str, CarbonIntensity]:
    """Rows of a carbon-intensity CSV (``#`` comment lines first, then a header),
    checked: a known kind, a finite value in [0, MAX_G_PER_KWH], a year, a
    source, and lowercase keys that appear once."""
    lines = text.splitlines()
    skipped = 0
    while skipped < len(lines) and (lines[skipped].startswith("#") or not lines[skipped].strip()):
        skipped += 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[skipped:])))
    if reader.fieldnames != _COLUMNS:
        raise ValueError(f"carbon table header is {reader.fieldnames}, expected {_COLUMNS}")
    table: dict[str, CarbonIntensity] = {}
    for row in reader:
        where = f"carbon table line {skipped + reader.line_num}"
        key = row["key"].strip()
        if not key or key != key.lower():
            raise ValueError(f"{where}: key {key!r} must be non-empty and lowercase")
        if key in table:
            raise ValueError(f"{where}: key {key!r} appears twice")
        if row["kind"] not in KINDS:
            raise ValueError(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
        if not row["source"].strip():
            raise ValueError(f"{where}: {key!r} has no source")
        try:
            value = float(row["g_co2eq_per_kwh"])
            year = int(row["year"])
        except ValueError as exc:
            raise ValueError(f"{where}: {key!r}: {exc}") from None
        _check_intensity(value, f"{where}: {key!r}")
        table[key] = CarbonIntensity(key, row["name"], value, year, row["source"], row["kind"])
    return table


@lru_cache(maxsize=1)
def _bundled() -> dict[str, CarbonIntensity]:
    text = resources.files(__package__).joinpath("data", _TABLE).read_text(encoding="utf-8")
    return parse_table(text)


def load_table() -> dict[str, CarbonIntensity]:
    """The bundled table, by key (read once; each call returns a fresh dict)."""
    return dict(_bundled())


def lookup(region: str) -> CarbonIntensity:
    """The grid intensity for a key of the bundled table, in any case:
    ``lookup("FR")``, ``lookup("aws:us-west-2")``."""
    key = region.strip().lower()
    table = _bundled()
    if key in table:
        return table[key]
    raise UnknownRegion(_unknown_message(region, table))


def _unknown_message(region: str, table: dict[str, CarbonIntensity]) -> str:
    key = region.strip().lower()
    # "us-west-2" is a region of several providers: offer each provider's key.
    suggestions = [k for k in table if k.rsplit(":", 1)[-1] == key]
    suggestions += _COMMON_MISTAKES.get(key, [])
    suggestions += difflib.get_close_matches(key, list(table), n=5, cutoff=0.6)
    by_name = {row.name.lower(): k for k, row in table.items()}
    suggestions += [by_name[n] for n in difflib.get_close_matches(key, list(by_name), n=3, cutoff=0.7)]
    suggestions = list(dict.fromkeys(suggestions))[:5]
    hint = f" Did you mean {', '.join(repr(k) for k in suggestions)}?" if suggestions else ""
    return (
        f"unknown region {region!r}.{hint} The table has {len(table)} keys: ISO country codes "
        f"('fr', 'us'), 'world', and cloud regions as 'provider:region' ('aws:us-east-1'); "
        f"phprof.carbon.load_table() lists them all. Or give the grid's intensity in gCO2eq/kWh "
        f"with phprof.carbon.custom()."
    )


def custom(g_per_kwh: float) -> CarbonIntensity:
    """A grid intensity the user knows, in gCO2eq/kWh (a provider's published
    figure, a real-time value): 0 to MAX_G_PER_KWH."""
    value = float(g_per_kwh)
    _check_intensity(value, "custom carbon intensity")
    return CarbonIntensity("custom", f"user-given {value:g} gCO2eq/kWh", value, None, "given by the user")


def _check_intensity(value: float, what: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: {value} gCO2eq/kWh is not a carbon intensity (finite, >= 0)")
    if value > MAX_G_PER_KWH:
        raise ValueError(
            f"{what}: {value:g} gCO2eq/kWh is above any grid's average ({MAX_G_PER_KWH:g}); "
            "was it given in g/MWh or lb/MWh?"
        )


def joules_to_kwh(joules: float) -> float:
    """Energy in kilowatt-hours (1 kWh = 3.6 MJ)."""
    return joules / JOULES_PER_KWH


def joules_to_wh(joules: float) -> float:
    """Energy in watt-hours (1 Wh = 3.6 kJ)."""
    return joules / JOULES_PER_WH


def _check_pue(pue: float) -> None:
    if not pue >= 1.0:  # also rejects NaN
        raise ValueError(f"PUE {pue} is below 1.0: a data centre cannot draw less than its IT equipment")
    if not math.isfinite(pue):
        raise ValueError(f"PUE {pue} must be finite")


def carbon_g(joules: float, intensity: CarbonIntensity, pue: float = 1.0) -> float:
    """Grams of CO2-equivalent for ``joules`` measured at the device, on a grid
    of the given intensity, in a facility of the given PUE."""
    if not (joules >= 0 and math.isfinite(joules)):
        raise ValueError(f"energy {joules} J must be finite and >= 0")
    _check_pue(pue)
    return joules_to_kwh(joules) * pue * intensity.g_co2eq_per_kwh


def inferences_to_parity(training_kwh: float, joules_per_inference: float, pue: float = 1.0) -> float:
    """How many inferences use as much energy as training did: the study's
    "parity" figure (training + fine-tuning kWh over kWh per inference).

    ``pue`` scales each inference's device energy to facility energy; the
    training figure is taken as given.
    """
    if not (training_kwh > 0 and math.isfinite(training_kwh)):
        raise ValueError(f"training energy {training_kwh} kWh must be finite and > 0")
    if not (joules_per_inference > 0 and math.isfinite(joules_per_inference)):
        raise ValueError(f"energy per inference {joules_per_inference} J must be finite and > 0")
    _check_pue(pue)
    return training_kwh / (joules_to_kwh(joules_per_inference) * pue)
