"""Attribution: from power readings and kernel timelines to energy per layer.

``phprof.attribution.attribute``: a trace's results (``phprof.store.results``):
energy per layer, kernel, component, phase and inference.
``phprof.attribution.estimate``: each label's power and energy from the
sensor's updates by windowed non-negative least squares, with bootstrap
intervals, or a time-proportional split when the updates cannot tell labels apart.
``phprof.attribution.timeline``: which label was active when.
``phprof.attribution.sensor``: calibrating a sensor from readings under a known load.
``phprof.attribution.runfit``: the sensor's model fitted to a run's own updates.
``phprof.attribution.components``: what part of a network each module is.
``phprof.attribution.rollups``: per inference, per 1,000, per token, carbon.
``phprof.attribution.compare``: runs side by side per component and phase.
``phprof.attribution.excerpt``: a stretch of the run for the power plot.
"""
from .attribute import AttributionError, attribute

__all__ = ["AttributionError", "attribute"]
