"""Building models (random or cached weights), footprints on the meta device, one inference.

Phases, for a tracer that hooks module forwards (``phase_modules`` gives the modules):

- ``"forward"`` tasks: one call of the top module is the whole inference.
- ``"generate"`` tasks: every call of the ``"step"`` module within one ``generate()`` is one
  decoding step (a KV cache is used, so each step after the first feeds one new token per
  sequence). The first step is the prefill (the whole prompt for decoder-only models), the
  others are decode steps: ``new_tokens`` steps in all, since the last token needs no further
  forward. Encoder-decoder models (T5, BART, Pegasus, vit-gpt2) call ``"encoder"`` once before
  the first step, and every step (the first one included) then feeds only decoder tokens.
  BLIP encodes the image (``"encoder"``: its vision model) once, then its ``text_decoder``
  runs the steps. GIT encodes the image inside its first step (``"encoder"`` is called
  within the first ``"step"`` call): treat that nested call as part of the prefill.
- ``"diffusion"``: see ``phprof.models.diffusion``: ``"text_encoder"`` (and
  ``"text_encoder_2"``), then one ``"denoise"`` (UNet) call per timestep, then one
  ``"vae_decode"``; everything else (scheduler arithmetic, guidance) sits between them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .diffusion import TextToImage, make_scheduler
from .registry import MODELS, ModelSpec, resolve
from .tasks import TaskSpec, check_task, get_task, head_for

__all__ = ["ConfigRejected", "Footprint", "ModelInfo", "ModelTooLarge", "WeightsNotFound", "available_memory",
           "build", "estimate_footprint", "generation_phase_modules", "infer", "list_models", "phase_modules",
           "pipeline_phase_modules", "tiny"]

GiB = 1024 ** 3
HEADROOM = 1.2  # weights and buffers, plus 20% for activations, KV cache and allocator slack


class ModelTooLarge(MemoryError):
    """The model's weights will not fit the chosen device."""


class WeightsNotFound(FileNotFoundError):
    """``weights="pretrained"`` but the checkpoint is neither cached nor a local directory."""


class ConfigRejected(ValueError):
    """transformers (or diffusers) will not build a model from the config's values."""


