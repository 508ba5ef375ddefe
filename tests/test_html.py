"""The HTML flamegraph: what it embeds (plain Python) and how it behaves in a
headless Chromium (selenium); the pages of real traces (``phprof.render`` of
``phprof.flamegraph`` and ``phprof.report``), with and without energy. The
browser tests skip, saying why, where selenium, chromium or chromedriver is
missing (``apt-get install chromium chromium-driver``; ``pip install
selenium``). Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof.render.flamegraph import embedded_data, flamegraph_html
from phprof.render.frames import TIME_ONLY, add_up
from phprof.render.palette import KINDS

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INFERENCES = 100


# ---- trees ----------------------------------------------------------------------------------
def _frame(name, path, kind, self_j=0.0, self_s=0.0, children=(), *, interval=True, calls=None, method=None):
    return {"name": name, "path": path, "kind": kind, "energy_j": 0.0, "self_j": self_j, "seconds": 0.0,
            "self_s": self_s, "low_j": None, "high_j": None, "calls": calls,
            "method": method or ("sensor-model regression" if interval else "its layer's power x its time"),
            "children": list(children), "_interval": interval}


def _finish(root, title, inferences):
    """Inclusive sums bottom up; intervals of +-10% where the frame has one."""
    add_up(root)
    stack = [root]
    while stack:
        f = stack.pop()
        if f.pop("_interval"):
            f["low_j"], f["high_j"] = 0.9 * f["energy_j"], 1.1 * f["energy_j"]
        stack.extend(f["children"])
    return {"title": title, "unit": "J", "inferences": inferences, "interval": 0.9,
            "total_j": root["energy_j"], "root": root}


def _linear(path, name, j, s, kernel="sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64"):
    """A module that runs one aten::linear, itself one GEMM kernel."""
    kern = _frame(kernel, f"{path};aten::linear;{kernel}", "kernel", j, s, interval=False, calls=INFERENCES)
    op = _frame("aten::linear", f"{path};aten::linear", "op", 0.0, s / 20, [kern], interval=False, calls=INFERENCES)
    kind = "attention" if "attention" in path else "mlp" if ("intermediate" in path or "output" in path) else "other"
    return _frame(name, path, kind, j / 16, s / 10, [op], calls=INFERENCES)


def bert_tree(layers=12):
    """A BERT-base-like classifier, 100 inferences. Energies are multiples of
    1/64 J so every sum is exact: the total is ``bert_total(layers)``."""
    emb = _frame("embeddings", "bert.embeddings", "embedding", 1 / 64, 0.002, [
        _frame("word_embeddings", "bert.embeddings.word_embeddings", "embedding", 2 / 64, 0.004, [
            _frame("aten::embedding", "bert.embeddings.word_embeddings;aten::embedding", "op", 0, 0.001, [
                _frame("indexSelectLargeIndex", "bert.embeddings.word_embeddings;aten::embedding;indexSelectLargeIndex",
                       "kernel", 4 / 64, 0.006, interval=False, calls=INFERENCES)], interval=False, calls=INFERENCES)],
               calls=INFERENCES),
        _frame("LayerNorm", "bert.embeddings.LayerNorm", "norm", 2 / 64, 0.005, calls=INFERENCES),
    ])
    blocks = []
    for i in range(layers):
        p = f"bert.encoder.layer.{i}"
        sdpa_k = "flash_fwd_kernel"
        attn_self = _frame("self", f"{p}.attention.self", "attention", 1 / 64, 0.004, [
            _linear(f"{p}.attention.self.query", "query", 16 / 64, 0.010),
            _linear(f"{p}.attention.self.key", "key", 16 / 64, 0.010),
            _linear(f"{p}.attention.self.value", "value", 16 / 64, 0.010),
            _frame("aten::scaled_dot_product_attention", f"{p}.attention.self;aten::scaled_dot_product_attention",
                   "op", 1 / 64, 0.004, [
                       # memory-bound: a large share of time, a smaller share of energy
                       _frame(sdpa_k, f"{p}.attention.self;aten::scaled_dot_product_attention;{sdpa_k}", "kernel",
                              12 / 64, 0.060, interval=False, calls=INFERENCES)], interval=False, calls=INFERENCES),
        ], calls=INFERENCES)
        attn_out = _frame("output", f"{p}.attention.output", "attention", 0, 0.002, [
            _linear(f"{p}.attention.output.dense", "dense", 16 / 64, 0.010),
            _frame("LayerNorm", f"{p}.attention.output.LayerNorm", "norm", 2 / 64, 0.008, calls=INFERENCES),
        ], calls=INFERENCES)
        attention = _frame("attention", f"{p}.attention", "attention", 0, 0.001, [attn_self, attn_out],
                           calls=INFERENCES)
        inter = _frame("intermediate", f"{p}.intermediate", "mlp", 1 / 64, 0.003, [
            _linear(f"{p}.intermediate.dense", "dense", 64 / 64, 0.030)], calls=INFERENCES)
        out = _frame("output", f"{p}.output", "mlp", 0, 0.002, [
            _linear(f"{p}.output.dense", "dense", 64 / 64, 0.030),
            _frame("LayerNorm", f"{p}.output.LayerNorm", "norm", 2 / 64, 0.008, calls=INFERENCES),
        ], calls=INFERENCES)
        blocks.append(_frame(f"layer.{i}", p, "other", 0, 0.001, [attention, inter, out], calls=INFERENCES))
    encoder = _frame("encoder", "bert.encoder", "other", 0, 0.001, blocks, calls=INFERENCES)
    bert = _frame("bert", "bert", "other", 0, 0.001, [emb, encoder], calls=INFERENCES)
    classifier = _linear("classifier", "classifier", 8 / 64, 0.001)
    classifier["kind"] = "head"
    root = _frame("all", "all", "other", 8 / 64, 0.05, [bert, classifier], calls=INFERENCES)
    return _finish(root, "bert-base-uncased (text-classification)", INFERENCES)


def bert_total(layers=12):
    """The energy of ``bert_tree(layers)`` in J, by hand: per layer the Linear
    modules hold j + j/16 each, the rest is listed."""
    lin = lambda j: j + j / 16  # noqa: E731
    per_layer = (1 + 3 * lin(16) + 1 + 12 + lin(16) + 2 + 1 + lin(64) + lin(64) + 2) / 64
    embeddings = (1 + 2 + 4 + 2) / 64
    return layers * per_layer + embeddings + lin(8) / 64 + 8 / 64


def random_tree(n=200_000, seed=7):
    """``n`` frames: random attachment (each frame's parent drawn from those
    before it, so about ln n deep), heavy-tailed energies, times that are not
    proportional to energy, some frames with no interval. (The random numbers are
    drawn up front, in bulk: drawing them one by one took most of the time.)"""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    parents = (rng.random(n) ** 0.7 * i).astype(np.int64).tolist()  # a little bias to older frames: wider trees
    energies = rng.lognormal(0, 2.0, n) * 1e-3
    seconds = (energies * rng.lognormal(0, 0.7, n) * 1e-2).tolist()
    energies = energies.tolist()
    intervals = (rng.random(n) < 0.7).tolist()
    calls = rng.integers(1, 10_000, n).tolist()
    kinds = ["attention", "mlp", "norm", "embedding", "head", "convolution", "other", "kernel", "op"]
    frames = [_frame("all", "all", "other", 0.0, 0.0)]
    for i in range(1, n):
        parent = frames[parents[i]]
        kind = kinds[i % len(kinds)]
        name = f"{kind}_{i}"
        f = _frame(name, f"{parent['path']}.{name}", kind, energies[i], seconds[i], interval=intervals[i],
                   calls=calls[i])
        parent["children"].append(f)
        frames.append(f)
    return _finish(frames[0], "random tree (200,000 frames)", 1000)


@pytest.fixture(scope="module")
def big():
    return random_tree()


# ---- what the page embeds -----------------------------------------------------------------
def _page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="phprof-data">(.*?)</script>', page, re.S)
    assert m, "no phprof-data script"
    return json.loads(m.group(1))


def test_bert_tree_total_is_known():
    tree = bert_tree()
    assert tree["total_j"] == bert_total()  # multiples of 1/64: exact
    assert 300 <= _count(tree["root"]) <= 600


@pytest.mark.integration
def test_small_frames_are_merged_before_embedding(big):
    t0 = time.perf_counter()
    data = embedded_data(big, min_share=0.001)
    elapsed = time.perf_counter() - t0
    assert data["frames_in"] == 200_000
    assert data["frames_out"] < 20_000
    print(f"200,000 frames -> {data['frames_out']} embedded in {elapsed:.2f} s")
    # every embedded parent's children still add up to the original children (nothing lost)
    original = {}
    stack = [big["root"]]
    while stack:
        f = stack.pop()
        original[f["path"]] = f
        stack.extend(f["children"])
    cols, strings = data["frames"], data["strings"]
    sums = [0.0] * data["frames_out"]
    for i, p in enumerate(cols["parent"]):
        if p >= 0:
            sums[p] += cols["energy_j"][i]
    total = big["total_j"]
    for i in range(data["frames_out"]):
        path, kind = strings[cols["path"][i]], strings[cols["kind"][i]]
        if kind == "collapsed":
            assert cols["energy_j"][i] < 0.001 * total * cols["merged"][i] + 1e-12
            continue
        f = original[path]
        assert cols["energy_j"][i] == f["energy_j"]
        want = sum(c["energy_j"] for c in f["children"])
        assert math.isclose(sums[i], want, rel_tol=1e-9, abs_tol=1e-15), path
    assert cols["energy_j"][0] == total
    # a merged frame comes after its siblings (drawn at the right), one per parent at most
    last_child = {}
    for i, p in enumerate(cols["parent"]):
        last_child[p] = i
    merged = [i for i in range(data["frames_out"]) if strings[cols["kind"][i]] == "collapsed"]
    assert merged and all(last_child[cols["parent"][i]] == i for i in merged)
    assert all(strings[cols["name"][i]].endswith(" smaller frames)") for i in merged)


def test_page_is_self_contained_and_escapes_names():
    root = _frame("all", "all", "other", 1.0, 1.0, [
        _frame("</script><script>alert(1)</script>", "evil</script>", "mlp", 2.0, 1.0),
        _frame("a & <b>", "a & <b>", "norm", 1.0, 1.0, interval=False)])
    tree = _finish(root, "<title> & </script>", 10)
    page = flamegraph_html(tree)
    assert page.count("</script>") == 2  # the data tag and the script tag, no other
    assert "https://" not in page and "http://" not in page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", page)
    data = _page_data(page)
    assert data["strings"][data["frames"]["name"][1]] == "</script><script>alert(1)</script>"
    assert data["total_j"] == 4.0
    assert "<title>&lt;title&gt; &amp; &lt;/script&gt;</title>" in page


def test_title_and_min_share_options():
    tree = bert_tree(2)
    assert _page_data(flamegraph_html(tree, title="mine"))["title"] == "mine"
    everything = embedded_data(tree, min_share=0)
    assert everything["frames_out"] == everything["frames_in"] == _count(tree["root"])
    merged = embedded_data(tree, min_share=0.05)
    assert merged["frames_out"] < everything["frames_out"]
    assert merged["frames"]["energy_j"][0] == tree["total_j"]


def _count(root):
    n, stack = 0, [root]
    while stack:
        f = stack.pop()
        n += 1
        stack.extend(f["children"])
    return n


# ---- in a headless browser ----------------------------------------------------------------
_ERRORS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__errors.push('rejection: ' + String(e.reason)));
"""


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"browser tests need selenium (pip install selenium): {e}")
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                  None)
    if chrome is None:
        pytest.skip("browser tests need chromium on PATH (apt-get install chromium chromium-driver)")
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.skip("browser tests need chromedriver on PATH (apt-get install chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        # no network: every http(s)/ws request fails (and would log a SEVERE error)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _ERRORS})
        yield driver
    finally:
        driver.quit()


def _open(browser, page: str, path: Path):
    path.write_text(page, encoding="utf-8")
    browser.get(path.as_uri())
    assert browser.current_url.startswith("file://")
    browser.get_log("browser")  # drop what came before this page


def _no_errors(browser):
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    errors = browser.execute_script("return window.__errors")
    assert errors == [] and severe == [], (errors, severe)
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched == [], f"the page fetched {fetched}"


def _wait_for(read, ready, timeout_s: float = 60.0, poll_s: float = 0.05):
    """Polls ``read()`` until ``ready`` holds of its value, which it returns; fails after
    ``timeout_s`` with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ready(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _screenshot(browser, name: str, keep_mouse=False) -> Path:
    if not keep_mouse:  # the mouse off the chart: no tooltip
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(browser).move_to_element(browser.find_element("id", "title")).perform()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    print(f"screenshot: {path}")
    return path


def _hover(browser, x_frac: float, row_from_top: int):
    """Moves the mouse over the canvas at a fraction of its width, in a row."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element("id", "canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(
        canvas, int((x_frac - 0.5) * w), int(row_from_top * 20 + 10 - h / 2)).perform()
    tip = browser.find_element("id", "tip")
    return tip.text if tip.is_displayed() else ""


@pytest.mark.integration
def test_bert_page_in_browser(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    tree = bert_tree()
    _open(browser, flamegraph_html(tree), tmp_path / "bert.html")
    ph = "return window.phprof."
    total = browser.execute_script(ph + "rootTotal()")
    assert math.isclose(total, tree["total_j"], rel_tol=1e-9) and math.isclose(total, bert_total(), rel_tol=1e-9)
    assert browser.execute_script(ph + "view()") == {"zoomedPath": "all", "mode": "energy", "inverted": False}
    header = browser.find_element("id", "head").text
    assert "per inference" in header and "Width = share of energy" in header and "estimates" in header
    assert f"Total energy: {tree['total_j'] / INFERENCES * 1e3:.3g} mJ per inference" in header
    for kind in ("attention", "MLP", "norm", "embedding", "head", "kernel / op"):
        assert kind in browser.find_element("id", "legend").text
    _screenshot(browser, "flamegraph-bert.png")

    # hover: the root is the bottom row in the flame view
    rows = browser.execute_script("return document.getElementById('canvas').height") // 20
    tip = _hover(browser, 0.5, rows - 1)
    assert "all" in tip and "per inference" in tip and "of energy" in tip and "of time" in tip
    assert "90% interval" in tip and "sensor-model regression" in tip
    tip = _hover(browser, 0.3, rows - 1 - 5)  # attention or an MLP of layer 3
    assert "bert.encoder.layer.3." in tip
    _screenshot(browser, "flamegraph-bert-tooltip.png", keep_mouse=True)

    # search: a layer by name, highlighted, with its share
    n = browser.execute_script(ph + "search('layer.3.attention')")
    assert n >= 1
    assert browser.execute_script(ph + "highlighted()") >= 1
    assert "frames match" in browser.find_element("id", "match").text
    # typing in the box does the same (from no search: what the page shows then is the typed one's)
    browser.execute_script(ph + "search('')")
    assert browser.find_element("id", "match").text == ""
    box = browser.find_element("id", "search")
    box.clear()
    box.send_keys("intermediate.dense")
    # the page searches 120 ms after the last keystroke: wait for it (however loaded the machine)
    # rather than sleep, then check what it found
    match = _wait_for(lambda: browser.find_element("id", "match").text, lambda text: "frames match" in text)
    assert match.startswith("36 frames match"), match  # 12 x (module, op, kernel)
    _screenshot(browser, "flamegraph-bert-search.png")
    assert browser.execute_script(ph + "search('no such frame')") == 0
    assert browser.execute_script(ph + "highlighted()") == 0
    browser.execute_script(ph + "search('')")

    # zoom: by API, then back with Escape; by click, then back with the root
    assert browser.execute_script(ph + "zoom('bert.encoder.layer.3')") is True
    assert browser.execute_script(ph + "view()")["zoomedPath"] == "bert.encoder.layer.3"
    assert "Zoomed into" in browser.find_element("id", "crumbs").text
    assert browser.execute_script(ph + "zoom('not a path')") is False
    browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    assert browser.execute_script(ph + "view()")["zoomedPath"] == "all"
    browser.execute_script(ph + "zoom('bert.encoder.layer.3.intermediate.dense;aten::linear')")
    kernel = "bert.encoder.layer.3.intermediate.dense;aten::linear;sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64"
    tip = _hover(browser, 0.5, 0)  # the zoomed frame's only child, on top
    assert "no interval (its layer's power x its time)" in tip and "per inference" in tip
    canvas = browser.find_element("id", "canvas")
    h = canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, 0, int(10 - h / 2)).click().perform()  # the kernel
    assert browser.execute_script(ph + "view()")["zoomedPath"] == kernel
    ActionChains(browser).move_to_element_with_offset(canvas, 0, int(h / 2 - 10)).click().perform()  # the root
    assert browser.execute_script(ph + "view()")["zoomedPath"] == "all"

    # width by time, then the icicle view, by their buttons
    browser.find_element("id", "mode-time").click()
    assert browser.execute_script(ph + "view()")["mode"] == "time"
    assert "Width = share of time" in browser.find_element("id", "explain").text
    browser.find_element("id", "invert").click()
    assert browser.execute_script(ph + "view()") == {"zoomedPath": "all", "mode": "time", "inverted": True}
    tip = _hover(browser, 0.5, 0)  # icicle: the root on top
    assert tip.startswith("all")
    _screenshot(browser, "flamegraph-bert-time-icicle.png")
    browser.find_element("id", "mode-energy").click()
    browser.find_element("id", "invert").click()
    assert browser.execute_script(ph + "view()") == {"zoomedPath": "all", "mode": "energy", "inverted": False}
    _no_errors(browser)


@pytest.mark.integration
def test_large_tree_in_browser(browser, big, tmp_path):
    t0 = time.perf_counter()
    page = flamegraph_html(big)
    elapsed = time.perf_counter() - t0
    size = len(page.encode())
    print(f"200,000 frames: page {size / 1e6:.2f} MB, rendered in {elapsed:.2f} s")
    assert size < 3e6
    t0 = time.perf_counter()
    _open(browser, page, tmp_path / "big.html")
    ph = "return window.phprof."
    total = browser.execute_script(ph + "rootTotal()")
    print(f"loaded and drawn in the browser in {time.perf_counter() - t0:.2f} s")
    assert math.isclose(total, big["total_j"], rel_tol=1e-9)
    biggest = big["root"]["children"][0]
    assert browser.execute_script(ph + "search(arguments[0])", biggest["name"]) >= 1
    assert browser.execute_script(ph + "highlighted()") >= 1
    # a search is one pass over the frames and a redraw: it costs less than loading the page did
    # (parsing its data and building and drawing the frames), both timed by the page's own clock,
    # so that a loaded machine slows them alike (idle: ~40 ms against ~250 ms)
    matched, search_ms, load_ms = browser.execute_script(
        "const t0 = performance.now(); const n = window.phprof.search('attention');"
        "return [n, performance.now() - t0, performance.getEntriesByType('navigation')[0].loadEventEnd];")
    print(f"search: {search_ms:.0f} ms in the page, which took {load_ms:.0f} ms to load")
    assert matched >= 1
    assert 0 < search_ms < load_ms
    browser.execute_script(ph + "search('')")
    deep = biggest["children"][0]["children"][0]
    assert browser.execute_script(ph + "zoom(arguments[0])", deep["path"]) is True
    assert browser.execute_script(ph + "view()")["zoomedPath"] == deep["path"]
    _screenshot(browser, "flamegraph-200k-zoomed.png")
    browser.execute_script(ph + "zoom(null)")
    browser.find_element("id", "mode-time").click()
    browser.find_element("id", "invert").click()
    assert browser.execute_script(ph + "view()") == {"zoomedPath": "all", "mode": "time", "inverted": True}
    browser.find_element("id", "mode-energy").click()
    browser.find_element("id", "invert").click()
    _screenshot(browser, "flamegraph-200k.png")
    _no_errors(browser)


@pytest.mark.integration
def test_a_real_traces_flamegraph_and_report_page_in_browser(browser, gpt2_trace, tmp_path):
    """The whole path: a traced tiny gpt2 (fake GPU power) -> its flamegraph page and its
    report page (``phprof.render``) -> the browser. The page's root total is the report's.
    (What `phprof flamegraph` and `phprof report --html` write: tests/test_commands_views.py.)"""
    import shutil as sh

    trace_path = tmp_path / "gpt2.h5"
    sh.copy(gpt2_trace[0], trace_path)
    report = phprof.report(trace_path)
    report_total = json.loads(phprof.render(report, "json"))["summary"]["inferences_energy"]["joules"]
    assert phprof.render(report, tmp_path / "report.html") == tmp_path / "report.html"
    assert phprof.render(phprof.flamegraph(trace_path), tmp_path / "flame.html") == tmp_path / "flame.html"
    for page, shot in (("flame.html", "flamegraph-gpt2.png"), ("report.html", "report-gpt2.png")):
        _open(browser, (tmp_path / page).read_text(), tmp_path / f"copy-{page}")
        _no_errors(browser)
        assert browser.execute_script("return window.phprof.rootTotal()") == pytest.approx(report_total, rel=1e-9)
        assert browser.execute_script("return window.phprof.search('c_attn')") >= 1
        browser.execute_script("window.phprof.search('')")
        assert browser.execute_script("return window.phprof.zoom('transformer.h.0.attn')")
        assert browser.execute_script("return window.phprof.view()")["zoomedPath"] == "transformer.h.0.attn"
        browser.execute_script("window.phprof.zoom(null)")
        if page == "report.html":
            browser.set_window_size(1400, 2600)
            assert "Power over" in browser.page_source and "Energy share against time share" in browser.page_source
        _screenshot(browser, shot)
        browser.set_window_size(1400, 1000)


# ---- the palette ------------------------------------------------------------------------------
def test_the_page_embeds_the_palette():
    data = _page_data(flamegraph_html(bert_tree(1)))
    assert data["palette"] == json.loads(json.dumps(KINDS))  # kind -> [legend name, [h, s, l]]
    assert data["measure"] == "energy"


@pytest.mark.integration
def test_the_legend_and_colours_come_from_the_palette(browser, tmp_path, monkeypatch):
    tree = bert_tree(1)
    kinds = {f["kind"] for f in _walk(tree["root"])}
    _open(browser, flamegraph_html(tree), tmp_path / "palette.html")
    legend = browser.find_element("id", "legend").text
    for kind in kinds:  # every kind drawn has its palette name in the legend
        assert KINDS[kind][0] in legend, kind
    for kind, (name, _) in KINDS.items():  # and no kind that is not drawn
        if not any(KINDS[k][0] == name for k in kinds):
            assert name not in legend, name
    h, s, _ = KINDS["mlp"][1]
    colour = browser.execute_script("return window.phprof.frame('bert.encoder.layer.0.intermediate').colour")
    assert re.match(rf"hsl\({h} {s}% \d+%\)", colour), colour
    _no_errors(browser)
    # the script reads the palette from the page's data: another palette, another legend and colour
    mine = {**KINDS, "mlp": ("feed-forward", (100, 50, 60))}
    monkeypatch.setattr("phprof.render.flamegraph.KINDS", mine)
    _open(browser, flamegraph_html(tree), tmp_path / "palette2.html")
    legend = browser.find_element("id", "legend").text
    assert "feed-forward" in legend and "MLP" not in legend and KINDS["attention"][0] in legend
    colour = browser.execute_script("return window.phprof.frame('bert.encoder.layer.0.intermediate').colour")
    assert re.match(r"hsl\(100 50% \d+%\)", colour), colour
    _no_errors(browser)


def _walk(root):
    stack = [root]
    while stack:
        f = stack.pop()
        yield f
        stack.extend(f["children"])


# ---- a trace without energy: the same pages, by time -------------------------------------------
# silent_trace (tests/conftest.py): the session's tiny gpt2 traced with no power source, copied per test


@pytest.mark.integration
def test_a_trace_without_energy_gives_a_time_flamegraph(silent_trace, tmp_path):
    view = phprof.flamegraph(silent_trace)
    assert not view.results.has_energy and "no power readings" in view.results.why_no_energy
    path = phprof.render(view, tmp_path / "x.html")
    assert path == tmp_path / "x.html"
    page = path.read_text(encoding="utf-8")
    data = _page_data(page)
    assert data["measure"] == "time" and data["unit"] == "s"
    assert TIME_ONLY == "time, energy not measured" and data["title"].endswith(f": {TIME_ONLY}")
    assert data["title"].startswith("gpt2 (text-generation)")
    assert f"<title>{data['title']}</title>" in page
    cols = data["frames"]
    assert all(x is None for x in cols["energy_j"]) and all(x is None for x in cols["self_j"])
    assert cols["seconds"][0] > 0 and data["strings"][cols["method"][0]] == TIME_ONLY
    assert data["palette"] == json.loads(json.dumps(KINDS))
    # the file is what the html format returns; a title of one's own keeps the note
    assert page == phprof.render(view, "html")
    titled = _page_data(phprof.render(phprof.flamegraph(silent_trace, title="mine"), "html"))["title"]
    assert titled == f"mine: {TIME_ONLY}"


@pytest.mark.integration
def test_a_time_flamegraph_and_report_page_in_browser(browser, silent_trace, tmp_path):
    flame = phprof.render(phprof.flamegraph(silent_trace), tmp_path / "time.html")
    report = phprof.render(phprof.report(silent_trace), tmp_path / "r.html")
    ph = "return window.phprof."
    for path, shot in ((flame, "flamegraph-time.png"), (report, "report-time.png")):
        _open(browser, path.read_text(encoding="utf-8"), tmp_path / f"copy-{path.name}")
        _no_errors(browser)
        assert browser.execute_script(ph + "view()") == {"zoomedPath": "all", "mode": "time", "inverted": False}
        energy = browser.find_element("id", "mode-energy")
        assert not energy.is_enabled()  # nothing to draw by energy
        browser.execute_script("document.getElementById('mode-energy').click()")
        assert browser.execute_script(ph + "view()")["mode"] == "time"
        assert browser.find_element("id", "mode-time").is_enabled()
        title = browser.find_element("id", "title").text
        assert TIME_ONLY in title and "time flamegraph" in title and TIME_ONLY in browser.title
        header = browser.find_element("id", "head").text
        assert "Energy was not measured" in header and "energy not measured" in header
        assert "Total time:" in header and "per inference" in header
        assert browser.execute_script(ph + "search('attn')") >= 1
        browser.execute_script(ph + "search('')")
        rows = browser.execute_script("return document.getElementById('canvas').height") // 20
        tip = _hover(browser, 0.5, rows - 1)
        assert "all" in tip and "of time" in tip and "not measured" in tip
        if path is report:
            body = browser.find_element("tag name", "body").text
            assert "not measured" in body and "no power readings" in body
        _screenshot(browser, shot)
        _no_errors(browser)


# ---- the study's page -------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_study_page_in_browser_holds_the_csvs_numbers(browser, quick_study):
    """`phprof study --quick` (every task, the fake GPU): its page loads with no error and fetches
    nothing; every point and every row of its table holds the CSV's figure; every link reaches a
    cell's report; the paper's table divides this run's mean by the paper's."""
    import csv

    folder = quick_study.directory
    rows = {(r["task"], r["model"]): r for r in csv.DictReader(open(folder / "study.csv"))}
    _open(browser, (folder / "study.html").read_text(), folder / "copy-study.html")  # beside it: its links work
    _no_errors(browser)
    points = browser.execute_script(
        "return [...document.querySelectorAll('circle.pt')].map(c => [c.dataset.task, c.dataset.model, c.dataset.value])")
    scatter = browser.execute_script("return document.querySelector('svg.plot').querySelectorAll('circle.pt').length")
    assert scatter == len(rows) and len(points) >= 3 * len(rows)
    for task, model, v in points:
        assert float(v) == float(rows[task, model]["kwh_per_1000"])
    table = browser.execute_script("return [...document.querySelectorAll('#cells tbody tr')].map(tr => "
                                   "[tr.dataset.task, tr.dataset.model, tr.dataset.kwh, tr.children[3].textContent])")
    assert [(t, m) for t, m, _, _ in table] == list(rows)
    for task, model, kwh, shown in table:
        assert float(kwh) == float(rows[task, model]["kwh_per_1000"]) and shown == f"{float(kwh):.4g}"
    links = browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => "
                                   "new URL(a.getAttribute('href'), document.baseURI).pathname)")
    assert len(links) >= 4 * len(rows) and all(Path(h).is_file() for h in links)
    paper = browser.execute_script("return [...document.querySelectorAll('#paper tbody tr')].map(tr => "
                                   "[...tr.children].map(c => c.textContent))")
    for key, mine, _, cells, theirs, ratio, device, sensor in paper:
        assert float(ratio) == pytest.approx(float(mine) / float(theirs), rel=6e-3)  # as shown: 3 and 4 digits
        assert sensor.startswith("nvml") and device == "NVIDIA A100-SXM4-80GB"
    assert "A100-SXM4-80GB (one of an 8-GPU AWS node" in browser.page_source
    browser.set_window_size(1400, browser.execute_script("return document.body.scrollHeight") + 40)
    _screenshot(browser, "study-quick.png")
    browser.set_window_size(1400, 1000)
