"""The built-in table of the study's models, and resolution of a model name or config file.

Every built-in entry holds the hyperparameters of the real checkpoint, copied from its
Hugging Face ``config.json`` (``source`` names the file), so that a model built with random
weights has the real shapes: energy depends on shapes, not on weight values. Entries for the
diffusion pipelines hold the configs of the pipeline's components (text encoders, UNet, VAE,
scheduler), from the files under the repository's ``text_encoder/``, ``unet/``, ``vae/`` and
``scheduler/`` folders.

Names resolve case-insensitively, by full id (``facebook/opt-6.7b``), by the part after the
organisation when that is unique (``opt-6.7b``), or by a Hub alias (``openai-community/gpt2``).
A path to a ``config.json``, or to a model directory holding one (or a diffusers directory with a
``model_index.json``), gives a spec for any architecture transformers (or diffusers) can build.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ImageSpec", "ModelSpec", "UnknownModel", "MODELS", "resolve"]


class UnknownModel(ValueError):
    """A model name that is neither a built-in id nor a path to a config."""


@dataclass(frozen=True)
class ImageSpec:
    """What the model's image processor makes of an input image.

    ``resize="fixed"``: every image becomes ``size`` = (height, width) (resize, or resize then
    centre crop: ViT, BEiT, BLIP, ResNet/ConvNeXt with crop_pct, CLIP). ``resize="shortest_edge"``:
    the short side becomes ``size`` (an int) unless the long side would pass ``max_size``,
    keeping the aspect ratio (DETR, YOLOS), then both sides are floored to a multiple of
    ``multiple`` when set (YOLOS: 16). ``mean``/``std`` are the normalisation constants.
    """

    resize: str
    size: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_size: int | None = None
    multiple: int | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of ``pixel_values`` for an input image of this size."""
        if self.resize == "fixed":
            return tuple(self.size)
        # Same arithmetic as transformers.image_transforms.get_size_with_aspect_ratio.
        size, short, long = self.size, min(height, width), max(height, width)
        raw = None
        if self.max_size is not None and long / short * size > self.max_size:
            raw = self.max_size * short / long
            size = int(round(raw))
        scale = raw if raw is not None else size
        if (height <= width and height == size) or (width <= height and width == size):
            oh, ow = height, width
        elif width < height:
            oh, ow = int(scale * height / width), size
        else:
            oh, ow = size, int(scale * width / height)
        if self.multiple:
            oh, ow = oh - oh % self.multiple, ow - ow % self.multiple
        return oh, ow


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One model: what to build, with which shapes, and where the numbers come from.

    ``config`` is, for ``library="transformers"``, the keyword arguments of the transformers
    config (``model_type`` included; nested configs as dicts with their own ``model_type``); for
    ``library="diffusers"``, one dict per pipeline component plus pipeline settings.
    ``max_len`` is the longest token sequence the model takes (position table, or the
    tokenizer's limit for relative-position models). ``special_ids`` are never drawn as random
    tokens; ``vocab_used`` is the tokenizer's size where the embedding table is padded past it.
    ``num_beams`` is the checkpoint's own generation default (the study's pipelines used it).
    """

    id: str
    task: str
    config: Mapping[str, Any]
    source: str
    library: str = "transformers"
    max_len: int | None = None
    special_ids: Mapping[str, int] = field(default_factory=dict)
    vocab_used: int | None = None
    image: ImageSpec | None = None
    num_beams: int = 1
    aliases: tuple[str, ...] = ()
    notes: str = ""
    path: str | None = None  # local directory (or config file) it was read from
    size: str = "full"

    @property
    def model_type(self) -> str:
        if self.library == "diffusers":
            return self.config["pipeline"]
        return self.config["model_type"]

    def __repr__(self) -> str:
        return f"ModelSpec({self.id!r}, {self.model_type}, task={self.task!r}, size={self.size!r})"


# --------------------------------------------------------------------------- constants
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # IMAGENET_DEFAULT_MEAN/STD
STANDARD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # IMAGENET_STANDARD_MEAN/STD
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

BERT_IDS = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}  # bert-base-(un)cased vocab
ROBERTA_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 50264}
XLMR_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 250001}
GPT2_IDS = {"eos": 50256}
BLOOM_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": 3}
OPT_IDS = {"pad": 1, "bos": 2, "eos": 2}
BART_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "mask": 50264}
T5_IDS = {"pad": 0, "eos": 1, "unk": 2}
CLIP_TEXT_IDS = {"bos": 49406, "eos": 49407}


def _src(repo: str, folder: str = "") -> str:
    return f"https://huggingface.co/{repo}/blob/main/{folder}config.json"


# --------------------------------------------------------------------------- family helpers
# Each helper takes the numbers that set shapes explicitly; everything else is the checkpoint's
# value where it differs from the transformers default, passed through **extra.

def _distilbert(vocab: int, **extra) -> dict:
    return dict(model_type="distilbert", vocab_size=vocab, dim=768, n_layers=6, n_heads=12,
                hidden_dim=3072, max_position_embeddings=512, activation="gelu", **extra)


def _bert(vocab: int, hidden: int, layers: int, heads: int, inter: int, **extra) -> dict:
    return dict(model_type="bert", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=512,
                type_vocab_size=2, **extra)


def _roberta(hidden: int, layers: int, heads: int, inter: int, *, model_type="roberta",
             vocab=50265, **extra) -> dict:
    return dict(model_type=model_type, vocab_size=vocab, hidden_size=hidden,
                num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
                max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, **extra)


def _gpt2(n_embd: int, n_layer: int, n_head: int, **extra) -> dict:
    return dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=n_embd,
                n_layer=n_layer, n_head=n_head, bos_token_id=50256, eos_token_id=50256, **extra)


def _bloom(hidden: int, n_layer: int, n_head: int) -> dict:
    return dict(model_type="bloom", vocab_size=250880, hidden_size=hidden, n_layer=n_layer,
                n_head=n_head, layer_norm_epsilon=1e-5, bos_token_id=1, eos_token_id=2,
                pad_token_id=3)


def _opt(hidden: int, layers: int, heads: int, ffn: int) -> dict:
    return dict(model_type="opt", vocab_size=50272, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, ffn_dim=ffn, max_position_embeddings=2048,
                word_embed_proj_dim=hidden, do_layer_norm_before=True, activation_function="relu",
                pad_token_id=1, bos_token_id=2, eos_token_id=2)


def _bart(enc_layers: int, dec_layers: int, **extra) -> dict:
    return dict(model_type="bart", vocab_size=50264, d_model=1024, encoder_layers=enc_layers,
                decoder_layers=dec_layers, encoder_attention_heads=16, decoder_attention_heads=16,
                encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
                activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
                decoder_start_token_id=2, forced_eos_token_id=2, **extra)


def _t5(d_model: int, d_ff: int, heads: int, layers: int) -> dict:
    return dict(model_type="t5", vocab_size=32128, d_model=d_model, d_ff=d_ff, d_kv=64,
                num_heads=heads, num_layers=layers, num_decoder_layers=layers,
                feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def _resnet(hidden_sizes: list[int], depths: list[int], layer_type: str, **extra) -> dict:
    return dict(model_type="resnet", num_channels=3, embedding_size=64, hidden_sizes=hidden_sizes,
                depths=depths, layer_type=layer_type, hidden_act="relu",
                downsample_in_first_stage=False, **extra)


def _vit(hidden=768, layers=12, heads=12, inter=3072, image=224, **extra) -> dict:
    return dict(model_type="vit", hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=inter, image_size=image,
                patch_size=16, num_channels=3, qkv_bias=True, layer_norm_eps=1e-12, **extra)


def _detr(depths: list[int]) -> dict:
    # The Hub config names a timm backbone ("use_timm_backbone": true, "backbone": "resnet50"/
    # "resnet101"); the same ResNet is built here with transformers' own ResNetBackbone so that
    # timm is not needed. Same layers and parameter count; DETR freezes the backbone's batch norms.
    backbone = _resnet([256, 512, 1024, 2048], depths, "bottleneck",
                       out_features=["stage1", "stage2", "stage3", "stage4"])
    return dict(model_type="detr", backbone_config=backbone, num_queries=100, d_model=256,
                encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                activation_function="relu", position_embedding_type="sine", dilation=False,
                num_labels=91)


def _yolos(hidden: int, heads: int, mid_pe: bool, pe_size: list[int]) -> dict:
    # image_size sets the position-embedding grid (interpolated to the real input at run time)
    return dict(model_type="yolos", hidden_size=hidden, num_hidden_layers=12,
                num_attention_heads=heads, intermediate_size=4 * hidden, image_size=pe_size,
                patch_size=16, num_detection_tokens=100, use_mid_position_embeddings=mid_pe,
                num_labels=91)


def _clip_text(hidden: int, layers: int, heads: int, inter: int, act: str, proj: int) -> dict:
    return dict(vocab_size=49408, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=inter, hidden_act=act,
                max_position_embeddings=77, projection_dim=proj, layer_norm_eps=1e-5,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)  # as in the SD configs


SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
              block_out_channels=[128, 256, 512, 512], norm_num_groups=32, act_fn="silu",
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              scaling_factor=0.18215)
SD_UNET_BLOCKS = dict(
    in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, norm_num_groups=32)
SCALED_LINEAR = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                     beta_schedule="scaled_linear", steps_offset=1)
PNDM = dict(_class_name="PNDMScheduler", skip_prk_steps=True, set_alpha_to_one=False,
            **SCALED_LINEAR)
SD15_TEXT = _clip_text(768, 12, 12, 3072, "quick_gelu", 768)  # CLIP ViT-L/14 text tower


def _diffusion(repo, *, text_encoder, unet, vae, scheduler, resolution, guidance,
               text_encoder_2=None, pipeline="StableDiffusionPipeline", zero_negative=False,
               notes="", aliases=()) -> ModelSpec:
    cfg = dict(pipeline=pipeline, text_encoder=text_encoder, unet=unet, vae=vae,
               scheduler=scheduler, resolution=resolution, guidance_scale=guidance,
               force_zeros_for_empty_prompt=zero_negative)
    if text_encoder_2 is not None:
        cfg["text_encoder_2"] = text_encoder_2
    return ModelSpec(repo, "text-to-image", cfg, _src(repo, "unet/"), library="diffusers",
                     max_len=77, special_ids=CLIP_TEXT_IDS, notes=notes, aliases=aliases)


def _m(id, task, config, *, aliases=(), **kw) -> ModelSpec:
    return ModelSpec(id, task, config, _src(id), aliases=tuple(aliases), **kw)


# --------------------------------------------------------------------------- the table
_FIXED224 = dict(resize="fixed", size=(224, 224))
_TABLE: list[ModelSpec] = [
    # ---- text classification (text-classification pipeline)
    _m("distilbert-base-uncased-finetuned-sst-2-english", "text-classification",
       _distilbert(30522, num_labels=2), max_len=512, special_ids=BERT_IDS,
       aliases=["distilbert/distilbert-base-uncased-finetuned-sst-2-english"]),
    _m("cardiffnlp/twitter-roberta-base-sentiment", "text-classification",
       _roberta(768, 12, 12, 3072, num_labels=3), max_len=512, special_ids=ROBERTA_IDS),
    _m("siebert/sentiment-roberta-large-english", "text-classification",
       _roberta(1024, 24, 16, 4096, num_labels=2), max_len=512, special_ids=ROBERTA_IDS),
    # ---- token classification
    _m("elastic/distilbert-base-cased-finetuned-conll03-english", "token-classification",
       _distilbert(28996, num_labels=9), max_len=512, special_ids=BERT_IDS),
    _m("xlm-roberta-large-finetuned-conll03-english", "token-classification",
       _roberta(1024, 24, 16, 4096, model_type="xlm-roberta", vocab=250002, num_labels=8),
       max_len=512, special_ids=XLMR_IDS,
       aliases=["FacebookAI/xlm-roberta-large-finetuned-conll03-english"]),
    # ---- extractive question answering
    _m("distilbert-base-uncased-distilled-squad", "question-answering", _distilbert(30522),
       max_len=512, special_ids=BERT_IDS,
       aliases=["distilbert/distilbert-base-uncased-distilled-squad"]),
    _m("deepset/roberta-base-squad2", "question-answering", _roberta(768, 12, 12, 3072),
       max_len=512, special_ids=ROBERTA_IDS),
    _m("deepset/tinyroberta-squad2", "question-answering", _roberta(768, 6, 12, 3072),
       max_len=512, special_ids=ROBERTA_IDS),
    _m("bert-large-uncased-whole-word-masking-finetuned-squad", "question-answering",
       _bert(30522, 1024, 24, 16, 4096), max_len=512, special_ids=BERT_IDS,
       aliases=["google-bert/bert-large-uncased-whole-word-masking-finetuned-squad"]),
    # ---- masked language modelling (fill-mask)
    _m("bert-base-uncased", "fill-mask", _bert(30522, 768, 12, 12, 3072), max_len=512,
       special_ids=BERT_IDS, aliases=["google-bert/bert-base-uncased"]),
    _m("bert-base-cased", "fill-mask", _bert(28996, 768, 12, 12, 3072), max_len=512,
       special_ids=BERT_IDS, aliases=["google-bert/bert-base-cased"]),
    _m("xlm-roberta-base", "fill-mask",
       _roberta(768, 12, 12, 3072, model_type="xlm-roberta", vocab=250002), max_len=512,
       special_ids=XLMR_IDS, aliases=["FacebookAI/xlm-roberta-base"]),
    _m("distilbert-base-uncased", "fill-mask", _distilbert(30522), max_len=512,
       special_ids=BERT_IDS, aliases=["distilbert/distilbert-base-uncased"]),
    _m("roberta-base", "fill-mask", _roberta(768, 12, 12, 3072), max_len=512,
       special_ids=ROBERTA_IDS, aliases=["FacebookAI/roberta-base"]),
    _m("albert-base-v2", "fill-mask",
       dict(model_type="albert", vocab_size=30000, embedding_size=128, hidden_size=768,
            num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            num_hidden_groups=1, inner_group_num=1, hidden_act="gelu_new",
            max_position_embeddings=512, type_vocab_size=2, pad_token_id=0, bos_token_id=2,
            eos_token_id=3),
       max_len=512, special_ids={"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
       aliases=["albert/albert-base-v2"]),
    _m("microsoft/deberta-base", "fill-mask",
       dict(model_type="deberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
            num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
            type_vocab_size=0, relative_attention=True, max_relative_positions=-1,
            position_biased_input=False, pos_att_type=["c2p", "p2c"], layer_norm_eps=1e-7,
            pad_token_id=0),
       max_len=512, special_ids={"pad": 0, "cls": 1, "sep": 2, "unk": 3, "mask": 50264}),
    # ---- text generation (causal LMs)
    _m("gpt2", "text-generation", _gpt2(768, 12, 12), max_len=1024, special_ids=GPT2_IDS,
       aliases=["openai-community/gpt2"]),
    _m("gpt2-medium", "text-generation", _gpt2(1024, 24, 16), max_len=1024,
       special_ids=GPT2_IDS, aliases=["openai-community/gpt2-medium"]),
    _m("gpt2-xl", "text-generation", _gpt2(1600, 48, 25), max_len=1024, special_ids=GPT2_IDS,
       aliases=["openai-community/gpt2-xl"]),
    _m("distilgpt2", "text-generation", _gpt2(768, 6, 12), max_len=1024, special_ids=GPT2_IDS,
       aliases=["distilbert/distilgpt2"]),
    _m("bigscience/bloom-560m", "text-generation", _bloom(1024, 24, 16), max_len=2048,
       special_ids=BLOOM_IDS, vocab_used=250680,
       notes="ALiBi positions: no position table; max_len is the training sequence length."),
    _m("EleutherAI/gpt-neo-125m", "text-generation",
       dict(model_type="gpt_neo", vocab_size=50257, hidden_size=768, num_layers=12,
            num_heads=12, max_position_embeddings=2048,
            attention_types=[[["global", "local"], 6]], window_size=256,
            activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256),
       max_len=2048, special_ids=GPT2_IDS),
    _m("facebook/opt-1.3b", "text-generation", _opt(2048, 24, 32, 8192), max_len=2048,
       special_ids=OPT_IDS, vocab_used=50265),
    _m("facebook/opt-6.7b", "text-generation", _opt(4096, 32, 32, 16384), max_len=2048,
       special_ids=OPT_IDS, vocab_used=50265),
    # ---- summarization (sequence-to-sequence)
    _m("sshleifer/distilbart-xsum-12-6", "summarization", _bart(12, 6), max_len=1024,
       special_ids=BART_IDS, num_beams=6),
    _m("sshleifer/distilbart-cnn-12-6", "summarization", _bart(12, 6), max_len=1024,
       special_ids=BART_IDS, num_beams=4),
    _m("google/pegasus-xsum", "summarization",
       dict(model_type="pegasus", vocab_size=96103, d_model=1024, encoder_layers=16,
            decoder_layers=16, encoder_attention_heads=16, decoder_attention_heads=16,
            encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=512,
            activation_function="relu", scale_embedding=True, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0, forced_eos_token_id=1),
       max_len=512, special_ids={"pad": 0, "eos": 1, "mask_sent": 2, "mask": 3, "unk": 105},
       num_beams=8, notes="ids 2-104 are <mask>/<unk_n> offsets of the tokenizer; only the "
       "listed special ids are excluded from random tokens."),
    _m("facebook/bart-large-cnn", "summarization", _bart(12, 12, forced_bos_token_id=0),
       max_len=1024, special_ids=BART_IDS, num_beams=4),
    # ---- image classification
    _m("microsoft/resnet-18", "image-classification",
       _resnet([64, 128, 256, 512], [2, 2, 2, 2], "basic", num_labels=1000),
       image=ImageSpec(**_FIXED224, mean=IMAGENET[0], std=IMAGENET[1])),
    _m("microsoft/resnet-50", "image-classification",
       _resnet([256, 512, 1024, 2048], [3, 4, 6, 3], "bottleneck", num_labels=1000),
       image=ImageSpec(**_FIXED224, mean=IMAGENET[0], std=IMAGENET[1])),
    _m("google/vit-base-patch16-224", "image-classification", _vit(num_labels=1000),
       image=ImageSpec(**_FIXED224, mean=STANDARD[0], std=STANDARD[1])),
    _m("microsoft/beit-base-patch16-224", "image-classification",
       dict(model_type="beit", vocab_size=8192, hidden_size=768, num_hidden_layers=12,
            num_attention_heads=12, intermediate_size=3072, image_size=224, patch_size=16,
            use_mask_token=False, use_absolute_position_embeddings=False,
            use_relative_position_bias=True, use_shared_relative_position_bias=False,
            layer_scale_init_value=0.1, use_mean_pooling=True, num_labels=1000),
       image=ImageSpec(**_FIXED224, mean=STANDARD[0], std=STANDARD[1])),
    _m("facebook/convnextv2-tiny-1k-224", "image-classification",
       dict(model_type="convnextv2", num_channels=3, patch_size=4, hidden_sizes=[96, 192, 384, 768],
            depths=[3, 3, 9, 3], hidden_act="gelu", layer_norm_eps=1e-12, image_size=224,
            num_labels=1000),
       image=ImageSpec(**_FIXED224, mean=IMAGENET[0], std=IMAGENET[1])),
    # ---- object detection
    _m("facebook/detr-resnet-50", "object-detection", _detr([3, 4, 6, 3]),
       image=ImageSpec("shortest_edge", 800, IMAGENET[0], IMAGENET[1], max_size=1333)),
    _m("facebook/detr-resnet-101", "object-detection", _detr([3, 4, 23, 3]),
       image=ImageSpec("shortest_edge", 800, IMAGENET[0], IMAGENET[1], max_size=1333)),
    _m("hustvl/yolos-tiny", "object-detection", _yolos(192, 3, False, [800, 1333]),
       image=ImageSpec("shortest_edge", 512, IMAGENET[0], IMAGENET[1], max_size=1333,
                       multiple=16),
       notes="processor shortest_edge 512 (the YOLOS-Ti evaluation size), not the class "
       "default 800."),
    _m("hustvl/yolos-small", "object-detection", _yolos(384, 6, True, [512, 864]),
       image=ImageSpec("shortest_edge", 800, IMAGENET[0], IMAGENET[1], max_size=1333,
                       multiple=16)),
    # ---- image captioning (image-to-text)
    _m("nlpconnect/vit-gpt2-image-captioning", "image-to-text",
       dict(model_type="vision-encoder-decoder", encoder=_vit(),
            decoder=_gpt2(768, 12, 12, add_cross_attention=True, is_decoder=True),
            decoder_start_token_id=50256, pad_token_id=50256, eos_token_id=50256),
       max_len=1024, special_ids=GPT2_IDS,
       image=ImageSpec(**_FIXED224, mean=STANDARD[0], std=STANDARD[1])),
    _m("Salesforce/blip-image-captioning-base", "image-to-text",
       dict(model_type="blip", projection_dim=512,
            vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, image_size=384, patch_size=16,
                               layer_norm_eps=1e-5),
            text_config=dict(vocab_size=30524, hidden_size=768, num_hidden_layers=12,
                             num_attention_heads=12, intermediate_size=3072,
                             encoder_hidden_size=768, max_position_embeddings=512,
                             bos_token_id=30522, eos_token_id=2, sep_token_id=102,
                             pad_token_id=0)),
       max_len=512, special_ids={**BERT_IDS, "bos": 30522, "enc": 30523},
       image=ImageSpec("fixed", (384, 384), OPENAI_CLIP[0], OPENAI_CLIP[1])),
    _m("microsoft/git-base", "image-to-text",
       dict(model_type="git", vocab_size=30522, hidden_size=768, num_hidden_layers=6,
            num_attention_heads=12, intermediate_size=3072, max_position_embeddings=1024,
            bos_token_id=101, eos_token_id=102, pad_token_id=0,
            vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, image_size=224, patch_size=16)),
       max_len=1024, special_ids=BERT_IDS,
       image=ImageSpec(**_FIXED224, mean=OPENAI_CLIP[0], std=OPENAI_CLIP[1])),
    # ---- image generation (diffusers pipelines)
    _diffusion("runwayml/stable-diffusion-v1-5", text_encoder=SD15_TEXT,
               unet=dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                         **SD_UNET_BLOCKS),
               vae=dict(SD_VAE, sample_size=512), scheduler=PNDM, resolution=512, guidance=7.5,
               aliases=("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-1.5"),
               notes="the Hub pipeline also runs a CLIP ViT-L/14 safety checker on each image; "
               "it is not built here."),
    _diffusion("stabilityai/stable-diffusion-2-1",
               text_encoder=_clip_text(1024, 23, 16, 4096, "gelu", 512),
               unet=dict(sample_size=96, cross_attention_dim=1024,
                         attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
                         upcast_attention=True, **SD_UNET_BLOCKS),
               vae=dict(SD_VAE, sample_size=768),
               scheduler=dict(_class_name="DDIMScheduler", prediction_type="v_prediction",
                              clip_sample=False, set_alpha_to_one=False, **SCALED_LINEAR),
               resolution=768, guidance=7.5, aliases=("sd-2.1",)),
    _diffusion("stabilityai/stable-diffusion-xl-base-1.0",
               pipeline="StableDiffusionXLPipeline", zero_negative=True,
               text_encoder=SD15_TEXT,
               text_encoder_2=_clip_text(1280, 32, 20, 5120, "gelu", 1280),
               unet=dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                         block_out_channels=[320, 640, 1280],
                         down_block_types=["DownBlock2D", "CrossAttnDownBlock2D",
                                           "CrossAttnDownBlock2D"],
                         up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                         "UpBlock2D"],
                         transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
                         cross_attention_dim=2048, use_linear_projection=True,
                         addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=2816, norm_num_groups=32),
               vae=dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
               scheduler=dict(_class_name="EulerDiscreteScheduler", prediction_type="epsilon",
                              interpolation_type="linear", timestep_spacing="leading",
                              use_karras_sigmas=False, **SCALED_LINEAR),
               resolution=1024, guidance=5.0, aliases=("sdxl",),
               notes="negative prompt embeddings are zeros (force_zeros_for_empty_prompt), so "
               "each text encoder runs once; the VAE is upcast to float32 in fp16 pipelines "
               "(force_upcast), not done here."),
    _diffusion("segmind/tiny-sd", text_encoder=SD15_TEXT,
               unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=1,
                         block_out_channels=[320, 640, 1280],
                         down_block_types=["CrossAttnDownBlock2D"] * 3,
                         up_block_types=["CrossAttnUpBlock2D"] * 3, mid_block_type=None,
                         cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32),
               vae=dict(SD_VAE, sample_size=512), scheduler=PNDM, resolution=512, guidance=7.5,
               notes="BK-SDM-Tiny UNet (segmind/distill-sd 'sd_tiny': no mid block, one "
               "resnet+attention per down block, the 4th down / 1st up block removed); "
               "scheduler inherited from SG161222/Realistic_Vision_V4.0, assumed PNDM."),
    # ---- multi-purpose, zero-shot (text2text-generation / text-generation)
    _m("google/flan-t5-base", "zero-shot-qa", _t5(768, 2048, 12, 12), max_len=512,
       special_ids=T5_IDS, vocab_used=32100,
       notes="relative positions: max_len is the tokenizer's model_max_length."),
    _m("google/flan-t5-large", "zero-shot-qa", _t5(1024, 2816, 16, 24), max_len=512,
       special_ids=T5_IDS, vocab_used=32100),
    _m("google/flan-t5-xl", "zero-shot-qa", _t5(2048, 5120, 32, 24), max_len=512,
       special_ids=T5_IDS, vocab_used=32100),
    _m("google/flan-t5-xxl", "zero-shot-qa", _t5(4096, 10240, 64, 24), max_len=512,
       special_ids=T5_IDS, vocab_used=32100),
    _m("bigscience/bloomz-560m", "zero-shot-qa", _bloom(1024, 24, 16), max_len=2048,
       special_ids=BLOOM_IDS, vocab_used=250680),
    _m("bigscience/bloomz-1b7", "zero-shot-qa", _bloom(2048, 24, 16), max_len=2048,
       special_ids=BLOOM_IDS, vocab_used=250680),
    _m("bigscience/bloomz-3b", "zero-shot-qa", _bloom(2560, 30, 32), max_len=2048,
       special_ids=BLOOM_IDS, vocab_used=250680),
    _m("bigscience/bloomz-7b1", "zero-shot-qa", _bloom(4096, 30, 32), max_len=2048,
       special_ids=BLOOM_IDS, vocab_used=250680),
]

MODELS: dict[str, ModelSpec] = {s.id: s for s in _TABLE}


def _index() -> dict[str, str]:
    """Every accepted lower-case name -> canonical id (ids, unique short names, aliases)."""
    names: dict[str, str] = {}
    shorts: dict[str, list[str]] = {}
    for spec in _TABLE:
        names[spec.id.lower()] = spec.id
        for alias in spec.aliases:
            names[alias.lower()] = spec.id
        shorts.setdefault(spec.id.split("/")[-1].lower(), []).append(spec.id)
    for short, ids in shorts.items():
        if len(ids) == 1:
            names.setdefault(short, ids[0])
    return names


_NAMES = _index()


def resolve(name: str | Path | ModelSpec) -> ModelSpec:
    """The spec for a built-in name, a ``config.json`` path, or a model directory.

    Raises ``UnknownModel`` (a ``ValueError``) listing close matches when nothing fits.
    """
    if isinstance(name, ModelSpec):
        return name
    text = str(name).strip()
    canonical = _NAMES.get(text.lower())
    if canonical is not None:
        return MODELS[canonical]
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path)
    close = difflib.get_close_matches(text.lower(), list(_NAMES), n=5, cutoff=0.6)
    hint = ", ".join(dict.fromkeys(_NAMES[c] for c in close))
    raise UnknownModel(
        f"unknown model {text!r}"
        + (f"; did you mean: {hint}?" if hint else "")
        + " Built-in models: phprof.models.list_models(). For any other architecture, pass the "
        "path of its config.json (or of a model directory containing one): it is built from "
        "the config's model_type with random weights, or with weights='pretrained' from the "
        "files in that directory."
    )


# --------------------------------------------------------------------------- from files
_ARCH_TASKS = [  # architecture-name suffix -> default task
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForImageClassification", "image-classification"),
    ("ForObjectDetection", "object-detection"),
    ("VisionEncoderDecoderModel", "image-to-text"),
    ("BlipForConditionalGeneration", "image-to-text"),
    ("GitForCausalLM", "image-to-text"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "summarization"),
]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownModel(f"cannot read {path}: {exc}") from exc


def _from_path(path: Path) -> ModelSpec:
    directory = path if path.is_dir() else path.parent
    if path.is_dir() and (path / "model_index.json").exists():
        return _diffusers_from_dir(path)
    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise UnknownModel(f"{path} holds no config.json (nor a diffusers model_index.json)")
    cfg = _read_json(cfg_file)
    model_type = cfg.get("model_type")
    if not model_type:
        raise UnknownModel(f"{cfg_file} has no 'model_type': not a transformers config")
    _check_model_type(model_type, cfg_file)
    arch = (cfg.get("architectures") or [""])[0]
    task = next((t for suffix, t in _ARCH_TASKS if arch.endswith(suffix)), "")
    text = cfg.get("text_config") or cfg.get("decoder") or cfg
    special = {k[: -len("_token_id")]: v for k, v in {**text, **cfg}.items()
               if k.endswith("_token_id") and isinstance(v, int)}
    image = _image_from_files(directory, cfg, task)
    return ModelSpec(
        id=str(path), task=task, config=cfg, source=str(cfg_file), max_len=_guess_max_len(cfg),
        special_ids=special, image=image, path=str(path if path.is_dir() else cfg_file),
        notes="read from a local config.json",
    )


def _check_model_type(model_type: str, cfg_file: Path) -> None:
    """UnknownModel naming a model_type this transformers cannot build."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING_NAMES), n=3, cutoff=0.7)
        raise UnknownModel(
            f"{cfg_file}: model_type {model_type!r} is not one transformers {transformers.__version__} knows"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else
               " (a model newer than this transformers, or one that needs its own code: upgrade transformers)"))