def _rejections() -> tuple[type[BaseException], ...]:
    """What transformers raises for a config it will not build: a ValueError or
    TypeError, or (transformers 5) huggingface_hub's strict-dataclass validation error."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub: transformers raises ValueError then
        return (ValueError, TypeError)
    return (ValueError, TypeError, StrictDataclassError)


@contextlib.contextmanager
def _rejected_as_one_line(spec: ModelSpec):
    """transformers' refusal of a config (a multi-line validation message) as one
    ConfigRejected line naming the config."""
    try:
        yield
    except ConfigRejected:
        raise
    except _rejections() as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigRejected(f"{spec.id}: {'diffusers' if spec.library == 'diffusers' else 'transformers'} "
                             f"cannot build this config: {text}") from None


# --------------------------------------------------------------------------- tiny configs
_TINY = {
    32: ("hidden_size", "d_model", "n_embd", "dim", "word_embed_proj_dim", "encoder_hidden_size"),
    16: ("embedding_size", "projection_dim", "d_kv", "head_dim"),
    2: ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers",
        "decoder_layers", "num_decoder_layers", "num_attention_heads", "n_head", "n_heads",
        "num_heads", "encoder_attention_heads", "decoder_attention_heads",
        "num_key_value_heads"),
    64: ("intermediate_size", "ffn_dim", "hidden_dim", "d_ff", "encoder_ffn_dim",
         "decoder_ffn_dim", "n_inner"),
    10: ("num_queries", "num_detection_tokens"),
}
_TINY_KEYS = {key: value for value, keys in _TINY.items() for key in keys}


def _shrink(cfg: Any) -> Any:
    """The same architecture with 2 layers, width 32, FFN 64 (vocab and positions kept)."""
    if isinstance(cfg, list):
        return [_shrink(v) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    out = {}
    for key, value in cfg.items():
        if key in _TINY_KEYS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = min(value, _TINY_KEYS[key])
        elif key == "hidden_sizes":
            out[key] = [16 * 2 ** i for i in range(len(value))]
        elif key == "depths":
            out[key] = [1] * len(value)
        elif key == "attention_types":
            out[key] = [[["global", "local"], 1]]
        else:
            out[key] = _shrink(value)
    return out


def _tiny_diffusion(cfg: dict) -> dict:
    def text(te: dict) -> dict:
        return dict(te, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, projection_dim=32)

    out = dict(cfg, text_encoder=text(cfg["text_encoder"]), resolution=64)
    unet = dict(cfg["unet"])
    n = len(unet["block_out_channels"])
    unet.update(block_out_channels=[32, 32, 64, 64][:n], layers_per_block=1, norm_num_groups=8,
                sample_size=8, cross_attention_dim=32)
    if isinstance(unet.get("attention_head_dim"), list):
        unet["attention_head_dim"] = [2] * n
    else:
        unet["attention_head_dim"] = 2
    if isinstance(unet.get("transformer_layers_per_block"), list):
        unet["transformer_layers_per_block"] = [min(v, 2) for v in
                                                unet["transformer_layers_per_block"]]
    if "text_encoder_2" in cfg:
        out["text_encoder_2"] = text(cfg["text_encoder_2"])
        unet.update(cross_attention_dim=64, addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=32 + 6 * 8)
    out["unet"] = unet
    out["vae"] = dict(cfg["vae"], block_out_channels=[8, 8, 16, 16][:len(
        cfg["vae"]["block_out_channels"])], layers_per_block=1, norm_num_groups=8, sample_size=64)
    return out


def tiny(spec: ModelSpec | str) -> ModelSpec:
    """A small model of the same architecture: every task runs in well under a second on CPU.

    Layers 2, width 32, heads 2, FFN 64, detection queries 10; vocabularies, position tables
    and image processors unchanged, so ``make_inputs`` gives the same shapes as at full size
    (text-to-image: 64x64 images by default).
    """
    spec = resolve(spec)
    if spec.size == "tiny":
        return spec
    builtin = spec is MODELS.get(spec.id)
    if builtin and spec.id in _TINY_SPECS:
        return _TINY_SPECS[spec.id]
    config = (_tiny_diffusion(dict(spec.config)) if spec.library == "diffusers"
              else _shrink(dict(spec.config)))
    small = dataclasses.replace(spec, config=config, size="tiny")
    if builtin:
        _TINY_SPECS[spec.id] = small
    return small


_TINY_SPECS: dict[str, ModelSpec] = {}


# --------------------------------------------------------------------------- construction
@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _hf_config(config: dict):
    from transformers import AutoConfig

    kwargs = {k: v for k, v in config.items()
              if k not in ("model_type", "transformers_version", "_name_or_path", "torch_dtype",
                           "dtype")}
    return AutoConfig.for_model(config["model_type"], **kwargs)


def _construct(spec: ModelSpec, task: TaskSpec, device, dtype) -> nn.Module:
    """Random-weight model for ``task`` created directly on ``device`` (``"meta"``: no memory);
    ConfigRejected when the config's values cannot make one."""
    with _rejected_as_one_line(spec):
        return _construct_checked(spec, task, device, dtype)


def _construct_checked(spec: ModelSpec, task: TaskSpec, device, dtype) -> nn.Module:
    if spec.library == "diffusers":
        scheduler = make_scheduler(spec.config["scheduler"])  # plain CPU tensors
        with torch.device(device), _default_dtype(dtype):
            return _construct_diffusion(spec.config, spec.id, scheduler)
    import transformers

    cls = getattr(transformers, head_for(spec, task))
    config = _hf_config(spec.config)
    with torch.device(device), _default_dtype(dtype):
        try:
            model = cls.from_config(config, dtype=dtype)
        except KeyError as e:  # a name transformers looks up in one of its tables (ACT2FN, ...) and lacks
            raise ConfigRejected(f"{spec.id}: transformers cannot build this config: it names {e.args[0]!r}, "
                                 "which transformers does not know (an activation or layer type?)") from None
        _untie(model, spec.config)
    if spec.num_beams > 1 and task.call == "generate":
        model.generation_config.num_beams = spec.num_beams
    return model


