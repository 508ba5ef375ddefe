"""phprof.models: the built-in table, footprints on the meta device, tasks, inputs, one inference.

Everything runs offline (nothing is downloaded) and on CPU, with tiny configs for inference
(the tests that run a model are marked ``integration``).
"""
import dataclasses
import json
import os
import resource

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from phprof import models  # noqa: E402
from phprof.models import factory  # noqa: E402

# Every model id named in ../shared/docs/paper.md (the multi-purpose rows spelled out).
PAPER_IDS = {
    "distilbert-base-uncased-finetuned-sst-2-english", "cardiffnlp/twitter-roberta-base-sentiment",
    "siebert/sentiment-roberta-large-english",
    "elastic/distilbert-base-cased-finetuned-conll03-english",
    "xlm-roberta-large-finetuned-conll03-english",
    "distilbert-base-uncased-distilled-squad", "deepset/roberta-base-squad2",
    "deepset/tinyroberta-squad2", "bert-large-uncased-whole-word-masking-finetuned-squad",
    "bert-base-uncased", "bert-base-cased", "xlm-roberta-base", "distilbert-base-uncased",
    "roberta-base", "albert-base-v2", "microsoft/deberta-base",
    "gpt2", "gpt2-medium", "gpt2-xl", "distilgpt2", "bigscience/bloom-560m",
    "EleutherAI/gpt-neo-125m", "facebook/opt-1.3b", "facebook/opt-6.7b",
    "sshleifer/distilbart-xsum-12-6", "sshleifer/distilbart-cnn-12-6", "google/pegasus-xsum",
    "facebook/bart-large-cnn",
    "microsoft/resnet-18", "microsoft/resnet-50", "google/vit-base-patch16-224",
    "microsoft/beit-base-patch16-224", "facebook/convnextv2-tiny-1k-224",
    "facebook/detr-resnet-50", "facebook/detr-resnet-101", "hustvl/yolos-tiny",
    "hustvl/yolos-small",
    "nlpconnect/vit-gpt2-image-captioning", "Salesforce/blip-image-captioning-base",
    "microsoft/git-base",
    "runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-xl-base-1.0", "segmind/tiny-sd",
    "google/flan-t5-base", "google/flan-t5-large", "google/flan-t5-xl", "google/flan-t5-xxl",
    "bigscience/bloomz-560m", "bigscience/bloomz-1b7", "bigscience/bloomz-3b",
    "bigscience/bloomz-7b1",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No Hub access even if huggingface_hub was imported before this module set the env."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------- the table
def test_every_paper_id_is_built_in_and_resolves_by_every_name():
    assert set(models.MODELS) == PAPER_IDS
    for model_id, spec in models.MODELS.items():
        assert models.resolve(model_id) is spec
        assert models.resolve(model_id.upper()) is spec
        for alias in spec.aliases:
            assert models.resolve(alias) is spec
        assert spec.task in models.TASKS
        assert spec.task in models.supported_tasks(spec)
        assert spec.source.startswith("https://huggingface.co/" + model_id)
    assert models.resolve("opt-6.7b").id == "facebook/opt-6.7b"  # unique short name
    assert models.resolve("sdxl").id == "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.mark.integration
def test_list_models_gives_every_id_with_task_and_parameters():
    infos = models.list_models()
    assert {i.id for i in infos} == PAPER_IDS
    by_id = {i.id: i for i in infos}
    assert by_id["gpt2"].task == "text-generation" and by_id["gpt2"].model_type == "gpt2"
    assert by_id["segmind/tiny-sd"].task == "text-to-image"
    assert all(i.params > 1_000_000 for i in infos)
    # size order within families holds
    assert by_id["gpt2"].params < by_id["gpt2-medium"].params < by_id["gpt2-xl"].params
    assert (by_id["bigscience/bloomz-560m"].params < by_id["bigscience/bloomz-1b7"].params
            < by_id["bigscience/bloomz-3b"].params < by_id["bigscience/bloomz-7b1"].params)


@pytest.mark.integration
@pytest.mark.parametrize("model_id, published", [
    ("gpt2", 124e6), ("bert-base-uncased", 110e6), ("distilbert-base-uncased", 66e6),
    ("google/flan-t5-base", 248e6), ("google/flan-t5-large", 783e6),
    ("google/vit-base-patch16-224", 86.6e6), ("microsoft/resnet-50", 25.6e6),
    ("bigscience/bloomz-560m", 559e6), ("facebook/bart-large-cnn", 406e6),
    ("hustvl/yolos-small", 30.7e6), ("facebook/opt-6.7b", 6.7e9),
])
def test_full_size_parameter_counts_match_published(model_id, published):
    params = models.estimate_footprint(model_id).params
    assert abs(params - published) / published < 0.02, params


@pytest.mark.integration
def test_diffusion_component_sizes():
    # UNet sizes: SD 1.5 859.5M, SD 2.1 865.9M, SDXL 2.567B, BK-SDM-Tiny (tiny-sd) 323M.
    for model_id, unet in [("runwayml/stable-diffusion-v1-5", 859.5e6),
                           ("stabilityai/stable-diffusion-2-1", 865.9e6),
                           ("stabilityai/stable-diffusion-xl-base-1.0", 2567.5e6),
                           ("segmind/tiny-sd", 323.4e6)]:
        model = factory._construct(models.resolve(model_id), models.TASKS["text-to-image"],
                                   "meta", torch.float32)
        assert abs(sum(p.numel() for p in model.unet.parameters()) - unet) / unet < 0.01


@pytest.mark.integration
def test_big_models_estimate_on_meta_without_allocating(monkeypatch):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # every model is built on the meta device (no weights made, so it takes no time): seen by its
    # parameters, not by a stopwatch; the cache emptied, so that each one is built here
    monkeypatch.setattr(factory, "_FOOTPRINTS", {})
    construct, built = factory._construct, []

    def on_meta(spec, task, device, dtype):
        model = construct(spec, task, device, dtype)
        built.append((spec.id, str(device), {p.device.type for p in model.parameters()}))
        return model

    monkeypatch.setattr(factory, "_construct", on_meta)
    expect = {"facebook/opt-6.7b": 6.66e9, "google/flan-t5-xxl": 11.14e9,
              "stabilityai/stable-diffusion-xl-base-1.0": 3.47e9,
              "bigscience/bloomz-7b1": 7.07e9}
    for model_id, params in expect.items():
        fp = models.estimate_footprint(model_id, dtype=torch.float16)
        assert abs(fp.params - params) / params < 0.01
        assert fp.bytes >= 2 * fp.params and fp.dtype == torch.float16
        assert fp.needed_bytes > fp.bytes
    assert [b[0] for b in built] == list(expect) and all(b[1:] == ("meta", {"meta"}) for b in built), built
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss
    assert grown < 2 * 1024 ** 3  # the weights alone would be ~55 GB


def test_model_too_large_names_needed_and_available(monkeypatch):
    monkeypatch.setattr(factory, "available_memory", lambda device: 512 * 1024 ** 2)
    with pytest.raises(models.ModelTooLarge) as err:
        models.build("facebook/opt-6.7b")
    message = str(err.value)
    assert "facebook/opt-6.7b" in message and "0.5 GiB is available" in message
    assert "needs ~29.8 GiB" in message  # 6.66e9 x 4 bytes x 1.2
    # a tiny model fits in the same memory
    assert models.build("gpt2", size="tiny") is not None


def test_available_memory_reads_meminfo():
    free = models.available_memory("cpu")
    assert free is not None and 0 < free < 1 << 50


# --------------------------------------------------------------------------- errors
def test_unknown_model_suggests_close_matches_and_config_json():
    with pytest.raises(models.UnknownModel) as err:
        models.resolve("gtp2")
    assert isinstance(err.value, ValueError)
    assert "gpt2" in str(err.value) and "config.json" in str(err.value)
    with pytest.raises(models.UnknownModel, match="flan-t5-xl"):
        models.resolve("flan-t5-xxxl")


def test_task_the_model_cannot_do_names_the_ones_it_can():
    with pytest.raises(models.UnsupportedTask) as err:
        models.build("gpt2", "image-classification", size="tiny")
    assert isinstance(err.value, ValueError)
    assert "text-generation" in str(err.value) and "image-classification" in str(err.value)
    with pytest.raises(models.UnsupportedTask, match="text-to-image"):
        models.make_inputs("segmind/tiny-sd", "fill-mask")
    with pytest.raises(models.UnsupportedTask, match="unknown task"):
        models.get_task("translation")
    assert models.get_task("image-captioning").name == "image-to-text"


@pytest.mark.parametrize("model_id, kwargs, match", [
    ("bert-base-uncased", dict(seq_len=0), "seq_len must be >= 1"),
    ("bert-base-uncased", dict(seq_len=513), "exceeds bert-base-uncased's 512"),
    ("roberta-base", dict(seq_len=513), "512 positions"),
    ("gpt2", dict(seq_len=1000, new_tokens=30), "exceeds its 1024"),
    ("gpt2", dict(new_tokens=0), "new_tokens must be >= 1"),
    ("gpt2", dict(batch_size=0), "batch_size"),
    ("gpt2", dict(image_size=224), "does not apply"),
    ("google/vit-base-patch16-224", dict(image_size=256), "224x224 images only"),
    ("google/vit-base-patch16-224", dict(seq_len=5), "does not apply"),
    ("facebook/detr-resnet-50", dict(image_size=(10, 10)), "too small"),
    ("segmind/tiny-sd", dict(image_size=500), "multiple of 8"),
    ("segmind/tiny-sd", dict(seq_len=78), "77"),
    ("google/pegasus-xsum", dict(dataset="imdb"), "no dataset 'imdb'"),
])
def test_bad_shapes_raise_clear_errors(model_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.make_inputs(model_id, **kwargs)


# --------------------------------------------------------------------------- inputs
def test_default_shapes_follow_the_processors_and_datasets():
    def shape(model_id, key="pixel_values", **kw):
        return tuple(models.make_inputs(model_id, **kw)[key].shape)

    assert shape("facebook/detr-resnet-50") == (1, 3, 800, 1066)
    assert shape("facebook/detr-resnet-50", "pixel_mask") == (1, 800, 1066)
    assert shape("hustvl/yolos-tiny") == (1, 3, 512, 672)
    assert shape("hustvl/yolos-small") == (1, 3, 800, 1056)
    assert shape("Salesforce/blip-image-captioning-base") == (1, 3, 384, 384)
    assert shape("microsoft/resnet-50", batch_size=2) == (2, 3, 224, 224)
    assert shape("microsoft/resnet-50", image_size=(480, 640)) == (1, 3, 480, 640)
    # text: mean over the task's datasets, each cut to the model's positions
    assert shape("gpt2", "input_ids") == (1, 25)
    assert shape("gpt2", "input_ids", dataset="bookcorpus") == (1, 18)
    assert shape("facebook/bart-large-cnn", "input_ids") == (1, 508)  # (900+125+500)/3
    assert shape("google/pegasus-xsum", "input_ids") == (1, 379)  # (512+125+500)/3
    assert shape("stabilityai/stable-diffusion-2-1", "latents") == (1, 4, 96, 96)
    assert shape("sdxl", "latents") == (1, 4, 128, 128)
    assert "negative_input_ids" not in models.make_inputs("sdxl")  # zero negative embeddings
    assert models.TASKS["summarization"].shape().new_tokens == 14
    assert models.TASKS["text-generation"].shape().new_tokens == 10
    assert models.TASKS["zero-shot-sentiment"].shape("sst2").new_tokens == 1


def test_ImageSpec_output_size_matches_transformers():
    from transformers.image_transforms import get_size_with_aspect_ratio
    from transformers.models.yolos.image_processing_pil_yolos import (
        get_size_with_aspect_ratio_yolos,
    )

    detr = models.resolve("facebook/detr-resnet-50").image
    yolos = models.resolve("hustvl/yolos-small").image
    for hw in [(480, 640), (640, 480), (300, 1200), (800, 800), (1000, 333)]:
        assert detr.output_size(*hw) == get_size_with_aspect_ratio(hw, 800, 1333)
        assert yolos.output_size(*hw) == get_size_with_aspect_ratio_yolos(hw, 800, 1333)


def test_tokens_avoid_special_ids_and_pixels_are_normalised():
    inputs = models.make_inputs("bert-base-uncased", "fill-mask", batch_size=64, seq_len=64,
                                generator=torch.Generator().manual_seed(1))
    ids = inputs["input_ids"]
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all() and (ids[:, -2] == 103).all()
    body = ids[:, 1:-2]
    assert not torch.isin(body, torch.tensor([0, 100, 101, 102, 103])).any()
    assert body.max() < 30522 and body.unique().numel() > 2000  # spread over the vocabulary
    assert inputs["token_type_ids"].shape == ids.shape
    bloom = models.make_inputs("bigscience/bloomz-560m", seq_len=512)["input_ids"]
    assert bloom.max() < 250680 and bloom.min() > 3  # tokenizer range, no special ids
    pixels = models.make_inputs("microsoft/resnet-50", dtype=torch.float16)["pixel_values"]
    assert pixels.dtype == torch.float16
    assert pixels.min() >= (0 - 0.485) / 0.229 - 1e-2 and pixels.max() <= (1 - 0.406) / 0.225 + 1e-2
    same = models.make_inputs("gpt2", generator=torch.Generator().manual_seed(7))["input_ids"]
    again = models.make_inputs("gpt2", generator=torch.Generator().manual_seed(7))["input_ids"]
    assert torch.equal(same, again)


# --------------------------------------------------------------------------- inference
def _run(model_id, task, **kw):
    """Tiny build, inputs and one inference, counting calls of the phase modules."""
    spec = models.tiny(model_id)
    model = models.build(spec, task)
    make_kw = {k: v for k, v in kw.items() if k in ("seq_len", "new_tokens")}
    inputs = models.make_inputs(spec, task, **make_kw)
    calls = {}
    phases = models.phase_modules(model, task)
    handles = [m.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls.get(k, 0) + 1))
               for k, m in phases.items()]
    infer_kw = {k: v for k, v in kw.items() if k in ("new_tokens", "steps", "num_beams")}
    out = models.infer(model, task, inputs, **infer_kw)
    for h in handles:
        h.remove()
    return model, inputs, out, calls


