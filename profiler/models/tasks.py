"""The study's tasks, their default input shapes, and synthetic inputs of those shapes.

Input lengths are what a tokenizer makes of the study's datasets (special tokens included).
They are estimates from published dataset statistics (words per example, times ~1.3 subword
tokens per English word for BPE/WordPiece/SentencePiece vocabularies), not counts over the
datasets, which are not downloaded here. A task's default is the mean over its three datasets
(each first cut to the model's ``max_len``, as the pipelines truncate), since the study ran
1,000 samples of each; ``dataset=`` picks one dataset's shape instead.

Images: the study resized every image to 640x480 before the pipeline; the model's own
processor then sets the tensor size (``ImageSpec.output_size``): 224x224 for the ViT, BEiT,
ResNet, ConvNeXt V2, GIT and vit-gpt2 processors, 384x384 for BLIP, 800 short side for DETR and
YOLOS-S (800x1066, 800x1056), 512 for YOLOS-Ti (512x672).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .registry import ModelSpec, resolve

__all__ = ["DatasetShape", "TaskSpec", "TASKS", "UnsupportedTask", "get_task",
           "supported_tasks", "check_task", "make_inputs", "default_shape"]


class UnsupportedTask(ValueError):
    """The model has no head for this task (or the task does not exist)."""


@dataclass(frozen=True)
class DatasetShape:
    """Typical input of one dataset: tokens (special tokens included) and new tokens."""

    name: str
    seq_len: int | None = None
    new_tokens: int | None = None
    note: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """One task of the study.

    ``heads``: the transformers Auto classes (by name) that can run it; the first one mapping
    the model's config is used. ``call``: ``"forward"`` (one forward pass), ``"generate"``
    (greedy or beam search for exactly ``new_tokens`` new tokens: min == max, so every
    inference does the same work) or ``"diffusion"`` (text encoder(s), ``steps`` UNet calls
    with classifier-free guidance, VAE decode). ``image_size`` is the (height, width) of the
    raw image before the model's processor.
    """

    name: str
    pipeline: str
    heads: tuple[str, ...]
    call: str
    modality: str
    datasets: tuple[DatasetShape, ...]
    image_size: tuple[int, int] | None = None
    steps: int | None = None
    notes: str = ""

    def shape(self, dataset: str | None = None) -> DatasetShape:
        """The shape of one dataset, or the mean over the task's datasets."""
        if dataset is not None:
            for d in self.datasets:
                if d.name == dataset:
                    return d
            raise ValueError(f"task {self.name!r} has no dataset {dataset!r}; its datasets: "
                             + ", ".join(d.name for d in self.datasets))
        return DatasetShape("mean", _mean(d.seq_len for d in self.datasets),
                            _mean(d.new_tokens for d in self.datasets))


def _mean(values) -> int | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values)) if values else None


_IMG = (480, 640)  # the study's 640x480 (width x height) images
_D = DatasetShape

