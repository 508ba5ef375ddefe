"""`phprof compare`, `phprof flamegraph` and `phprof report --html` as a user runs them:
exit codes, error lines, what they print, and the files they write (the library's
renderings: what the pages do in a browser is tested on the library's pages, in
tests/test_html.py and tests/test_compare.py, whose session traces (tests/conftest.py) this
module shares).
"""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from test_html import _page_data

import phprof
from phprof.commands import main
from phprof.render.formats import parse_folded

pytestmark = pytest.mark.integration  # every test reads traces of real models (tests/conftest.py)


@pytest.fixture
def runner():
    return CliRunner()


# ---- phprof compare -----------------------------------------------------------------------------
def test_compare_errors(runner, files, silent_trace, tmp_path):
    r = runner.invoke(main, ["compare", str(files[0])])
    assert r.exit_code == 2 and "at least two trace files, got 1" in r.output
    r = runner.invoke(main, ["compare", str(files[0]), str(tmp_path / "missing.h5")])
    assert r.exit_code == 1 and "missing.h5" in r.output
    r = runner.invoke(main, ["compare", str(files[0]), str(silent_trace)])
    assert r.exit_code == 1 and f"{silent_trace}: no energy to compare" in r.output and "no power readings" in r.output
    assert r.output.startswith("Error: ")  # one line for the user, no traceback
    r = runner.invoke(main, ["compare", *map(str, files), "--html", str(tmp_path / "no-folder" / "c.html")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_compare_markdown_json_and_html(runner, files, tmp_path):
    r = runner.invoke(main, ["compare", *map(str, files), "--markdown", "--html", str(tmp_path / "c.html")])
    assert r.exit_code == 0, r.output
    assert "warning: task differs" in r.stderr and "warning:" not in r.stdout.replace("**warning:**", "")
    assert r.stdout.startswith("**google/flan-t5-base uses")
    assert (tmp_path / "c.html").stat().st_size > 10_000 and "written:" in r.stderr
    c = phprof.compare(files)
    assert r.stdout == phprof.render(c, "markdown")
    # the page the command writes is the library's comparison page (tested in the browser in test_compare.py)
    assert (tmp_path / "c.html").read_text(encoding="utf-8") == phprof.render(c, "html")
    r = runner.invoke(main, ["compare", *map(str, files), "--json"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert [x["name"] for x in data["runs"]] == ["gpt2", "google/flan-t5-base"]
    assert data == json.loads(phprof.render(c, "json"))
    r = runner.invoke(main, ["compare", str(files[0]), str(files[0]), str(files[1])])  # same model twice: named apart
    assert r.exit_code == 0 and "A = gpt2 (gpt2.h5) #1 (text-generation), B = gpt2 (gpt2.h5) #2" in r.stdout
    assert "Δ C - A" in r.stdout
    # the text: the library's, its warnings on stderr instead
    r = runner.invoke(main, ["compare", *map(str, files)])
    assert r.exit_code == 0 and r.stdout == phprof.render(c, "text", warnings=False)
    assert [f"warning: {w}" for w in c.warnings] == r.stderr.splitlines()


def test_compare_html_min_share(runner, files, tmp_path):
    r = runner.invoke(main, ["compare", *map(str, files), "--html", str(tmp_path / "c.html"), "--min-share", "0.05"])
    assert r.exit_code == 0, r.output
    data = _page_data((tmp_path / "c.html").read_text(encoding="utf-8"))
    assert data["min_share"] == 0.05 and data["diff"]["names"] == ["gpt2", "google/flan-t5-base"]
    r = runner.invoke(main, ["compare", *map(str, files), "--min-share", "0.9"])
    assert r.exit_code == 2 and "--min-share" in r.output


# ---- phprof report --html and phprof flamegraph ---------------------------------------------------
@pytest.fixture
def gpt2_copy(gpt2_trace, tmp_path):
    path = tmp_path / "gpt2.h5"
    shutil.copy(gpt2_trace[0], path)
    return path


def test_report_and_flamegraph_pages_of_a_real_trace(runner, gpt2_copy, tmp_path):
    """`phprof report --json --html` and `phprof flamegraph -o x.html` write the library's
    pages (which tests/test_html.py opens in a browser); the report's JSON total is the page's."""
    r = runner.invoke(main, ["report", str(gpt2_copy), "--json", "--html", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    assert "written:" in r.stderr and str(tmp_path / "report.html") in r.stderr
    report_total = json.loads(r.stdout)["summary"]["inferences_energy"]["joules"]
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "flame.html")])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"written: {tmp_path / 'flame.html'} (") and "note:" not in r.output
    report = phprof.report(gpt2_copy)
    assert json.loads(phprof.render(report, "json"))["summary"]["inferences_energy"]["joules"] == report_total
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == phprof.render(report, "html")
    flame = (tmp_path / "flame.html").read_text(encoding="utf-8")
    assert flame == phprof.render(phprof.flamegraph(gpt2_copy), "html")
    data = _page_data(flame)
    assert data["measure"] == "energy" and data["total_j"] == pytest.approx(report_total, rel=1e-9)


def test_flamegraph_formats_by_name_and_by_option(runner, gpt2_copy, tmp_path):
    view = phprof.flamegraph(gpt2_copy)
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "x.folded")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x.folded").read_text(encoding="utf-8") == phprof.render(view, "folded")
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "stacks.txt"), "--format", "folded"])
    assert r.exit_code == 0, r.output
    assert parse_folded((tmp_path / "stacks.txt").read_text()) == parse_folded(phprof.render(view, "folded"))
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "x.speedscope.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "x.speedscope.json").read_text())["profiles"][0]["weights"]
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "x.html"), "--min-share", "0.05"])
    assert r.exit_code == 0 and _page_data((tmp_path / "x.html").read_text())["min_share"] == 0.05


