"""A coarse kind for every module scope: what part of a network it is.

Rules on the parts of a module's path, innermost first (``transformer.h.0.
attn.c_proj`` is attention because of ``attn``; ``transformer.h.0.mlp.c_fc``
is the MLP because of ``mlp``): the first part that matches a kind decides.
This is the coarse grouping reports and flamegraph colours use; it knows the
naming of the study's architectures (GPT-2, BLOOM, OPT, T5, BART, BERT, ViT,
ResNet, UNet), not their module classes.
"""
from __future__ import annotations

import re

from .timeline import NO_KERNEL, OUTSIDE

KINDS = ("embedding", "attention", "mlp", "norm", "head", "convolution", "other")
_RULES = [  # in order: "word_embeddings_layernorm" is a norm
    ("norm", r"norm|^ln(_\w+)?$|^ln\d*$"),
    ("embedding", r"emb|^wte$|^wpe$|^shared$|^embed_tokens$|^tok_embeddings$"),
    ("attention", r"attn|attention"),
    ("mlp", r"mlp|ffn|feed_?forward|densereludense|^intermediate$|^fc\d*$|^c_fc$|^dense_h_to_4h$|^dense_4h_to_h$"),
    ("head", r"lm_head|classifier|^head$|^heads$|pooler|qa_outputs|^score$"),
    ("convolution", r"conv|downsample|^resnets$|^down_blocks$|^up_blocks$|^mid_block$"),
]
_COMPILED = [(kind, re.compile(rule)) for kind, rule in _RULES]


def component_of(path: str) -> str:
    """The kind of the module at ``path`` (``other`` when no rule matches)."""
    if path in (OUTSIDE, NO_KERNEL):
        return "other"
    for part in reversed(path.lower().split(".")):
        for kind, rule in _COMPILED:
            if rule.search(part):
                return kind
    return "other"
