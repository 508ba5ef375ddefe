"""The component taxonomy on the study's architectures, user rules, and energy per component."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from phprof import load
from phprof.attribution import attribute
from phprof.attribution.components import COMPONENTS, Taxonomy
from phprof.models.factory import build
from phprof.store.results import Role

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
    stacks = {layer.stack for layer in r.layers if layer.role is not Role.BETWEEN_INFERENCES}
    assert stacks >= ({"encoder", "decoder"} if which == "t5-small" else {"decoder"})
    assert np.isfinite([c.energy.joules for c in r.components]).all()
