"""The frame tree that every flamegraph view renders."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from phprof import load
from phprof.attribution import attribute
from phprof.attribution.results import to_results
from phprof.cli import main
from phprof.render.frames import frame_tree


def walk(frame, depth=0):
    yield frame, depth
    for child in frame["children"]:
        yield from walk(child, depth + 1)


@pytest.fixture(scope="module")
def tree(gpt2_trace):
    t = load(gpt2_trace[0])
    summary, tables = to_results(attribute(t), t.meta)
    return frame_tree(summary, tables), summary, tables


def test_the_root_holds_the_inferences_energy_and_frames_add_up(tree):
    tree, summary, tables = tree
    root = tree["root"]
    assert tree["total_j"] == root["energy_j"] == pytest.approx(summary["inferences_energy"]["joules"], rel=1e-9)
    for frame, _ in walk(root):
        assert frame["energy_j"] == pytest.approx(frame["self_j"] + sum(c["energy_j"] for c in frame["children"]),
                                                  rel=1e-9, abs=1e-12)
        assert frame["self_j"] >= 0 and frame["seconds"] >= frame["self_s"] >= 0
        assert frame["children"] == sorted(frame["children"], key=lambda c: -c["energy_j"])


def test_every_layer_is_a_frame_under_its_parent_with_ops_at_the_leaves(tree):
    tree, summary, tables = tree
    paths = {f["path"]: (f, d) for f, d in walk(tree["root"])}
    for label in tables["layers"]["label"]:
        if label != "(idle)":
            assert label in paths
    attn, depth = paths["transformer.h.0.attn"]
    assert attn["kind"] == "attention" and attn["name"] == "attn" and attn["calls"] == 60 * 4
    assert paths["transformer.h.0"][0]["name"] == "h.0"
    assert any(c["kind"] == "op" for c in attn["children"])  # CPU ops inside its own time
    assert paths["transformer.h.0.attn.c_attn"][1] == depth + 1
    # a resolved layer's inclusive interval holds its inclusive energy
    for f, _ in walk(tree["root"]):
        if f["low_j"] is not None:
            assert f["low_j"] <= f["energy_j"] * (1 + 1e-9) and f["energy_j"] <= f["high_j"] * (1 + 1e-9)


def test_flamegraph_command_bad_input(gpt2_trace, tmp_path):
    path = tmp_path / "t.h5"
    shutil.copy(gpt2_trace[0], path)
    r = CliRunner().invoke(main, ["flamegraph", str(path), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "cannot tell the format" in r.output
    r = CliRunner().invoke(main, ["flamegraph", str(path), "-o", str(tmp_path / "missing" / "x.html")])
    assert r.exit_code == 1 and "does not exist" in r.output