@pytest.mark.integration  # runs a real (tiny) model
@pytest.mark.parametrize("model_id, task, check", [
    ("distilbert-base-uncased-finetuned-sst-2-english", "text-classification", (1, 2)),
    ("cardiffnlp/twitter-roberta-base-sentiment", "text-classification", (1, 3)),
    ("elastic/distilbert-base-cased-finetuned-conll03-english", "token-classification",
     (1, 86, 9)),
    ("bert-large-uncased-whole-word-masking-finetuned-squad", "question-answering", (1, 158)),
    ("albert-base-v2", "fill-mask", (1, 27, 30000)),
    ("microsoft/deberta-base", "fill-mask", (1, 27, 50265)),
    ("google/vit-base-patch16-224", "image-classification", (1, 1000)),
    ("facebook/convnextv2-tiny-1k-224", "image-classification", (1, 1000)),
    ("facebook/detr-resnet-50", "object-detection", (1, 10, 92)),
    ("hustvl/yolos-tiny", "object-detection", (1, 10, 92)),
])
def test_forward_tasks_run_one_forward(model_id, task, check):
    model, _, out, calls = _run(model_id, task)
    assert calls == {"forward": 1}
    logits = out.start_logits if task == "question-answering" else out.logits
    assert tuple(logits.shape) == check
    assert not model.training and next(model.parameters()).device.type == "cpu"