def test_flamegraph_errors(runner, gpt2_copy, tmp_path):
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "x.svg")])
    assert r.exit_code == 2 and "cannot tell the format of 'x.svg'" in r.output and "or give --format" in r.output
    for fmt in phprof.render.format_names("flamegraph"):
        assert fmt in r.output
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "x.folded"), "--format", "svg"])
    assert r.exit_code == 2 and "Invalid value for '--format'" in r.output
    r = runner.invoke(main, ["flamegraph", str(gpt2_copy), "-o", str(tmp_path / "no-folder" / "x.html")])
    assert r.exit_code == 1 and "does not exist" in r.output and not (tmp_path / "no-folder").exists()
    r = runner.invoke(main, ["flamegraph", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 1 and "missing.h5" in r.output and r.output.startswith("Error: ")
    assert not (tmp_path / "x.html").exists()


def test_a_trace_without_energy_by_the_commands(runner, silent_trace, tmp_path):
    """No power readings: `phprof flamegraph` writes the time flamegraph and says so;
    `phprof report --html` writes its time page."""
    r = runner.invoke(main, ["flamegraph", str(silent_trace), "-o", str(tmp_path / "t.html")])
    assert r.exit_code == 0, r.output
    assert "note: time only, energy not measured" in r.stderr and "no power readings" in r.stderr
    page = (tmp_path / "t.html").read_text(encoding="utf-8")
    assert page == phprof.render(phprof.flamegraph(silent_trace), "html")
    assert _page_data(page)["measure"] == "time"
    r = runner.invoke(main, ["flamegraph", str(silent_trace), "-o", str(tmp_path / "t.folded")])
    assert r.exit_code == 0 and parse_folded((tmp_path / "t.folded").read_text())  # µs
    r = runner.invoke(main, ["report", str(silent_trace), "--html", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == phprof.render(phprof.report(silent_trace), "html")
    assert "not measured" in r.stdout