# Prompt templates of the zero-shot runs, in tokens: "what is the binary sentiment of the
# following sentence? " ~11, a question-answering instruction ~10, "summarize the following
# text: " ~6.
TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("text-classification", "text-classification",
             ("AutoModelForSequenceClassification",), "forward", "text", (
                 _D("imdb", 280, note="reviews ~230 words (Maas et al. 2011); >512 truncated"),
                 _D("sst2", 25, note="sentences ~19 words (Socher et al. 2013)"),
                 _D("rotten_tomatoes", 28, note="sentences ~21 words (Pang & Lee 2005)"))),
    TaskSpec("token-classification", "token-classification",
             ("AutoModelForTokenClassification",), "forward", "text", (
                 _D("conll2003", 24, note="~14.5 words per sentence"),
                 _D("super_glue/record", 220, note="passages ~170 words"),
                 _D("wikiann/en", 14, note="~8 words per sentence"))),
    TaskSpec("question-answering", "question-answering", ("AutoModelForQuestionAnswering",),
             "forward", "text", (
                 _D("squad", 175, note="question ~10 words + paragraph ~120 words"),
                 _D("squad_v2", 175, note="same paragraphs as SQuAD"),
                 _D("sciq", 125, note="question ~14 words + support ~80 words")),
             notes="the pipeline splits contexts past 384 tokens into windows (stride 128); "
             "the default shapes fit one window, so one forward pass."),
    TaskSpec("fill-mask", "fill-mask", ("AutoModelForMaskedLM",), "forward", "text", (
        _D("bookcorpus", 20, note="rows are sentences of ~13 words: fewer than 20"),
        _D("c4/en", 30, note="first 20 words, last one replaced by the mask token"),
        _D("oscar/en", 30, note="first 20 words, last one replaced by the mask token"))),
    TaskSpec("text-generation", "text-generation", ("AutoModelForCausalLM",), "generate",
             "text", (
                 _D("wikitext-103-raw-v1", 30, 10, note="first 20 words (' @-@ ' splits)"),
                 _D("bookcorpus", 18, 10, note="sentences of ~13 words"),
                 _D("oscar/en", 28, 10, note="first 20 words")),
             notes="max_new_tokens=10 (paper)"),
    TaskSpec("summarization", "summarization", ("AutoModelForSeq2SeqLM",), "generate", "text", (
        _D("cnn_dailymail/3.0.0", 900, 14, note="articles ~780 words; cut to max_len"),
        _D("samsum", 125, 14, note="dialogues ~94 words plus speaker names"),
        _D("xsum", 500, 14, note="articles ~430 words")),
        notes="paper: max_length=15, min_length=10. For an encoder-decoder, max_length counts "
        "the decoder start token, so at most 14 tokens are generated; reference summaries are "
        "longer than 15 tokens, so generation nearly always runs to the limit: fixed at 14."),
    TaskSpec("image-classification", "image-classification",
             ("AutoModelForImageClassification",), "forward", "image",
             (_D("cifar10"), _D("cifar100"), _D("imagenet-1k")), image_size=_IMG),
    TaskSpec("object-detection", "object-detection", ("AutoModelForObjectDetection",),
             "forward", "image", (_D("coco2017"), _D("cppe-5"), _D("visual_genome")),
             image_size=_IMG),
    TaskSpec("image-to-text", "image-to-text", ("AutoModelForImageTextToText",), "generate",
             "image", (_D("coco2017", new_tokens=12), _D("red_caps", new_tokens=12),
                       _D("visual_genome", new_tokens=12)), image_size=_IMG,
             notes="the pipeline stops at EOS (ceiling max_length=20); 12 tokens is a typical "
             "greedy caption (~10 words + period), fixed here. Only vision-encoder-decoder, "
             "BLIP and GIT are supported."),
    TaskSpec("text-to-image", "DiffusionPipeline", ("diffusers",), "diffusion", "text-to-image",
             (_D("diffusiondb", 77), _D("ImageRewardDB", 77),
              _D("Stable-Diffusion-Prompts", 77)), steps=50,
             notes="prompts (cut to 50 words) are padded to CLIP's 77 tokens, so all datasets "
             "have one shape; pipeline defaults: 50 steps, classifier-free guidance; the "
             "resolution is the model's (512 SD 1.5 / tiny-sd, 768 SD 2.1, 1024 SDXL)."),
    # ---- zero-shot runs of the multi-purpose models (Flan-T5: text2text-generation; BLOOMz:
    # text-generation), same prompts for both.
    TaskSpec("zero-shot-sentiment", "text2text-generation / text-generation",
             ("AutoModelForSeq2SeqLM", "AutoModelForCausalLM"), "generate", "text", (
                 _D("imdb", 291, 1), _D("sst2", 36, 1), _D("rotten_tomatoes", 39, 1)),
             notes="'what is the binary sentiment of the following sentence? <text>'; "
             "max_new_tokens=1 (paper, BLOOMz)."),
    TaskSpec("zero-shot-qa", "text2text-generation / text-generation",
             ("AutoModelForSeq2SeqLM", "AutoModelForCausalLM"), "generate", "text", (
                 _D("squad", 185, 65), _D("squad_v2", 185, 65), _D("sciq", 135, 65)),
             notes="question + context with an instruction; max_new_tokens=65 (paper, SQuAD; "
             "assumed for squad_v2 and sciq)."),
    TaskSpec("zero-shot-summarization", "text2text-generation / text-generation",
             ("AutoModelForSeq2SeqLM", "AutoModelForCausalLM"), "generate", "text", (
                 _D("cnn_dailymail/3.0.0", 906, 15), _D("samsum", 131, 65),
                 _D("xsum", 506, 65)),
             notes="'summarize the following text: <text>'; max_new_tokens 15 (CNN) and 65 "
             "(XSum) from the paper; 65 assumed for samsum."),
]}