@pytest.mark.integration  # runs a real (tiny) model
@pytest.mark.parametrize("model_id, task, kw, encoder", [
    ("gpt2", "text-generation", {}, None),
    ("facebook/opt-1.3b", "text-generation", {"new_tokens": 3}, None),
    ("facebook/bart-large-cnn", "summarization", {}, "encoder"),  # 4 beams, as the checkpoint
    ("google/pegasus-xsum", "summarization", {"new_tokens": 3, "num_beams": 1}, "encoder"),
    ("nlpconnect/vit-gpt2-image-captioning", "image-to-text", {"new_tokens": 4}, "encoder"),
    ("Salesforce/blip-image-captioning-base", "image-to-text", {}, "encoder"),
    ("microsoft/git-base", "image-to-text", {"new_tokens": 4}, "encoder"),
    ("google/flan-t5-base", "zero-shot-sentiment", {}, "encoder"),
    ("bigscience/bloomz-560m", "zero-shot-summarization", {"new_tokens": 3, "seq_len": 40},
     None),
])
def test_generate_makes_exactly_the_fixed_new_tokens(model_id, task, kw, encoder):
    model, inputs, out, calls = _run(model_id, task, **kw)
    n = kw.get("new_tokens") or models.TASKS[task].shape().new_tokens
    decoder_only = encoder is None
    prompt = inputs["input_ids"].shape[1] if decoder_only else 1  # or the start token
    assert out.shape == (1, prompt + n)
    assert calls["step"] == n  # prefill + (n - 1) decode steps
    if encoder:
        assert calls[encoder] == 1
    assert set(calls) == set(models.phase_modules(model, task))