def _untie(model: nn.Module, config: dict) -> None:
    """Give the LM head its own weights where the checkpoint has them (Flan-T5).

    transformers 5 ties T5's output projection to the input embedding whatever the config
    says; the Flan-T5 checkpoints have a separate ``lm_head`` (32128 x d_model more
    parameters). The compute is the same either way; the memory is not.
    """
    if config.get("tie_word_embeddings") is not False:
        return
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is inp.weight:
        out.weight = nn.Parameter(out.weight.detach().clone())


def _construct_diffusion(cfg: dict, name: str, scheduler) -> TextToImage:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def clip(te: dict, cls):
        te = {k: v for k, v in te.items() if k not in ("architectures", "_name_or_path",
                                                       "torch_dtype", "dtype", "model_type")}
        return cls(CLIPTextConfig(**te))

    return TextToImage(
        clip(cfg["text_encoder"], CLIPTextModel),
        UNet2DConditionModel.from_config(cfg["unet"]),
        AutoencoderKL.from_config(cfg["vae"]),
        scheduler,
        text_encoder_2=(clip(cfg["text_encoder_2"], CLIPTextModelWithProjection)
                        if "text_encoder_2" in cfg else None),
        guidance_scale=cfg.get("guidance_scale", 7.5),
        zero_negative=bool(cfg.get("force_zeros_for_empty_prompt")), name=name)


def _load_pretrained(spec: ModelSpec, task: TaskSpec, dtype) -> nn.Module:
    names = [spec.path] if spec.path else [spec.id, *spec.aliases]
    errors = []
    for name in names:
        try:
            if spec.library == "diffusers":
                return _load_diffusion(spec, name, dtype)
            import transformers

            cls = getattr(transformers, head_for(spec, task))
            return cls.from_pretrained(name, local_files_only=True, dtype=dtype)
        except OSError as exc:  # transformers/diffusers: not cached or not a model directory
            errors.append(f"{name}: {str(exc).splitlines()[0]}")
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    raise WeightsNotFound(
        f"no local weights for {spec.id} (tried {', '.join(names)}; cache {cache}). Download "
        f"them where the Hub can be reached (`hf download {spec.id}`, then copy the cache) or "
        f"pass a local model directory, or use weights='random' (the default): energy "
        f"depends on shapes, not weight values.\n" + "\n".join(errors))


def _load_diffusion(spec: ModelSpec, name: str, dtype) -> TextToImage:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    common = dict(local_files_only=True)
    te2 = None
    if "text_encoder_2" in spec.config:
        te2 = CLIPTextModelWithProjection.from_pretrained(name, subfolder="text_encoder_2",
                                                          dtype=dtype, **common)
    return TextToImage(
        CLIPTextModel.from_pretrained(name, subfolder="text_encoder", dtype=dtype, **common),
        UNet2DConditionModel.from_pretrained(name, subfolder="unet", torch_dtype=dtype, **common),
        AutoencoderKL.from_pretrained(name, subfolder="vae", torch_dtype=dtype, **common),
        make_scheduler(spec.config["scheduler"]), text_encoder_2=te2,
        guidance_scale=spec.config.get("guidance_scale", 7.5),
        zero_negative=bool(spec.config.get("force_zeros_for_empty_prompt")), name=spec.id)


# --------------------------------------------------------------------------- footprint
@dataclass(frozen=True)
class Footprint:
    """Size of a model in memory: unique parameters (tied weights once), and bytes."""

    params: int
    param_bytes: int
    buffer_bytes: int
    dtype: torch.dtype

    @property
    def bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes

    @property
    def needed_bytes(self) -> int:
        """What ``build`` asks of the device: the weights plus headroom."""
        return int(self.bytes * HEADROOM)