_ALIASES = {
    "sentiment-analysis": "text-classification", "ner": "token-classification",
    "extractive-qa": "question-answering", "qa": "question-answering",
    "masked-lm": "fill-mask", "image-captioning": "image-to-text",
    "image-generation": "text-to-image", "text2text-generation": "zero-shot-qa",
}

_MAPPINGS = {  # Auto class name -> name of transformers' model_type -> class mapping
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSeq2SeqLM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForImageClassification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForObjectDetection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
}
_IMAGE_TO_TEXT = ("vision-encoder-decoder", "blip", "git")


def get_task(task: str | TaskSpec) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    name = _ALIASES.get(task, task)
    if name not in TASKS:
        raise UnsupportedTask(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def head_for(spec: ModelSpec, task: str | TaskSpec) -> str | None:
    """The Auto class name that runs ``task`` for this model, or None if it has no such head."""
    task = get_task(task)
    if spec.library == "diffusers":
        return "diffusers" if task.call == "diffusion" else None
    if task.call == "diffusion":
        return None
    model_type = spec.config["model_type"]
    if task.name == "image-to-text":
        return "AutoModelForImageTextToText" if model_type in _IMAGE_TO_TEXT else None
    from transformers.models.auto import modeling_auto

    for head in task.heads:
        if model_type in getattr(modeling_auto, _MAPPINGS[head]):
            return head
    return None


def supported_tasks(spec: ModelSpec | str) -> list[str]:
    spec = resolve(spec)
    return [name for name in TASKS if head_for(spec, name)]


def check_task(spec: ModelSpec, task: str | TaskSpec | None) -> TaskSpec:
    """The TaskSpec for ``task`` (default: the model's); UnsupportedTask names those it can do."""
    if not task and not spec.task:
        raise UnsupportedTask(
            f"{spec.id} names no architecture (its config has no 'architectures'), so its task is not known: "
            "give it with --task (task= from Python): "
            f"{', '.join(supported_tasks(spec)) or 'it can do none phprof knows'}")
    task = get_task(task or spec.task)
    if head_for(spec, task) is None:
        raise UnsupportedTask(
            f"{spec.id} ({spec.model_type}) cannot do {task.name!r}: it has no such head. "
            f"It can do: {', '.join(supported_tasks(spec)) or 'nothing phprof knows'}")
    return task


def default_shape(spec: ModelSpec, task: TaskSpec, dataset: str | None = None) -> DatasetShape:
    """The task's shape for this model: lengths cut to the model's limit, then averaged."""
    if dataset is not None or spec.max_len is None:
        shape = task.shape(dataset)
        if shape.seq_len is not None and spec.max_len is not None:
            room = spec.max_len
            if _is_causal(spec, task):  # the prompt and the new tokens share the positions
                room -= shape.new_tokens or 0
            shape = DatasetShape(shape.name, min(shape.seq_len, room), shape.new_tokens)
        return shape
    cut = [default_shape(spec, task, d.name) for d in task.datasets]
    return DatasetShape("mean", _mean(d.seq_len for d in cut), _mean(d.new_tokens for d in cut))


def _is_causal(spec: ModelSpec, task: TaskSpec) -> bool:
    return task.call == "generate" and head_for(spec, task) == "AutoModelForCausalLM"


def _random_tokens(spec: ModelSpec, shape: tuple[int, ...], generator) -> torch.Tensor:
    vocab = _text_config(spec).get("vocab_size") or 30522
    n = min(spec.vocab_used or vocab, vocab)
    allowed = torch.ones(n, dtype=torch.bool)
    bad = [i for i in spec.special_ids.values() if 0 <= i < n]
    allowed[bad] = False
    pool = allowed.nonzero().squeeze(1)
    return pool[torch.randint(len(pool), shape, generator=generator)]


def _text_config(spec: ModelSpec) -> dict:
    cfg = spec.config
    if spec.library == "diffusers":
        return cfg["text_encoder"]
    return cfg.get("text_config") or cfg.get("decoder") or cfg


def make_inputs(
    spec: ModelSpec | str,
    task: str | TaskSpec | None = None,
    batch_size: int = 1,
    seq_len: int | None = None,
    new_tokens: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    dataset: str | None = None,
) -> dict[str, torch.Tensor]:
    """Synthetic inputs of the task's shape for this model, with no tokenizer or processor.

    Token ids are uniform over the tokenizer's vocabulary minus the special ids, framed by the
    model's special tokens where its tokenizer adds them; ``seq_len`` counts all tokens.
    ``image_size`` is the (height, width) of ``pixel_values`` (the processor's output; default:
    what the processor makes of the study's 640x480 images) or, for text-to-image, of the
    generated image. ``new_tokens`` only checks that prompt + new tokens fit the model; pass the
    same value to ``infer``. Floating tensors get ``dtype``; everything goes to ``device``.
    """
    spec = resolve(spec)
    task = check_task(spec, task)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if dataset is not None:
        task.shape(dataset)  # raises, naming the task's datasets, if it has no such one
    if task.modality == "image" and seq_len is not None:
        raise ValueError(f"seq_len does not apply to {task.name} (image input)")
    if task.modality == "text" and image_size is not None:
        raise ValueError(f"image_size does not apply to {task.name} (text input)")
    if task.call == "diffusion":
        out = _diffusion_inputs(spec, task, batch_size, seq_len, image_size, gen, dtype)
    elif task.modality == "image":
        out = _image_inputs(spec, task, batch_size, image_size, gen, dtype, new_tokens)
    else:
        out = _text_inputs(spec, task, batch_size, seq_len, new_tokens, gen, dataset)
    return {k: v.to(device) for k, v in out.items()}


def _check_new_tokens(spec, task, new_tokens, prompt_len) -> None:
    if new_tokens is None:
        return
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    causal = _is_causal(spec, task)
    if spec.max_len is not None and causal and prompt_len + new_tokens > spec.max_len:
        raise ValueError(f"{spec.id}: prompt of {prompt_len} + {new_tokens} new tokens exceeds "
                         f"its {spec.max_len} positions")


def _text_inputs(spec, task, batch, seq_len, new_tokens, gen, dataset):
    shape = default_shape(spec, task, dataset)
    seq_len = shape.seq_len if seq_len is None else seq_len
    new_tokens = shape.new_tokens if new_tokens is None else new_tokens
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if spec.max_len is not None and seq_len > spec.max_len:
        raise ValueError(f"seq_len {seq_len} exceeds {spec.id}'s {spec.max_len} positions")
    _check_new_tokens(spec, task, new_tokens, seq_len)
    ids = _random_tokens(spec, (batch, seq_len), gen)
    special = spec.special_ids
    vocab = _text_config(spec).get("vocab_size") or 0
    first = special.get("cls", special.get("bos"))
    last = special.get("sep", special.get("eos"))
    if task.call == "forward" and seq_len >= 2 and first is not None and last is not None:
        ids[:, 0], ids[:, -1] = first, last  # [CLS] ... [SEP] / <s> ... </s>
        if task.name == "fill-mask" and seq_len >= 3 and special.get("mask", 1 << 62) < vocab:
            ids[:, -2] = special["mask"]  # the last word is replaced by the mask
    elif task.call == "generate" and head_for(spec, task) == "AutoModelForSeq2SeqLM":
        if "eos" in special:
            ids[:, -1] = special["eos"]  # T5/BART/Pegasus tokenizers end the input with </s>
    elif spec.config.get("model_type") == "opt" and "bos" in special:
        ids[:, 0] = special["bos"]  # the OPT tokenizer prepends </s>
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if (spec.config.get("type_vocab_size") or 0) >= 2 and task.call == "forward":
        types = torch.zeros_like(ids)
        if task.name == "question-answering":
            types[:, seq_len // 8:] = 1  # question first, then the (longer) context
        out["token_type_ids"] = types
    return out


def _image_size(spec: ModelSpec, task: TaskSpec, image_size) -> tuple[int, int]:
    image = spec.image
    if image is None:
        raise ValueError(f"{spec.id} has no image processor settings")
    native = image.output_size(*task.image_size)
    if image_size is None:
        return native
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size}")
    if image.resize == "fixed" and spec.config.get("model_type") not in ("resnet", "convnextv2"):
        if size != native:  # position embeddings are fixed to the processor's size
            raise ValueError(f"{spec.id} takes {native[0]}x{native[1]} images only, "
                             f"not {size[0]}x{size[1]}")
    if min(size) < 32:
        raise ValueError(f"image_size {size} is too small: 32 pixels at least")
    return size


def _image_inputs(spec, task, batch, image_size, gen, dtype, new_tokens):
    h, w = _image_size(spec, task, image_size)
    mean = torch.tensor(spec.image.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.image.std).view(1, 3, 1, 1)
    raw = torch.rand((batch, 3, h, w), generator=gen)  # pixels in [0, 1] after rescale
    out: dict[str, Any] = {"pixel_values": ((raw - mean) / std).to(dtype)}
    if spec.config.get("model_type") == "detr":
        out["pixel_mask"] = torch.ones((batch, h, w), dtype=torch.long)
    if task.call == "generate":  # the caption starts from one start token
        new = task.shape().new_tokens if new_tokens is None else new_tokens
        if new < 1:
            raise ValueError(f"new_tokens must be >= 1, got {new}")
        if spec.max_len is not None and 1 + new > spec.max_len:
            raise ValueError(f"{new} new tokens exceed {spec.id}'s {spec.max_len} positions")
    return out


def _diffusion_inputs(spec, task, batch, seq_len, image_size, gen, dtype):
    cfg = spec.config
    seq_len = 77 if seq_len is None else seq_len
    if not 2 <= seq_len <= 77:
        raise ValueError(f"text-to-image prompts are 2 to 77 tokens (CLIP), got {seq_len}")
    res = cfg["resolution"] if image_size is None else image_size
    h, w = (res, res) if isinstance(res, int) else tuple(res)
    scale = 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
    if h < scale or w < scale or h % scale or w % scale:
        raise ValueError(f"image_size must be a positive multiple of {scale}, got {h}x{w}")
    bos, eos = spec.special_ids["bos"], spec.special_ids["eos"]

    def prompt(n_words: int) -> torch.Tensor:
        ids = torch.full((batch, seq_len), eos)  # the CLIP tokenizer pads with its eos
        ids[:, 1:n_words + 1] = _random_tokens(spec, (batch, n_words), gen)
        ids[:, 0] = bos
        return ids

    channels = cfg["unet"].get("in_channels", 4)
    out = {"input_ids": prompt(seq_len - 2),
           "latents": torch.randn((batch, channels, h // scale, w // scale), generator=gen)
           .to(dtype)}
    if not cfg.get("force_zeros_for_empty_prompt"):
        out["negative_input_ids"] = prompt(0)  # the empty negative prompt: bos, eos, padding
    return out
