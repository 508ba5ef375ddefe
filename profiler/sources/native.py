"""Sources whose readings come from the native sampling thread (phprof._sampler)."""
from __future__ import annotations

import numpy as np

from .base import READING_DTYPE, Channel, PowerSource


def native_module():
    """phprof._sampler, or a clear error when the extension was not built."""
    try:
        from phprof import _sampler
    except ImportError as e:  # pragma: no cover - a broken install
        raise ImportError(
            f"phprof's native sampler is not built ({e}); reinstall with `pip install -e .` from the repository"
        ) from None
    return _sampler


class NativeSource(PowerSource):
    """A power source driven by one native ``Sampler``."""

    def __init__(self, sampler, channels: tuple[Channel, ...], settings: dict) -> None:
        super().__init__(channels, settings)
        self._sampler = sampler
        self._dropped_seen = 0

    @property
    def running(self) -> bool:
        # the native thread's own state: in a forked child it is not running
        return self._sampler.running

    def _start(self) -> None:
        self._sampler.start()

    def _stop(self) -> None:
        self._sampler.stop()

    def _take(self) -> tuple[np.ndarray, int]:
        readings = np.frombuffer(self._sampler.drain(), dtype=READING_DTYPE)
        dropped = self._sampler.stats()["dropped"]
        new, self._dropped_seen = dropped - self._dropped_seen, dropped
        return readings, new

    def stats(self) -> dict:
        """The sampling thread's counters: polls, stored, dropped, late, thread_cpu_ns, ..."""
        return self._sampler.stats()
