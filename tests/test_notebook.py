"""The notebook magic in IPython's own shell: `%load_ext phprof`, `%%phprof` around a cell (its
summary, report and flamegraph as HTML in the output), `%phprof_report` and `%phprof_flamegraph`;
the HTML the cell shows loads in the headless browser with no script errors."""
from __future__ import annotations

import pytest
from test_html import _no_errors, _open, browser  # noqa: F401  (browser: the headless Chromium fixture)

import phprof
from phprof import load

pytest.importorskip("IPython", reason="the notebook magic needs IPython (pip install 'phprof[notebook]')")
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]


def _html(cap) -> list[str]:
    return [o.data["text/html"] for o in cap.outputs if "text/html" in o.data]


def test_the_cell_magic_profiles_a_cell_and_its_html_loads_in_the_browser(tmp_path, monkeypatch, browser):  # noqa: F811
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "phprof")
        shell.run_cell("import torch\nmodel = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), "
                       "torch.nn.Linear(8, 2))")
        out = tmp_path / "cell.h5"
        with capture_output() as cap:
            shell.run_cell_magic("phprof", f"-o {out} --source none --idle 0",
                                 "for _ in range(5):\n    model(torch.randn(2, 8))\n")
        (page,) = _html(cap)
        assert "complete: 5 inferences" in page and "each outermost call" in page
        assert "time per layer" in page and "<iframe srcdoc=" in page
        t = load(out)
        assert t.status == "complete" and len(t.inferences) == 5 and t.meta["recorded_by"] == "%%phprof"
        with capture_output() as cap:
            shell.run_line_magic("phprof_report", str(out))
        assert "time per layer" in _html(cap)[0]
        with capture_output() as cap:
            shell.run_line_magic("phprof_flamegraph", str(out))
        assert _html(cap)[0].startswith("<iframe srcdoc=")
        with capture_output() as cap:
            shell.run_cell_magic("phprof", "--source", "pass\n")
        assert "Error: %%phprof: --source needs a value" in cap.stdout
        with phprof.profile(tmp_path / "outer.h5", gpus="none", source="none", idle_s=0), capture_output() as cap:
            shell.run_cell_magic("phprof", "--source none", "pass\n")  # a kernel already under `phprof run`
        assert "Error: %%phprof: this process is already recorded" in cap.stdout
    finally:
        InteractiveShell.clear_instance()

    _open(browser, f"<!doctype html><html><head><meta charset='utf-8'></head><body>{page}</body></html>",
          tmp_path / "cell.html")
    _no_errors(browser)
    browser.switch_to.frame(browser.find_element("tag name", "iframe"))
    try:
        assert browser.execute_script("return window.phprof.view()")["mode"] == "time"  # the flamegraph ran
        assert browser.execute_script("return window.__errors") == []
    finally:
        browser.switch_to.default_content()