def test_beam_default_comes_from_the_checkpoint():
    model = models.build("facebook/bart-large-cnn", size="tiny")
    assert model.generation_config.num_beams == 4
    assert models.build("gpt2", size="tiny").generation_config.num_beams in (None, 1)  # greedy


@pytest.mark.integration  # runs a real (tiny) model
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 notice inside diffusers
@pytest.mark.parametrize("model_id, calls_for_2_steps, encoders", [
    ("runwayml/stable-diffusion-v1-5", 3, {"text_encoder": 2}),  # PNDM: N + 1 timesteps
    ("stabilityai/stable-diffusion-2-1", 2, {"text_encoder": 2}),  # DDIM
    ("stabilityai/stable-diffusion-xl-base-1.0", 2, {"text_encoder": 1, "text_encoder_2": 1}),
])
def test_diffusion_runs_one_unet_call_per_timestep(model_id, calls_for_2_steps, encoders):
    model, _, image, calls = _run(model_id, "text-to-image", steps=2)
    assert calls == {**encoders, "denoise": calls_for_2_steps, "vae_decode": 1}
    assert model.unet_calls(2) == calls_for_2_steps
    assert image.shape == (1, 3, 64, 64) and 0 <= image.min() and image.max() <= 1


# --------------------------------------------------------------------------- from files
@pytest.mark.integration  # runs a real (tiny) model
def test_config_json_path_or_directory_builds_any_architecture(tmp_path):
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                      max_position_embeddings=128).to_dict()
    cfg["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for name in (tmp_path, tmp_path / "config.json", str(tmp_path)):
        spec = models.resolve(name)
        assert spec.model_type == "llama" and spec.task == "text-generation"
        assert spec.max_len == 128
    model = models.build(spec)
    inputs = models.make_inputs(spec, seq_len=20, new_tokens=5)
    out = models.infer(model, spec.task, inputs, new_tokens=5)
    assert out.shape == (1, 25)
    assert models.estimate_footprint(spec).params == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="128 positions"):
        models.make_inputs(spec, seq_len=125, new_tokens=5)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(models.UnknownModel, match="model_type"):
        models.resolve(tmp_path / "bad.json")