def _guess_max_len(cfg: Mapping[str, Any]) -> int | None:
    cfg = cfg.get("text_config") or cfg.get("decoder") or cfg
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = cfg.get(key)
        if isinstance(value, int) and value > 0:
            if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert") and key == (
                "max_position_embeddings"
            ):
                value -= cfg.get("pad_token_id", 1) + 1  # positions start after padding_idx
            return value
    return None


def _image_from_files(directory: Path, cfg: Mapping[str, Any], task: str) -> ImageSpec | None:
    vision = cfg.get("vision_config") or cfg.get("encoder") or cfg
    if "num_channels" not in vision and "image_size" not in vision and task not in (
        "image-classification", "object-detection", "image-to-text"
    ):
        return None
    pre = {}
    if (directory / "preprocessor_config.json").exists():
        pre = _read_json(directory / "preprocessor_config.json")
    mean = tuple(pre.get("image_mean", IMAGENET[0]))
    std = tuple(pre.get("image_std", IMAGENET[1]))
    size = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    if isinstance(size, dict) and "shortest_edge" in size and "longest_edge" in size:
        return ImageSpec("shortest_edge", size["shortest_edge"], mean, std,
                         max_size=size["longest_edge"])
    if isinstance(size, dict) and "height" in size:
        return ImageSpec("fixed", (size["height"], size["width"]), mean, std)
    if isinstance(size, dict) and "shortest_edge" in size:
        edge = size["shortest_edge"]
        return ImageSpec("fixed", (edge, edge), mean, std)
    if isinstance(size, int):
        return ImageSpec("fixed", (size, size), mean, std)
    if task == "object-detection":
        return ImageSpec("shortest_edge", 800, mean, std, max_size=1333)
    edge = vision.get("image_size", 224)
    edge = edge if isinstance(edge, int) else 224
    return ImageSpec("fixed", (edge, edge), mean, std)


