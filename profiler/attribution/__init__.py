"""Attribution: from power readings and kernel timelines to energy per layer.

``phprof.attribution.sensor``: a model of a power sensor (update period,
averaging window, lag) and its fit from readings under a known load.
"""
