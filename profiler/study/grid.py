"""The study's grid: which (model, task) cells a `phprof study` runs, and how shards split it.

The grid is the study's (docs/paper.md): every model of the catalogue on its own task, and the
multi-purpose models (Flan-T5, BLOOMz) on the three zero-shot tasks as well. ``tasks`` and
``models`` keep only the cells of those; a model that is not in the catalogue (a path to a
config.json or a model directory) runs on its own task, or on each of ``tasks`` it can do.
``quick`` keeps one small model per task (:data:`QUICK`).

The order is fixed (the tasks' order in :data:`phprof.models.TASKS`, then the catalogue's order,
then the other models by name), so that every machine given the same options plans the same grid, and a shard
(``i/n``) is every n-th cell of it from the i-th: a SLURM array of n jobs, each with its own
``--shard``, covers the grid once, the expensive tasks spread over the shards.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import OptionError
from ..models import MODELS, TASKS, UnknownModel, UnsupportedTask, get_task, resolve, supported_tasks

# the study's multi-purpose models run its zero-shot tasks (docs/paper.md, "Zero-shot multi-purpose runs")
ZERO_SHOT_TASKS = ("zero-shot-sentiment", "zero-shot-qa", "zero-shot-summarization")
# the catalogue's smallest model of each task, by parameters (`phprof models` lists them): `--quick`
QUICK = {
    "text-classification": "distilbert-base-uncased-finetuned-sst-2-english",
    "token-classification": "elastic/distilbert-base-cased-finetuned-conll03-english",
    "question-answering": "distilbert-base-uncased-distilled-squad",
    "fill-mask": "albert-base-v2",
    "text-generation": "distilgpt2",
    "summarization": "sshleifer/distilbart-cnn-12-6",
    "image-classification": "microsoft/resnet-18",
    "object-detection": "hustvl/yolos-tiny",
    "image-to-text": "microsoft/git-base",
    "text-to-image": "segmind/tiny-sd",
    "zero-shot-sentiment": "google/flan-t5-base",
    "zero-shot-qa": "google/flan-t5-base",
    "zero-shot-summarization": "google/flan-t5-base",
}
# each zero-shot task against the task-specific task it stands for (the study's comparison)
TASK_SPECIFIC_OF = {"zero-shot-sentiment": "text-classification", "zero-shot-qa": "question-answering",
                    "zero-shot-summarization": "summarization"}


@dataclass(frozen=True)
class Cell:
    """One (model, task) of the grid."""

    model: str  # a catalogue id, or the path the user gave
    task: str
    modality: str  # the task's: text, image, text-to-image
    multi_purpose: bool  # one of the study's multi-purpose models (on a zero-shot task)

    @property
    def key(self) -> str:
        """The cell's folder name: ``TASK/MODEL`` with the model's slashes made safe."""
        return f"{self.task}/{safe_name(self.model)}"


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model).strip("-.") or "model"


def is_multi_purpose(model_id: str) -> bool:
    """The study's multi-purpose models: those of the catalogue whose own task is a zero-shot one."""
    spec = MODELS.get(model_id)
    return spec is not None and spec.task in ZERO_SHOT_TASKS


def plan(tasks=None, models=None, quick: bool = False) -> list[Cell]:
    """The grid's cells, in the study's order (see the module's docstring)."""
    wanted_tasks = None
    if tasks:
        try:
            wanted_tasks = list(dict.fromkeys(get_task(t).name for t in tasks))
        except UnsupportedTask as e:
            raise OptionError(str(e)) from None
    pairs: list[tuple[object, str]] = []
    if models:
        for name in dict.fromkeys(models):
            try:
                spec = resolve(name)
            except UnknownModel as e:
                raise OptionError(str(e)) from None
            own = _own_tasks(spec)
            can = supported_tasks(spec) if spec.id not in MODELS else own
            chosen = [t for t in (wanted_tasks or own) if t in can]
            if not chosen:
                raise OptionError(f"{name}: none of its tasks ({', '.join(own) or 'none'}) is among "
                                  f"--tasks {','.join(wanted_tasks or [])}")
            pairs += [(spec, t) for t in chosen]
    else:
        for spec in MODELS.values():
            pairs += [(spec, t) for t in _own_tasks(spec) if wanted_tasks is None or t in wanted_tasks]
    if not pairs:
        raise OptionError(f"no model of the catalogue does {', '.join(wanted_tasks or [])}")
    if quick:
        pairs = [(spec, t) for spec, t in pairs if QUICK.get(t) == spec.id or spec.id not in MODELS]
    cells = [Cell(spec.id if spec.id in MODELS else str(spec.path or spec.id), task, get_task(task).modality,
                  is_multi_purpose(spec.id)) for spec, task in pairs]
    return sorted(cells, key=grid_order)


_CATALOGUE = {m: i for i, m in enumerate(MODELS)}


def grid_order(cell: Cell) -> tuple:
    """Where a cell stands in the grid: its task's place, then its model's in the catalogue (others by name)."""
    return list(TASKS).index(cell.task), _CATALOGUE.get(cell.model, len(_CATALOGUE)), cell.model


def _own_tasks(spec) -> list[str]:
    if spec.id in MODELS and spec.task in ZERO_SHOT_TASKS:
        return list(ZERO_SHOT_TASKS)
    return [spec.task] if spec.task else []


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) as (i, n); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise OptionError(f"--shard {text!r}: give i/n with 1 <= i <= n (1/4 is the first of four)")
    return int(m.group(1)), int(m.group(2))


def shard(cells: list[Cell], part: tuple[int, int] | None) -> list[Cell]:
    """The cells of shard ``part`` = (i, n): every n-th cell of the grid from the i-th."""
    if part is None:
        return list(cells)
    i, n = part
    return cells[i - 1::n]