_FOOTPRINTS: dict[tuple, Footprint] = {}


def estimate_footprint(spec: ModelSpec | str, task: str | TaskSpec | None = None,
                       dtype: torch.dtype = torch.float32, size: str = "full") -> Footprint:
    """Parameters and bytes of the model, from a build on the meta device (nothing allocated)."""
    spec = _sized(resolve(spec), size)
    task = check_task(spec, task)
    # cache only the table's own specs (and their tiny versions), by identity
    cacheable = spec is MODELS.get(spec.id) or spec is _TINY_SPECS.get(spec.id)
    key = (spec.id, spec.size, task.name, dtype)
    if cacheable and key in _FOOTPRINTS:
        return _FOOTPRINTS[key]
    model = _construct(spec, task, "meta", dtype)
    params = list(model.parameters())  # unique: tied weights appear once
    width = torch.empty((), dtype=dtype).element_size()
    param_bytes = sum(p.numel() * (width if p.is_floating_point() else p.element_size())
                      for p in params)
    buffer_bytes = sum(b.numel() * (width if b.is_floating_point() else b.element_size())
                       for b in model.buffers())
    fp = Footprint(sum(p.numel() for p in params), param_bytes, buffer_bytes, dtype)
    if cacheable:
        _FOOTPRINTS[key] = fp
    return fp


