"""The frame tree that every flamegraph view renders."""
from __future__ import annotations

import shutil

import pytest

import phprof
from phprof import load
from phprof.attribution import attribute
from phprof.render import RenderError
from phprof.render.frames import frame_tree

pytestmark = pytest.mark.integration  # every test reads the session's gpt2 trace


def walk(frame, depth=0):
    yield frame, depth
    for child in frame["children"]:
        yield from walk(child, depth + 1)


@pytest.fixture(scope="module")
def tree(gpt2_trace):
    # attributed here, not through phprof.results: the session's trace file is not written to
    results = attribute(load(gpt2_trace[0]))
    return frame_tree(results), results


def test_the_root_holds_the_inferences_energy_and_frames_add_up(tree):
    tree, results = tree
    root = tree["root"]
    assert tree["total_j"] == root["energy_j"] == pytest.approx(results.inferences_energy.joules, rel=1e-9)
    for frame, _ in walk(root):
        assert frame["energy_j"] == pytest.approx(frame["self_j"] + sum(c["energy_j"] for c in frame["children"]),
                                                  rel=1e-9, abs=1e-12)
        assert frame["self_j"] >= 0 and frame["seconds"] >= frame["self_s"] >= 0
        assert frame["children"] == sorted(frame["children"], key=lambda c: -c["energy_j"])


def test_every_layer_is_a_frame_under_its_parent_with_ops_at_the_leaves(tree, gpt2_trace):
    tree, results = tree
    truth = gpt2_trace[1]
    paths = {f["path"]: (f, d) for f, d in walk(tree["root"])}
    for layer in results.layers:
        if not layer.role.between_inferences:
            assert layer.label in paths
    attn, depth = paths["transformer.h.0.attn"]
    assert attn["kind"] == "attention" and attn["name"] == "attn" and attn["calls"] == truth["inferences"] * truth["new_tokens"]
    assert paths["transformer.h.0"][0]["name"] == "h.0"
    assert any(c["kind"] == "op" for c in attn["children"])  # CPU ops inside its own time
    assert paths["transformer.h.0.attn.c_attn"][1] == depth + 1
    # a resolved layer's inclusive interval holds its inclusive energy
    for f, _ in walk(tree["root"]):
        if f["low_j"] is not None:
            assert f["low_j"] <= f["energy_j"] * (1 + 1e-9) and f["energy_j"] <= f["high_j"] * (1 + 1e-9)


def test_flamegraph_bad_output(gpt2_trace, tmp_path):
    """What `phprof flamegraph` refuses (its exit codes: tests/test_commands_report.py), from the library."""
    path = tmp_path / "t.h5"
    shutil.copy(gpt2_trace[0], path)
    view = phprof.flamegraph(path)
    with pytest.raises(RenderError, match="cannot tell the format"):
        phprof.render(view, tmp_path / "x.png")
    with pytest.raises(RenderError, match="does not exist"):
        phprof.render(view, tmp_path / "missing" / "x.html")
    assert not (tmp_path / "x.png").exists()
