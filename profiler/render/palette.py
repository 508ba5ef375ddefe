"""One palette for every page: the colour of each kind of frame.

A frame's kind is its component's (several components share one: self- and
cross-attention are both "attention"), or what it is when it is not a module
(a kernel or op, a merge of small frames). The flamegraph's script reads the
palette from the page's data, the static plots from here: one colour per kind
on every page.
"""
from __future__ import annotations

# component (phprof.attribution.components.COMPONENTS) -> its kind
KIND_OF = {"embeddings": "embedding", "self-attention": "attention", "cross-attention": "attention",
           "mlp": "mlp", "router": "mlp", "experts": "mlp", "norm": "norm", "head": "head",
           "convolution": "convolution", "other": "other"}

# kind -> (legend name, (hue, saturation %, lightness %)): pale enough for dark labels
KINDS = {
    "attention": ("attention", (18, 85, 68)),
    "mlp": ("MLP", (212, 70, 72)),
    "norm": ("norm", (135, 45, 68)),
    "embedding": ("embedding", (275, 55, 76)),
    "head": ("head", (330, 65, 76)),
    "convolution": ("convolution", (30, 45, 62)),
    "other": ("other", (220, 10, 76)),
    "kernel": ("kernel / op", (50, 90, 62)),
    "op": ("kernel / op", (50, 90, 62)),
    "device": ("its part on one GPU", (190, 35, 82)),
    "collapsed": ("merged small frames", (0, 0, 88)),
}
UNKNOWN = "#9aa0a6"  # a kind the palette lacks


def kind_of(component: str) -> str:
    return KIND_OF.get(component, "other")


def colour(kind: str) -> str:
    """The CSS colour of a kind."""
    if kind not in KINDS:
        return UNKNOWN
    h, s, l = KINDS[kind][1]
    return f"hsl({h},{s}%,{l}%)"


# the study's tasks (phprof.models.TASKS), one colour each on the study's page: text tasks blue to
# green, image tasks warm, image generation red, the zero-shot tasks purple
TASK_COLOURS = {
    "text-classification": "#1f77b4", "token-classification": "#17becf", "question-answering": "#2ca02c",
    "fill-mask": "#98df8a", "text-generation": "#006d5b", "summarization": "#7f7f7f",
    "image-classification": "#ff7f0e", "object-detection": "#e6ab02", "image-to-text": "#8c564b",
    "text-to-image": "#d62728", "zero-shot-sentiment": "#9467bd", "zero-shot-qa": "#c5b0d5",
    "zero-shot-summarization": "#e377c2",
}


def task_colour(task: str) -> str:
    return TASK_COLOURS.get(task, UNKNOWN)