@pytest.mark.integration  # runs a real (tiny) model
def test_pretrained_loads_local_directory_and_refuses_to_download(tmp_path):
    saved = models.build("bert-base-uncased", "fill-mask", size="tiny", seed=3)
    saved.save_pretrained(tmp_path)
    spec = models.resolve(tmp_path)
    assert spec.task == "fill-mask"
    loaded = models.build(spec, weights="pretrained")
    name, weight = next(iter(saved.state_dict().items()))
    assert torch.equal(loaded.state_dict()[name], weight)
    missing = dataclasses.replace(models.resolve("gpt2"), id="phprof-tests/no-such-model",
                                  aliases=())
    with pytest.raises(models.WeightsNotFound, match="no local weights"):
        models.build(missing, weights="pretrained")
    with pytest.raises(ValueError, match="tiny"):
        models.build("gpt2", weights="pretrained", size="tiny")


@pytest.mark.integration  # runs a real (tiny) model
def test_diffusers_directory_resolves_from_its_component_configs(tmp_path):
    small = models.tiny("segmind/tiny-sd")
    index = {"_class_name": "StableDiffusionPipeline"}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for part, file in [("unet", "config.json"), ("vae", "config.json"),
                       ("text_encoder", "config.json"), ("scheduler", "scheduler_config.json")]:
        (tmp_path / part).mkdir()
        (tmp_path / part / file).write_text(json.dumps(small.config[part]))
    spec = models.resolve(tmp_path)
    assert spec.library == "diffusers" and spec.task == "text-to-image"
    assert spec.config["resolution"] == 64  # unet sample_size x the VAE's 8
    model = models.build(spec)
    image = models.infer(model, spec.task, models.make_inputs(spec), steps=1)
    assert image.shape == (1, 3, 64, 64)
    (tmp_path / "unet" / "config.json").unlink()
    with pytest.raises(models.UnknownModel, match="lacks unet"):
        models.resolve(tmp_path)