def _diffusers_from_dir(path: Path) -> ModelSpec:
    index = _read_json(path / "model_index.json")
    cfg: dict[str, Any] = {"pipeline": index.get("_class_name", "StableDiffusionPipeline")}
    for part, file in [("text_encoder", "config.json"), ("text_encoder_2", "config.json"),
                       ("unet", "config.json"), ("vae", "config.json"),
                       ("scheduler", "scheduler_config.json")]:
        if (path / part / file).exists():
            cfg[part] = _read_json(path / part / file)
    missing = [p for p in ("text_encoder", "unet", "vae", "scheduler") if p not in cfg]
    if missing:
        raise UnknownModel(f"diffusers directory {path} lacks {', '.join(missing)}")
    vae_scale = 2 ** (len(cfg["vae"].get("block_out_channels", [0] * 4)) - 1)
    cfg["resolution"] = int(cfg["unet"].get("sample_size", 64)) * vae_scale
    cfg["guidance_scale"] = 5.0 if "XL" in cfg["pipeline"] else 7.5
    cfg["force_zeros_for_empty_prompt"] = bool(index.get("force_zeros_for_empty_prompt", False))
    return ModelSpec(str(path), "text-to-image", cfg, str(path / "model_index.json"),
                     library="diffusers", max_len=77, special_ids=CLIP_TEXT_IDS, path=str(path),
                     notes="read from a local diffusers directory")
