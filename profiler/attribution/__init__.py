"""Attribution: from power readings and kernel timelines to energy per layer.

``phprof.attribution.sensor``: a model of a power sensor (update period,
averaging window, lag) and its fit from readings under a known load.
``phprof.attribution.aliasing``: whether the sensor's windows see every part
of the inferences, and the pauses that make them.
``phprof.attribution.estimate``: each label's power and energy from the
sensor's updates by windowed non-negative least squares, with bootstrap
intervals, or a time-proportional split when the updates cannot tell labels apart.
"""
from .attribute import Attribution, AttributionError, attribute, load_sensor_model  # noqa: E402

__all__ = ["Attribution", "AttributionError", "attribute", "load_sensor_model"]
