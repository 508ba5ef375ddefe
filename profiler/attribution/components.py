"""The component taxonomy: what part of a network each module is.

Every module gets a component (embeddings, self-attention, cross-attention,
mlp, router, experts, norm, head, convolution, other), a part inside attention
(projections, scores, output) and a stack (encoder, decoder, unet, vae,
text_encoder, or "" when the model has one stack only). A mixture-of-experts
layer is two components: its ``router`` (the gate that picks the experts, and
the sparse block's own dispatch) and its ``experts``.

Rules match a module's class name (``type``) and the last part of its path
(``name``, e.g. ``c_attn``). A module is decided at the innermost level that a
rule matches, walking from the module out through its parents: ``transformer.
h.0.attn.c_attn`` (a ``Conv1D``, which no rule names) is self-attention because
its parent ``attn`` is a ``GPT2Attention``. Structural modules (blocks, stacks,
the model itself, dropout) are "other" by explicit rules that apply to the
module itself only, never to its children. Two kinds of module take their
place from around them: an activation (``act_fn``, ``SiLUActivation``) is its
parent's component (an MLP's activation is mlp), or mlp beside ``fc1`` and
``fc2`` (Whisper, BART), convolution beside a ``conv_out``, else other; a
module directly under a task model (``...ForConditionalGeneration``) that no
rule names is its head (Whisper's ``proj_out``). A module that no rule reaches
is "other" and ``unclassified``.

The built-in rules know the study's architectures (GPT-2, BLOOM, OPT, GPT-Neo,
T5, BART, Pegasus, the BERT family, ViT, DETR, ResNet, ConvNeXt, the Stable
Diffusion UNet, VAE and CLIP text encoder) and today's (Llama, Mistral, Qwen2,
Gemma, Phi-3, Mixtral and Qwen-MoE, Whisper, CLIP, the SDXL UNet). Rotary
position embeddings are self-attention: they rotate its queries and keys. The
model itself (``GPT2LMHeadModel`` as ``LlamaForCausalLM``) is other. A user
adds rules for a new architecture without touching the package: a JSON file
named by the ``PHPROF_TAXONOMY`` environment variable (or given to
:meth:`Taxonomy.load`),

    {"rules": [{"component": "mlp", "type": "MyFeedForward"},
               {"component": "self-attention", "name": "^my_attn$"}],
     "stacks": [{"stack": "decoder", "name": "^my_decoder$"}]}

whose rules are tried before the built-in ones (regular expressions, searched).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..store.results import Role

COMPONENTS = ("embeddings", "self-attention", "cross-attention", "mlp", "router", "experts", "norm", "head",
              "convolution", "other")
_NOT_MODULES = {r.label for r in Role if r is not Role.MODULE}
ENV = "PHPROF_TAXONOMY"

# (component, type regex, name regex): a rule matches when every regex it has is found.
# Order matters within one level: cross-attention before self-attention, SelfOutput before Output.
_BUILTIN_RULES: list[tuple[str, str | None, str | None]] = [
    ("norm", r"Norm(2d)?$|LayerNorm|GroupNorm|RMSNorm|BatchNorm", None),
    ("norm", None, r"^(ln(_\w+|\d*)|\w*norm\w*|layer_norm\w*)$"),
    ("cross-attention", r"CrossAttention|EncDecAttention", None),
    ("cross-attention", None, r"^(encoder_attn|crossattention|EncDecAttention|attn2|cross_attn)$"),
    ("self-attention", r"SelfOutput$", None),  # BERT family: the attention's output projection
    ("self-attention", r"RotaryEmbedding|RotaryEmb$", None),  # positions of queries and keys, not a lookup
    ("self-attention", None, r"^(rotary_emb|rotary_embedding|rope)$"),
    ("self-attention", r"Attention", None),
    ("self-attention", None, r"^(attn|attn1|attention|self_attn|SelfAttention|self_attention)$"),
    # mixture of experts: the router (and the sparse block's own dispatch), then the experts
    ("router", r"Router$|SparseMoeBlock$|MoeBlock$|^MoE$", None),
    ("router", None, r"^(router|shared_expert_gate)$"),
    ("router", r"^Linear$", r"^gate$"),  # a MoE block's gate (an MLP's is gate_proj)
    ("experts", r"Experts$|SparseTop2MLP$|ExpertMLP$|Expert$", None),
    ("experts", None, r"^(experts|shared_experts?)$"),
    ("mlp", r"MLP|FeedForward|^FFN$|DenseReluDense|DenseGatedActDense|Intermediate$|LayerFF|GEGLU|"
            r"(?<!Self)Output$", None),
    ("mlp", None, r"^(mlp|ffn|ff|fc1|fc2|intermediate|DenseReluDense|dense_h_to_4h|dense_4h_to_h)$"),
    ("embeddings", r"Embedding|Timesteps$|PatchEmbed", None),
    ("embeddings", None, r"^(wte|wpe|embed_tokens|embed_positions|shared|embeddings|word_embeddings|"
                         r"position_embeddings|patch_embed|time_proj|time_embedding)$"),
    ("head", r"Head(?!Model$)|Pooler|Classifier|PredictionHead", None),  # GPT2LMHeadModel is the model
    ("head", None, r"^(lm_head|classifier|qa_outputs|score|pooler|class_labels_classifier|bbox_predictor|"
                   r"text_projection|visual_projection|head|heads)$"),
    ("convolution", r"Conv[123]d|ConvLayer|ConvNext|ResnetBlock|ResNet\w*Layer|ResNetShortCut|Downsample|"
                    r"Down\w*Block|Up\w*Block|Upsample|MidBlock|Bottleneck|Pool2d|ConvEncoder", None),
    ("convolution", None, r"^(conv\w*|resnets|downsamplers|upsamplers|shortcut|downsample|stem)$"),
    # structural: the model, its stacks and blocks, containers, dropout
    ("other", r"Dropout|DropPath|Identity|ModuleList|Sequential|Block$|Layer$|LayerGroup$|Stack$|Model$|"
              r"ModelWithProjection$|ForCausalLM$|LMHeadModel$|ForConditionalGeneration$|"
              r"ForSequenceClassification$|ForQuestionAnswering$|ForTokenClassification$|ForImage\w+$|"
              r"ForObjectDetection$|Encoder$|Decoder$|Transformer$|Transformer2DModel$|Pipeline$|"
              r"Flatten$|Stage$|Embeddings?Model$|Projection$|For\w+$|"
              r"TextToImage$|VaeDecode$|AutoencoderKL$", None),
]
# an activation is its surroundings' (see the module's docstring), by class or by name
_ACTIVATION = re.compile(r"GELU|ReLU|SiLU|Tanh|Sigmoid|Swish|Mish|Activation$")
_ACTIVATION_NAME = re.compile(r"^(act|act_fn|activation|activation_fn|nonlinearity|actfn)$")
# what an activation is beside, when no parent says (a block without an MLP module, a UNet's output)
_NEIGHBOURS = (("mlp", re.compile(r"^(fc1|fc2|fc_in|fc_out)$")), ("convolution", re.compile(r"^conv\w*$")))
_TASK_MODEL = re.compile(r"For\w+$|LMHeadModel$")
_BUILTIN_STACKS: list[tuple[str, str | None, str | None]] = [
    ("text_encoder", None, r"^(text_encoder|text_encoder_2|text_model)$"),  # CLIPModel's text_model too
    ("unet", None, r"^unet$"),
    ("vae", None, r"^vae$"),
    ("encoder", None, r"^(encoder|vision_model|vision_encoder|image_encoder|backbone)$"),
    ("decoder", r"^(?!Linear$)", r"^(decoder|text_decoder)$"),  # not an MLM head's Linear named decoder
]
_PROJECTIONS = re.compile(r"^(q|k|v|query|key|value|c_attn|query_key_value|q_proj|k_proj|v_proj|qkv|qkv_proj|in_proj|"
                          r"to_q|to_k|to_v|q_lin|k_lin|v_lin|in_proj_.*)$")
_OUTPUTS = re.compile(r"^(o|o_proj|out_proj|c_proj|dense|out_lin|to_out|output|proj_out|wo)$")
_DECODER_ONLY = re.compile(r"ForCausalLM$|LMHeadModel$")


@dataclass(frozen=True)
class Component:
    component: str  # one of COMPONENTS
    part: str  # inside attention: projections | scores | output | ""
    stack: str  # encoder | decoder | unet | vae | text_encoder | ""
    unclassified: bool = False  # no rule reached this module


@dataclass(frozen=True)
class _Rule:
    result: str
    type_re: re.Pattern | None
    name_re: re.Pattern | None

    def matches(self, type_name: str, name: str) -> bool:
        if self.type_re is None and self.name_re is None:
            return False
        return ((self.type_re is None or bool(self.type_re.search(type_name)))
                and (self.name_re is None or bool(self.name_re.search(name))))


def _compile(rows, key: str, allowed) -> list[_Rule]:
    out = []
    for row in rows:
        result = row[key] if isinstance(row, dict) else row[0]
        if result not in allowed:
            raise ValueError(f"unknown {key} {result!r} in a taxonomy rule (known: {', '.join(allowed)})")
        type_re = row.get("type") if isinstance(row, dict) else row[1]
        name_re = row.get("name") if isinstance(row, dict) else row[2]
        if type_re is None and name_re is None:
            raise ValueError(f"a taxonomy rule needs a 'type' or a 'name' pattern: {row!r}")
        try:
            out.append(_Rule(result, re.compile(type_re) if type_re else None,
                             re.compile(name_re) if name_re else None))
        except re.error as e:
            raise ValueError(f"bad pattern in the taxonomy rule {row!r}: {e}") from None
    return out


_STACKS = ("encoder", "decoder", "unet", "vae", "text_encoder")


class Taxonomy:
    """Rules, the user's first; :meth:`classify` decides a module."""

    def __init__(self, rules: list[_Rule], stacks: list[_Rule], source: str = "built-in") -> None:
        self.rules = rules
        self.stacks = stacks
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None) -> Taxonomy:
        """The built-in rules, after those of ``path`` (default: the file named by
        ``PHPROF_TAXONOMY``, if set)."""
        path = path or os.environ.get(ENV)
        rules = _compile(_BUILTIN_RULES, "component", COMPONENTS)
        stacks = _compile(_BUILTIN_STACKS, "stack", _STACKS)
        if not path:
            return cls(rules, stacks)
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"no such taxonomy file: {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from None
        user = _compile(data.get("rules", []), "component", COMPONENTS)
        user_stacks = _compile(data.get("stacks", []), "stack", _STACKS)
        return cls(user + rules, user_stacks + stacks, f"{path}, then built-in")

    def classify(self, path: str, types: dict[str, str]) -> Component:
        """The component of the module at ``path``; ``types``: class name by module path
        (the root, path "", too)."""
        if path in _NOT_MODULES:
            return Component("other", "", "")
        parts = path.split(".") if path else []
        stack = self._stack(parts, types)
        activation = bool(parts) and (_ACTIVATION.search(types.get(path, "")) is not None
                                      or _ACTIVATION_NAME.match(parts[-1]) is not None)
        # an activation is decided by its parents, not by itself
        for level in range(len(parts) - activation, -1, -1):  # the module itself, then each parent
            prefix = ".".join(parts[:level])
            type_name = types.get(prefix, "")
            name = parts[level - 1] if level else ""
            for rule in self.rules:
                if rule.result == "other" and level < len(parts):
                    continue  # a structural module (a block, the model) says nothing of its children
                if rule.matches(type_name, name):
                    part = ""
                    if rule.result in ("self-attention", "cross-attention"):
                        part = _attention_part(parts, level, type_name)
                    return Component(rule.result, part, stack)
        if activation:  # beside an MLP's fc1 and fc2 (Whisper, BART), a UNet's conv_out...
            parent = ".".join(parts[:-1])
            siblings = [p.rpartition(".")[2] for p in types if p and p.rpartition(".")[0] == parent]
            near = next((c for c, pattern in _NEIGHBOURS if any(pattern.match(n) for n in siblings)), "other")
            return Component(near, "", stack)
        if len(parts) == 1 and _TASK_MODEL.search(types.get("", "")):  # a task model's own output layer
            return Component("head", "", stack)
        return Component("other", "", stack, unclassified=True)

    def _stack(self, parts: list[str], types: dict[str, str]) -> str:
        for level in range(1, len(parts) + 1):
            name, type_name = parts[level - 1], types.get(".".join(parts[:level]), "")
            for rule in self.stacks:
                if rule.matches(type_name, name):
                    return rule.result
        return "decoder" if _DECODER_ONLY.search(types.get("", "")) else ""


def _attention_part(parts: list[str], level: int, type_name: str) -> str:
    """Inside an attention module: the projections into queries, keys and values, its
    own work (scores, softmax, the weighted sum), and the projection out."""
    if re.search(r"SelfOutput$", type_name):
        return "output"
    if level == len(parts):  # the attention module itself: its own time
        return "scores"
    child = parts[level]
    if _PROJECTIONS.match(child):
        return "projections"
    if _OUTPUTS.match(child):
        return "output"
    return "scores"
