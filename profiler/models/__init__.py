"""The study's models and tasks: specs, random-weight builds, synthetic inputs, one inference.

>>> from phprof import models
>>> spec = models.resolve("gpt2")                     # or a path to a config.json
>>> model = models.build(spec, "text-generation")     # random weights, real shapes
>>> inputs = models.make_inputs(spec, "text-generation")
>>> ids = models.infer(model, "text-generation", inputs, new_tokens=10)
>>> models.phase_modules(model, "text-generation")    # {"step": model}
"""
from .factory import (ConfigRejected, Footprint, ModelInfo, ModelTooLarge, WeightsNotFound, available_memory,
                      build, estimate_footprint, generation_phase_modules, infer, list_models, phase_modules,
                      pipeline_phase_modules, tiny)
from .diffusion import TextToImage
from .registry import MODELS, ImageSpec, ModelSpec, UnknownModel, resolve
from .tasks import (TASKS, DatasetShape, TaskSpec, UnsupportedTask, get_task, make_inputs,
                    supported_tasks)

__all__ = [
    "MODELS", "TASKS", "ConfigRejected", "DatasetShape", "Footprint", "ImageSpec", "ModelInfo", "ModelSpec",
    "ModelTooLarge", "TaskSpec", "TextToImage", "UnknownModel", "UnsupportedTask",
    "WeightsNotFound", "available_memory", "build", "estimate_footprint", "generation_phase_modules",
    "get_task", "infer", "list_models", "make_inputs", "phase_modules", "pipeline_phase_modules", "resolve",
    "supported_tasks", "tiny",
]
