"""What the renderers render, besides a comparison (``phprof.attribution.compare``).

:class:`Report`: one trace's results and the roll-ups a reader asked for; its
power excerpt (the report page's plot) is computed when a page first asks.
:class:`Flamegraph`: one trace's results as frames, and the trace itself for
the Perfetto timeline. ``phprof.report`` and ``phprof.flamegraph`` make them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from ..store.results import Results, Rollups


@dataclass
class Report:
    """One trace's results, with roll-ups (None: a trace without energy)."""

    results: Results
    rollups: Rollups | None
    excerpt_of: Callable[[], Any] | None = field(default=None, repr=False)  # makes the power excerpt

    VIEW = "report"

    @cached_property
    def excerpt(self):
        """The stretch of the run the report page plots (``phprof.attribution.excerpt``), None if unknown."""
        return None if self.excerpt_of is None or not self.results.has_energy else self.excerpt_of()


@dataclass
class Flamegraph:
    """One trace's frames (from its results) and its timeline (the trace, for Perfetto)."""

    results: Results
    trace: Any = field(default=None, repr=False)  # phprof.store.Trace
    title: str | None = None

    VIEW = "flamegraph"
