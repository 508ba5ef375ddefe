"""The component taxonomy on the study's architectures and today's, user rules, and energy per component."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from phprof import load
from phprof.attribution import attribute
from phprof.attribution.components import COMPONENTS, Taxonomy
from phprof.models.factory import build

# one model of each family the issue names: decoder-only, seq2seq, encoder, vision, diffusion
FAMILIES = ["gpt2", "bigscience/bloomz-560m", "facebook/opt-1.3b", "EleutherAI/gpt-neo-125m", "google/flan-t5-base",
            "sshleifer/distilbart-xsum-12-6", "google/pegasus-xsum", "bert-large-uncased-whole-word-masking-finetuned-squad",
            "google/vit-base-patch16-224", "facebook/detr-resnet-50", "microsoft/resnet-18",
            "runwayml/stable-diffusion-v1-5"]


def types_of(model_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(model_id, size="tiny")
    root = type(model).__name__
    types = {(path or root): type(m).__name__ for path, m in model.named_modules()}
    types[""] = root
    return types


@pytest.mark.integration
@pytest.mark.parametrize("model_id", FAMILIES)
def test_every_module_of_the_studys_architectures_has_a_component(model_id):
    types = types_of(model_id)
    tax = Taxonomy.load()
    classes = {p: tax.classify(p, types) for p in types if p}
    unclassified = [p for p, c in classes.items() if c.unclassified]
    assert unclassified == []
    assert {c.component for c in classes.values()} <= set(COMPONENTS)
    assert {c.component for c in classes.values()} - {"other"}  # not everything "other"


def test_components_parts_and_stacks_of_known_modules():
    tax = Taxonomy.load()
    gpt2, t5 = types_of("gpt2"), types_of("google/flan-t5-base")
    c = tax.classify("transformer.h.0.attn.c_attn", gpt2)
    assert (c.component, c.part, c.stack) == ("self-attention", "projections", "decoder")
    assert tax.classify("transformer.h.0.attn", gpt2).part == "scores"
    assert tax.classify("transformer.h.0.attn.c_proj", gpt2).part == "output"
    assert tax.classify("transformer.h.1.mlp.c_fc", gpt2).component == "mlp"
    assert tax.classify("lm_head", gpt2).component == "head"
    c = tax.classify("decoder.block.0.layer.1.EncDecAttention.q", t5)
    assert (c.component, c.part, c.stack) == ("cross-attention", "projections", "decoder")
    c = tax.classify("encoder.block.0.layer.1.DenseReluDense.wi", t5)
    assert (c.component, c.stack) == ("mlp", "encoder")
    assert tax.classify("shared", t5).component == "embeddings"
    sd = types_of("runwayml/stable-diffusion-v1-5")
    resnet = next(p for p in sd if p.endswith("resnets.0") and "unet" in p)
    assert (tax.classify(resnet, sd).component, tax.classify(resnet, sd).stack) == ("convolution", "unet")


def test_a_users_rules_come_first(tmp_path, monkeypatch):
    types = {"": "MyNet", "MyNet": "MyNet", "blocks.0.mixer": "HyenaOperator", "blocks.0": "Block"}
    assert Taxonomy.load().classify("blocks.0.mixer", types).unclassified
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"component": "self-attention", "type": "^HyenaOperator$"}],
                                 "stacks": [{"stack": "decoder", "name": "^blocks$"}]}))
    monkeypatch.setenv("PHPROF_TAXONOMY", str(rules))
    c = Taxonomy.load().classify("blocks.0.mixer", types)
    assert (c.component, c.stack, c.unclassified) == ("self-attention", "decoder", False)
    rules.write_text(json.dumps({"rules": [{"component": "magic", "type": "x"}]}))
    with pytest.raises(ValueError, match="unknown component 'magic'"):
        Taxonomy.load()
    rules.write_text(json.dumps({"rules": [{"component": "mlp", "type": "("}]}))
    with pytest.raises(ValueError, match="bad pattern"):
        Taxonomy.load()


@pytest.mark.integration
@pytest.mark.parametrize("which", ["gpt2", "t5-small"])
def test_gpt2_and_t5_small_every_module_in_a_component_and_the_components_add_up(which, gpt2_trace,
                                                                                  t5_small_trace):
    path = gpt2_trace[0] if which == "gpt2" else t5_small_trace
    r = attribute(load(path))
    assert not [layer.label for layer in r.layers if layer.unclassified]
    total = sum(c.energy.joules for c in r.components)
    assert total == pytest.approx(r.inferences_energy.joules, rel=1e-9)
    expected = {"embeddings", "self-attention", "mlp", "norm"} | ({"cross-attention"} if which == "t5-small" else set())
    assert expected <= {c.component for c in r.components}
    stacks = {layer.stack for layer in r.layers if not layer.role.between_inferences}
    assert stacks >= ({"encoder", "decoder"} if which == "t5-small" else {"decoder"})
    assert np.isfinite([c.energy.joules for c in r.components]).all()


# ---- today's architectures, each from a tiny config on the meta device (no memory, no weights) ----------
_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, vocab_size=100, max_position_embeddings=64,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
TODAY = {  # family: (transformers model_type, class, config) or diffusers' UNet
    "llama": ("llama", "LlamaForCausalLM", _DECODER),
    "mistral": ("mistral", "MistralForCausalLM", _DECODER),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", _DECODER),
    "gemma": ("gemma", "GemmaForCausalLM", _DECODER),
    "phi3": ("phi3", "Phi3ForCausalLM", _DECODER),
    "mixtral": ("mixtral", "MixtralForCausalLM", {**_DECODER, "num_local_experts": 2, "num_experts_per_tok": 1}),
    "qwen2-moe": ("qwen2_moe", "Qwen2MoeForCausalLM", {**_DECODER, "num_experts": 2, "num_experts_per_tok": 1,
                                                      "moe_intermediate_size": 32,
                                                      "shared_expert_intermediate_size": 32}),
    "whisper": ("whisper", "WhisperForConditionalGeneration", dict(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, num_mel_bins=8, max_source_positions=16,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[])),
    "clip": ("clip", "CLIPModel", dict(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16), projection_dim=16)),
    "sdxl-unet": None,  # SDXL's UNet: text-time conditioning, transformer depth per block
}


def today_types(family):
    """{path: class name} of a tiny `family` built on the meta device, the root as path ""."""
    import torch

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        if TODAY[family] is None:
            from diffusers import UNet2DConditionModel

            model = UNet2DConditionModel(
                sample_size=8, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=(2, 4),
                transformer_layers_per_block=(1, 2), addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=8 * 6 + 32, use_linear_projection=True)
        else:
            import transformers

            model_type, cls, config = TODAY[family]
            model = getattr(transformers, cls)(transformers.AutoConfig.for_model(model_type, **config))
    return {path: type(m).__name__ for path, m in model.named_modules()}


def _leaf(path):
    return path.rpartition(".")[2]


@pytest.mark.parametrize("family", sorted(TODAY))
def test_todays_architectures_every_module_classified_and_none_mislabelled(family):
    """No module unclassified, and what was mislabelled on Llama and Qwen2 is right everywhere: o_proj
    (out_proj) is attention's output, q/k/v/qkv projections its projections, an activation in an MLP is
    mlp, rotary embeddings are self-attention (not embeddings), the model itself is other."""
    types = today_types(family)
    tax = Taxonomy.load()
    got = {p: tax.classify(p, types) for p in types}
    assert [p for p, c in got.items() if c.unclassified] == []
    assert got[""].component == "other"
    for path, c in got.items():
        name, parent = _leaf(path), path.rpartition(".")[0]
        if name in ("o_proj", "out_proj") or (name == "0" and _leaf(parent) == "to_out"):
            assert (c.component in ("self-attention", "cross-attention"), c.part) == (True, "output"), path
        if name in ("q_proj", "k_proj", "v_proj", "qkv_proj", "to_q", "to_k", "to_v"):
            assert (c.component in ("self-attention", "cross-attention"), c.part) == (True, "projections"), path
        if "rotary" in name:
            assert c.component == "self-attention", path
        if "Activation" in types[path] or name in ("act_fn", "activation_fn"):
            assert c.component in ("mlp", "experts"), path  # every activation of these sits in an MLP


@pytest.mark.parametrize("family", ["mixtral", "qwen2-moe"])
def test_a_mixture_of_experts_has_its_router_and_experts(family):
    types = today_types(family)
    tax = Taxonomy.load()
    block = "model.layers.0.mlp"
    assert tax.classify(f"{block}.gate", types).component == "router"
    assert tax.classify(block, types).component == "router"  # the sparse block's own dispatch
    assert tax.classify(f"{block}.experts", types).component == "experts"
    assert tax.classify(f"{block}.experts.act_fn", types).component == "experts"
    if family == "qwen2-moe":  # an expert every token takes, and its gate
        assert tax.classify(f"{block}.shared_expert.down_proj", types).component == "experts"
        assert tax.classify(f"{block}.shared_expert_gate", types).component == "router"
    assert {"router", "experts"} <= set(COMPONENTS)


def test_whisper_clip_and_sdxl_stacks_heads_and_attention():
    tax = Taxonomy.load()
    w = today_types("whisper")
    c = tax.classify("model.decoder.layers.0.encoder_attn.q_proj", w)
    assert (c.component, c.part, c.stack) == ("cross-attention", "projections", "decoder")
    assert (tax.classify("model.encoder.conv1", w).component, tax.classify("model.encoder.conv1", w).stack) == \
        ("convolution", "encoder")
    assert tax.classify("model.encoder.layers.0.activation_fn", w).component == "mlp"  # beside fc1 and fc2
    assert tax.classify("proj_out", w).component == "head"  # Whisper's output layer, on the root
    clip = today_types("clip")
    assert tax.classify("text_model.embeddings.token_embedding", clip).stack == "text_encoder"
    assert tax.classify("vision_model.encoder.layers.0.mlp.fc1", clip).stack == "encoder"
    assert {tax.classify(p, clip).component for p in ("text_projection", "visual_projection")} == {"head"}
    unet = today_types("sdxl-unet")
    attn2 = next(p for p in unet if p.endswith("attn2.to_k"))
    assert tax.classify(attn2, unet).component == "cross-attention"
    assert tax.classify("add_embedding.linear_1", unet).component == "embeddings"  # SDXL's text-time embedding
    assert tax.classify("time_embedding.act", unet).component == "embeddings"
    assert tax.classify("down_blocks.0.resnets.0.nonlinearity", unet).component == "convolution"
    assert tax.classify("conv_act", unet).component == "convolution"  # beside conv_out


def test_the_model_itself_is_other_whatever_its_class_says():
    """GPT2LMHeadModel's name holds "Head"; it is the model (its own time is structural), as Llama's is."""
    tax = Taxonomy.load()
    for root in ("GPT2LMHeadModel", "LlamaForCausalLM", "BloomForCausalLM", "T5ForConditionalGeneration"):
        assert tax.classify("", {"": root}).component == "other", root
    assert tax.classify("lm_head", {"": "GPT2LMHeadModel", "lm_head": "Linear"}).component == "head"