def available_memory(device: str | torch.device) -> int | None:
    """Free bytes on ``device``: MemAvailable for CPU, cudaMemGetInfo's free for CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def _sized(spec: ModelSpec, size: str) -> ModelSpec:
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    return tiny(spec) if size == "tiny" else spec


# --------------------------------------------------------------------------- build
def build(
    spec: ModelSpec | str,
    task: str | TaskSpec | None = None,
    *,
    weights: str = "random",
    size: str = "full",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    check_memory: bool = True,
) -> nn.Module:
    """The model with the head for ``task`` (default: the model's own), in eval mode.

    ``weights="random"`` initialises on ``device`` directly (seeded by ``seed``);
    ``"pretrained"`` loads the checkpoint from the local Hugging Face cache or the spec's local
    directory, never from the network (``WeightsNotFound`` when absent). Before allocating,
    the footprint is estimated on the meta device: ``ModelTooLarge`` if weights x 1.2 exceed
    ``available_memory(device)``. ``size="tiny"``: see ``tiny``; pass the same spec (or
    ``tiny(spec)``) to ``make_inputs``.
    """
    spec = _sized(resolve(spec), size)
    task = check_task(spec, task)
    if weights not in ("random", "pretrained"):
        raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
    if weights == "pretrained" and spec.size == "tiny":
        raise ValueError("size='tiny' has no pretrained weights; use weights='random'")
    if check_memory:
        fp = estimate_footprint(spec, task, dtype)
        free = available_memory(device)
        if free is not None and fp.needed_bytes > free:
            raise ModelTooLarge(
                f"{spec.id} for {task.name} needs ~{fp.needed_bytes / GiB:.1f} GiB on {device} "
                f"({fp.params / 1e9:.2f} B parameters, {fp.bytes / GiB:.1f} GiB of weights in "
                f"{str(dtype).replace('torch.', '')}, plus 20% headroom) but "
                f"{free / GiB:.1f} GiB is available. Use a smaller dtype, another device, "
                f"or size='tiny'.")
    if weights == "pretrained":
        model = _load_pretrained(spec, task, dtype).to(device)
    else:
        torch.manual_seed(seed)
        model = _construct(spec, task, device, dtype)
    return model.eval()


# --------------------------------------------------------------------------- inference
def _kind(model: nn.Module) -> str:
    if isinstance(model, TextToImage):
        return "diffusion"
    return getattr(getattr(model, "config", None), "model_type", "")


def infer(model: nn.Module, task: str | TaskSpec, inputs: dict[str, torch.Tensor], *,
          new_tokens: int | None = None, steps: int | None = None,
          num_beams: int | None = None) -> Any:
    """Exactly one inference under ``torch.inference_mode()``; returns the model's output.

    ``"forward"``: ``model(**inputs)``. ``"generate"``: ``model.generate`` with
    ``do_sample=False`` and ``min_new_tokens == max_new_tokens == new_tokens`` (default: the
    task's), returning the token ids (prompt or start token included). ``num_beams`` defaults
    to the checkpoint's generation default (beam search for the summarisers, as in the
    study's pipelines); pass 1 for greedy. ``"diffusion"``: ``steps`` (default 50) denoising
    steps. See the module docstring for how phases show up.
    """
    task = get_task(task)
    with torch.inference_mode():
        if task.call == "forward":
            return model(**inputs)
        if task.call == "diffusion":
            return model(**inputs, steps=task.steps if steps is None else steps)
        n = task.shape().new_tokens if new_tokens is None else new_tokens
        if n is None or n < 1:
            raise ValueError(f"new_tokens must be >= 1, got {n}")
        gen = model.generation_config
        beams = num_beams or gen.num_beams or 1
        kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=beams,
                      num_return_sequences=1)
        if gen.pad_token_id is None and gen.eos_token_id is not None:
            eos = gen.eos_token_id
            kwargs["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
        return model.generate(**inputs, **kwargs)


def phase_modules(model: nn.Module, task: str | TaskSpec) -> dict[str, nn.Module]:
    """The modules whose calls delimit the phases of one inference (see the module docstring)."""
    task = get_task(task)
    kind = _kind(model)
    if task.call == "diffusion":
        if kind != "diffusion":
            raise ValueError(f"{type(model).__name__} is not a text-to-image model")
        out = {"text_encoder": model.text_encoder}
        if model.text_encoder_2 is not None:
            out["text_encoder_2"] = model.text_encoder_2
        return {**out, "denoise": model.unet, "vae_decode": model.vae_decode}
    if task.call == "forward":
        return {"forward": model}
    return generation_phase_modules(model)


def generation_phase_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The phase modules of one ``model.generate()`` (see the module docstring)."""
    kind = _kind(model)
    if kind == "blip":
        return {"encoder": model.vision_model, "step": model.text_decoder}
    if kind == "git":
        return {"encoder": model.git.image_encoder, "step": model}
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return {"encoder": model.get_encoder(), "step": model}
    return {"step": model}


def pipeline_phase_modules(pipe) -> dict[str, nn.Module]:
    """The phase modules of one call of a diffusers pipeline: its text encoders
    (``encode_prompt``, then ``text_encoder_2``), its UNet or transformer (one
    ``denoise.<k>`` per step) and its VAE's decoder (``vae_decode``; the VAE's
    ``decode`` is a method, not a forward, so the decoder module stands for it:
    the small ``post_quant_conv`` before it falls outside the phase)."""
    out = {}
    for key in ("text_encoder", "text_encoder_2"):
        if isinstance(getattr(pipe, key, None), nn.Module):
            out[key] = getattr(pipe, key)
    denoiser = next((getattr(pipe, k) for k in ("unet", "transformer", "prior")
                     if isinstance(getattr(pipe, k, None), nn.Module)), None)
    if denoiser is not None:
        out["denoise"] = denoiser
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    if isinstance(decoder, nn.Module):
        out["vae_decode"] = decoder
    return out


# --------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class ModelInfo:
    id: str
    task: str
    model_type: str
    params: int
    source: str


def list_models(task: str | None = None) -> list[ModelInfo]:
    """Every built-in model (of ``task``, when given) with its default task and
    parameter count (meta-device build, so only the models listed are built)."""
    return [ModelInfo(s.id, s.task, s.model_type, estimate_footprint(s).params, s.source)
            for s in MODELS.values() if task is None or s.task == task]
