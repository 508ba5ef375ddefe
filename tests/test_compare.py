"""phprof.compare: two traced models (a tiny gpt2 and a tiny Flan-T5, fake GPU power per
module) compared per component, token, parameter and phase; the markdown, JSON and
HTML renderings (``phprof.render``); the differential flamegraph in a headless Chromium
(skips, saying why, without selenium/chromium, like tests/test_html.py). Screenshots go
to tests/artifacts/. What `phprof compare` prints and writes: tests/test_commands_views.py
(which reads the same session traces).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import h5py
import pytest
from test_html import _hover, _no_errors, _open, _screenshot, bert_tree, browser  # noqa: F401

import phprof
from phprof.api import CompareError
from phprof.attribution.compare import Comparison, Run, compare
from phprof.errors import PhprofError
from phprof.render.flamegraph import diff_flamegraph_html, embedded_data
from phprof.render.frames import diff_tree
from phprof.store.results import Layer


# ---- the two runs: the session's gpt2 and Flan-T5 traces (tests/conftest.py: gpt2_trace, t5_trace, files)
@pytest.fixture(scope="module")
def runs(files):
    """(Run, its results, the trace) per file."""
    out = []
    for path in files:
        t = phprof.load(path)
        assert t.results is not None  # stored by `files`, read back
        out.append((Run.from_trace(t, t.results), t.results, t))
    return out


@pytest.fixture(scope="module")
def ab(runs):
    return compare([runs[0][0], runs[1][0]])


@pytest.mark.integration
def test_components_add_up_to_each_runs_energy_per_inference(ab, runs):
    for i, (run, results, t) in enumerate(runs):
        per_inference = results.inferences_energy.joules / results.inferences
        assert ab.runs[i].energy.joules == pytest.approx(per_inference, rel=1e-12)
        for rows in (ab.components, ab.by_component):
            cells = [r.cells[i] for r in rows if r.cells[i] is not None]
            assert math.isclose(sum(c.energy.joules for c in cells), per_inference, rel_tol=1e-6)
            assert math.isclose(sum(c.share for c in cells), 1.0, rel_tol=1e-6)
        assert ab.total.cells[i].energy.joules == ab.runs[i].energy.joules
        phases = [r.cells[i] for r in ab.phases if r.cells[i] is not None]
        assert math.isclose(sum(c.energy.joules for c in phases), per_inference, rel_tol=1e-9)
        # 4 generated tokens: gpt2 = prefill + 3 decode steps, Flan-T5 = 4 decode steps (the encoder makes none)
        assert ab.runs[i].tokens_per_inference == 4
        assert ab.runs[i].per_token.joules == pytest.approx(per_inference / 4, rel=1e-12)
        assert run.parameters == int(t.modules["parameters"].sum()) > 0
        assert ab.runs[i].per_parameter == pytest.approx(per_inference / run.parameters, rel=1e-12)
        for r in ab.components:  # a row's per-parameter figure is over its own modules' parameters
            c = r.cells[i]
            if c is not None and c.parameters:
                assert c.per_parameter == pytest.approx(c.energy.joules / c.parameters, rel=1e-12)
        # every range holds its figure
        for r in ab.components:
            c = r.cells[i]
            if c is not None and c.energy.low_j is not None:
                lo, e, hi = c.energy.low_j, c.energy.joules, c.energy.high_j
                assert lo <= e * (1 + 1e-12) and e <= hi * (1 + 1e-12)
    # the two architectures line up where they share a component
    assert None not in ab.row("decoder self-attention").cells
    assert ab.row("decoder cross-attention").cells[0] is None and ab.row("encoder self-attention").cells[0] is None
    phases = [r.key for r in ab.phases]
    assert phases[:3] == ["encode", "prefill", "decode"] and phases[-1] == "(outside phases)"


@pytest.mark.integration
def test_deltas_are_antisymmetric(ab, runs):
    ba = compare([runs[1][0], runs[0][0]])
    assert [r.key for r in ab.components] == [r.key for r in ba.components]
    pairs = list(zip(ab.components, ba.components)) + list(zip(ab.by_component, ba.by_component)) + \
        list(zip(ab.phases, ba.phases)) + [(ab.total, ba.total)]
    for x, y in pairs:
        assert x.key == y.key and x.deltas[0] is None and y.deltas[0] is None
        d, e = x.deltas[1], y.deltas[1]
        assert d.joules == -e.joules, x.key
        assert d.low_j == (None if e.high_j is None else -e.high_j)
        assert d.high_j == (None if e.low_j is None else -e.low_j)
        assert d.share == -e.share and (d.per_token is None or d.per_token == -e.per_token)
        assert (d.per_step is None) == (e.per_step is None) and (d.per_step is None or d.per_step == -e.per_step)
        assert x.cells == tuple(reversed(y.cells))
    # a run against itself: no difference, no warning
    same = compare([runs[0][0], runs[0][0]])
    assert same.warnings == () and all(r.deltas[1].joules == 0 for r in same.components)


@pytest.mark.integration
def test_the_library_call_compares_the_files(ab, files):
    """phprof.compare: the files' stored results, named by their models, the same comparison;
    the same model twice is named apart by its file."""
    c = phprof.compare(files)
    assert c == ab and [r.name for r in c.runs] == ["gpt2", "google/flan-t5-base"]
    assert len(c.results) == 2 and c.results[0].model == "gpt2"
    three = phprof.compare([files[0], files[0], files[1]])
    assert [r.name for r in three.runs] == ["gpt2 (gpt2.h5) #1", "gpt2 (gpt2.h5) #2", "google/flan-t5-base"]
    assert [r.name for r in phprof.compare(files, names=["a", "b"]).runs] == ["a", "b"]


@pytest.mark.integration
def test_warnings_name_what_differs(ab):
    task = [w for w in ab.warnings if w.startswith("task differs")]
    assert len(task) == 1 and "'text-generation'" in task[0] and "'zero-shot-summarization'" in task[0]
    assert any(w.startswith("input shapes differ") and "input_ids" in w for w in ab.warnings)
    assert not any(w.startswith(("device differs", "sensor differs", "new_tokens", "dtype")) for w in ab.warnings)


def _markdown_tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _cells(line: str) -> list[str]:
    assert line.startswith("| ") or line.startswith("|-"), line
    assert line.endswith(" |") or line.endswith("-|") or line.endswith(":|"), line
    return re.split(r"(?<!\\)\|", line.strip()[1:-1])


@pytest.mark.integration
def test_markdown_tables_are_well_formed(ab):
    md = phprof.render(ab, "markdown")
    print(md)
    tables = _markdown_tables(md)
    assert len(tables) >= 4
    for t in tables:
        width = len(_cells(t[0]))
        assert re.fullmatch(r"\|---\|(---:\|)+", t[1]), t[1]
        assert all(len(_cells(line)) == width for line in t), t
        assert len(t) >= 3
    components = next(t for t in tables if t[0].startswith("| component | A | B | Δ B - A | share A | share B |"))
    assert any(line.startswith("| decoder self-attention |") for line in components)
    assert components[-1].startswith("| **total** |")
    assert "> **warning:** task differs" in md and md.startswith("**google/flan-t5-base uses ")
    assert "A = gpt2 (text-generation), B = google/flan-t5-base (zero-shot-summarization)" in md
    text = phprof.render(ab, "text")
    assert "Energy by component, J per inference:" in text and "warning: task differs" in text
    # without the warnings (the command prints them on stderr), the same tables
    quiet = phprof.render(ab, "text", warnings=False)
    assert "warning:" not in quiet and "Energy by component, J per inference:" in quiet
    assert [x for x in text.splitlines() if not x.startswith("warning: ")] == quiet.splitlines()
    assert "A = gpt2 (text-generation), B = google/flan-t5-base (zero-shot-summarization)" in text
    assert "Δ B - A" in text and "Δ C - A" not in text


@pytest.mark.integration
def test_json_round_trips(ab):
    text = phprof.render(ab, "json")
    data = json.loads(text)  # strict JSON: the renderer refuses NaN
    assert Comparison.from_dict(data) == ab
    assert json.loads(phprof.render(Comparison.from_dict(data), "json")) == data
    assert data["runs"][1]["task"] == "zero-shot-summarization" and len(data["components"]) == len(ab.components)


@pytest.mark.integration
def test_compare_needs_two_runs(runs, files):
    with pytest.raises(ValueError, match="at least two"):
        compare([runs[0][0]])
    with pytest.raises(CompareError, match="at least two trace files, got 1"):
        phprof.compare([files[0]])


@pytest.mark.integration
def test_compare_errors_name_the_file(files, silent_trace, tmp_path):
    """A missing file, and a trace without energy, are refused naming the file (and what
    to run instead); what `phprof compare` prints of them: tests/test_commands_views.py."""
    missing = tmp_path / "missing.h5"
    with pytest.raises(PhprofError, match="missing.h5"):
        phprof.compare([files[0], missing])
    with pytest.raises(CompareError) as e:
        phprof.compare([files[0], silent_trace])
    assert f"{silent_trace}: no energy to compare" in str(e.value) and "no power readings" in str(e.value)
    assert f"phprof report {silent_trace}" in str(e.value)


@pytest.mark.integration
def test_three_runs_each_against_the_first(files):
    c = phprof.compare([files[0], files[0], files[1]])
    text = phprof.render(c, "text")
    assert "A = gpt2 (gpt2.h5) #1 (text-generation), B = gpt2 (gpt2.h5) #2" in text
    assert "Δ B - A" in text and "Δ C - A" in text
    assert all(r.deltas[1].joules == 0 for r in c.components if r.cells[0] is not None)  # B is A
    assert all(r.deltas[1] is None for r in c.components if r.cells[0] is None)  # neither has it
    assert c.total.deltas[2] == phprof.compare(files).total.deltas[1]  # C against A: B of the pair


# ---- the differential flamegraph ----------------------------------------------------------------
def _two_berts():
    """A: bert_tree(2); B: the same with layer 1's MLP twice as hungry, layer 0's attention
    a quarter less, and a third layer only B has."""
    a = bert_tree(2)
    b = bert_tree(3)
    stack = [b["root"]]
    while stack:
        f = stack.pop()
        if f["path"].startswith("bert.encoder.layer.1.intermediate"):
            f["self_j"] *= 2
        if f["path"].startswith("bert.encoder.layer.0.attention"):
            f["self_j"] *= 0.75
        stack.extend(f["children"])
    from phprof.render.frames import add_up

    add_up(b["root"])
    b["total_j"] = b["root"]["energy_j"]
    return a, b


def test_diff_tree_is_the_union_by_path():
    a, b = _two_berts()
    d = diff_tree(a, b, ("two layers", "three layers"))
    frames, stack = {}, [d["root"]]
    while stack:
        f = stack.pop()
        frames[f["path"]] = f
        stack.extend(f["children"])
        # never narrower than either run; children fit
        assert f["energy_j"] >= max(f["a_j"], f["b_j"]) - 1e-12
        assert f["energy_j"] >= sum(c["energy_j"] for c in f["children"]) - 1e-12
    n = a["inferences"]
    assert d["root"]["a_j"] == pytest.approx(a["total_j"] / n)
    assert d["root"]["b_j"] == pytest.approx(b["total_j"] / n)
    assert frames["bert.encoder.layer.2"]["a_j"] == 0 and frames["bert.encoder.layer.2"]["b_j"] > 0
    mlp = frames["bert.encoder.layer.1.intermediate"]
    assert mlp["b_j"] == pytest.approx(2 * mlp["a_j"])
    same = frames["bert.embeddings"]
    assert same["a_j"] == same["b_j"]
    data = embedded_data(d, min_share=0.01)  # merged frames keep both runs' sums
    assert data["diff"]["names"] == ["two layers", "three layers"]
    assert data["frames"]["a_j"][0] == pytest.approx(d["root"]["a_j"])
    kids = [i for i, p in enumerate(data["frames"]["parent"]) if p == 0]
    assert sum(data["frames"]["b_j"][i] for i in kids) == pytest.approx(d["root"]["b_j"] - d["root"]["b_self_j"])


def _frame_info(browser, path):
    return browser.execute_script("return window.phprof.frame(arguments[0])", path)


@pytest.mark.integration
def test_diff_flamegraph_in_browser(browser, tmp_path):
    a, b = _two_berts()
    _open(browser, diff_flamegraph_html(a, b, ("bert 2 layers", "bert 3 layers")), tmp_path / "diff.html")
    ph = "return window.phprof."
    assert browser.execute_script(ph + "diff()")["names"] == ["bert 2 layers", "bert 3 layers"]
    more = _frame_info(browser, "bert.encoder.layer.1.intermediate")
    less = _frame_info(browser, "bert.encoder.layer.0.attention.self")
    equal = _frame_info(browser, "bert.embeddings")
    only_b = _frame_info(browser, "bert.encoder.layer.2")
    assert more["b"] > more["a"] and more["direction"] > 0 and more["change"] == "+100%"
    assert less["b"] < less["a"] and less["direction"] < 0
    assert equal["direction"] == 0 and only_b["change"] == "only in bert 3 layers" and only_b["direction"] == 1
    assert len({more["colour"], less["colour"], equal["colour"]}) == 3
    hue = lambda c: int(re.match(r"hsl\((\d+)", c).group(1))  # noqa: E731
    assert hue(more["colour"]) < 20 and 180 < hue(less["colour"]) < 240  # red, blue
    assert re.match(r"hsl\(0 0% \d+%\)", equal["colour"])  # grey
    header = browser.find_element("id", "head").text
    assert "bert 2 layers:" in header and "red where bert 3 layers spends more" in header
    assert "equal (±1%)" in browser.find_element("id", "legend").text
    # the API of the plain page still works
    assert browser.execute_script(ph + "zoom('bert.encoder.layer.1')") is True
    assert browser.execute_script(ph + "search('intermediate')") >= 1
    browser.execute_script(ph + "search('')")
    browser.execute_script(ph + "zoom(null)")
    # hover: both runs and the difference
    rows = browser.execute_script("return document.getElementById('canvas').height") // 20
    tip = _hover(browser, 0.5, rows - 1)
    assert "bert 2 layers" in tip and "bert 3 layers" in tip and "Δ" in tip and "per inference" in tip
    _screenshot(browser, "compare-bert-diff.png")
    _no_errors(browser)


@pytest.mark.integration
def test_comparison_page_in_browser(browser, files, tmp_path):
    page = tmp_path / "compare.html"
    ab = phprof.compare(files)
    assert phprof.render(ab, page) == page
    assert page.stat().st_size > 10_000
    _open(browser, page.read_text(encoding="utf-8"), tmp_path / "copy.html")
    _no_errors(browser)
    diff = browser.execute_script("return window.phprof.diff()")
    assert diff["names"] == ["gpt2", "google/flan-t5-base"]
    assert diff["a"] == pytest.approx(ab.runs[0].energy.joules, rel=1e-9)
    assert diff["b"] == pytest.approx(ab.runs[1].energy.joules, rel=1e-9)
    # a frame only Flan-T5 has (B > A): red; one both have where B spends less: blue
    encoder = _frame_info(browser, "encoder")
    assert encoder["a"] == 0 and encoder["b"] > 0 and encoder["direction"] == 1
    # the models' own scopes are one frame (GPT2LMHeadModel → T5ForConditionalGeneration), so their
    # heads line up: gpt2's tied 1.6 M-parameter head against T5's
    head = _frame_info(browser, "lm_head")
    assert head["a"] > 0 and head["b"] > 0
    assert head["colour"] != encoder["colour"] and (head["direction"] < 0) == (head["b"] < head["a"])
    assert _frame_info(browser, "T5ForConditionalGeneration")["a"] > 0
    text = browser.find_element("tag name", "body").text
    assert "Energy by component, J per inference" in text and "Phases, J per inference and per step" in text
    assert "task differs" in text and "decoder cross-attention" in text
    browser.set_window_size(1400, 2300)
    try:
        shot = _screenshot(browser, "compare-gpt2-flan-t5.png")
    finally:
        browser.set_window_size(1400, 1000)
    print(f"comparison page screenshot: {shot}")


@pytest.mark.integration
def test_results_stored_before_the_taxonomy_are_recomputed_with_it(files, tmp_path):
    """Results an older phprof stored (no taxonomy columns: component, part, stack, module
    type, parameters) are not read as results without components: the file's results read
    back as None, and phprof.compare attributes again, with the taxonomy (components from
    the module path, stacks, parameters from the trace's modules)."""
    old = []
    for path in files:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        with h5py.File(copy, "r+") as f:
            f["results"].attrs["results_version"] = 2
            layers = f["results/layers"]
            for c in ("component", "part", "stack", "module_type", "parameters"):
                del layers[c]
            layers.attrs["columns"] = [c for c in layers.attrs["columns"] if c in layers]
        assert phprof.load(copy).results is None
        old.append(copy)
    c = phprof.compare(old)
    assert c == phprof.compare(files)  # what the current phprof attributes of the same traces
    assert any(r.stack for r in c.components) and "decoder cross-attention" in [r.key for r in c.components]
    for i in range(len(old)):
        cells = [r.cells[i] for r in c.components if r.cells[i] is not None]
        assert math.isclose(sum(x.energy.joules for x in cells), c.runs[i].energy.joules, rel_tol=1e-6)
        assert sum(x.parameters for x in cells) > 0
        assert phprof.load(old[i]).results is not None  # stored again, in this version


@pytest.mark.integration
def test_results_without_a_taxonomy_compare_in_one_stack(runs):
    """Results whose layers carry no taxonomy (a Layer's defaults: component "other", no
    stack, no parameters) still compare: one row per run, in no stack, adding up to the
    run's energy; the run's own parameter count (from its trace) stays."""
    plain = []
    for run, results, _ in runs:
        layers = [Layer(x.label, x.role, x.seconds, x.energy, x.power_w, x.group, x.parent, x.calls)
                  for x in results.layers]
        stripped = dataclasses.replace(results, layers=layers, components=[], stack_components=[])
        plain.append(Run(run.name, stripped, run.meta, run.parameters))
    c = compare(plain)
    assert all(r.stack == "" for r in c.components) and [r.key for r in c.components] == ["other"]
    for i, run in enumerate(plain):
        cells = [r.cells[i] for r in c.components if r.cells[i] is not None]
        assert math.isclose(sum(x.energy.joules for x in cells), c.runs[i].energy.joules, rel_tol=1e-6)
        assert c.runs[i].parameters == run.parameters > 0
        assert all(x.role.between_inferences or x.component == "other" for x in run.results.layers)
