// phprof energy flamegraph: draws the frame tree embedded in #phprof-data on a canvas.
// Width is a frame's inclusive energy (or time); click zooms, Esc resets, the search
// box highlights frames. window.phprof lets tests drive the page.
// With DATA.measure "time" (a trace without energy), widths are time only and the page says
// that energy was not measured. Colours come from DATA.palette (phprof.render.palette).
// With DATA.diff (phprof compare), the same page is a differential flamegraph: frames are
// the union of two runs' (A, B) by path, each as wide as a layout width (its larger own energy
// plus its children's widths: at least either run's energy, possibly more than both), coloured
// by (B - A) / A: red where B spends more, blue where less, grey within SAME.
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("phprof-data").textContent);
  const ROW = 20;          // px per frame row
  const MIN_DRAW = 0.4;    // px: narrower frames (and what they hold) are not drawn
  const MIN_LABEL = 26;    // px: narrower frames get no label
  const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const INF = DATA.inferences > 0 ? DATA.inferences : 1;
  const LEVEL = DATA.interval ? Math.round(DATA.interval * 100) + "%" : "";
  const DIFF = DATA.diff || null;  // {names: [A, B], a_j, b_j}: a differential flamegraph
  const SAME = 0.01;       // |B - A| within 1% of the larger: drawn grey, "equal"

  // kind -> [legend name, [hue, saturation %, lightness %]]
  const KINDS = DATA.palette;
  const TIME_ONLY = DATA.measure === "time";  // no energy: widths are time

  // ---- frames: columns -> objects with children -------------------------------------
  const S = DATA.strings, C = DATA.frames, N = C.parent.length;
  const nodes = new Array(N);
  const byPath = new Map();
  for (let i = 0; i < N; i++) {
    const p = C.parent[i];
    const n = {
      index: i, name: S[C.name[i]], path: S[C.path[i]], kind: S[C.kind[i]],
      e: Math.max(C.energy_j[i] || 0, 0), se: C.self_j[i] || 0,
      s: Math.max(C.seconds[i] || 0, 0), ss: C.self_s[i] || 0,
      lo: C.low_j[i], hi: C.high_j[i], calls: C.calls[i], method: S[C.method[i]],
      merged: C.merged[i], parent: p >= 0 ? nodes[p] : null, children: [], depth: 0, height: 0,
    };
    if (DIFF) {  // per inference of each run; a frame a run lacks has 0 there
      n.a = C.a_j[i] || 0; n.b = C.b_j[i] || 0; n.ase = C.a_self_j[i] || 0; n.bse = C.b_self_j[i] || 0;
      n.alo = C.a_low_j[i]; n.ahi = C.a_high_j[i]; n.blo = C.b_low_j[i]; n.bhi = C.b_high_j[i];
      n.at = C.a_s[i] || 0; n.bt = C.b_s[i] || 0;
    }
    n.hue = (KINDS[n.kind] || KINDS.other)[1];
    if (n.parent) { n.parent.children.push(n); n.depth = n.parent.depth + 1; }
    nodes[i] = n;
    if (!byPath.has(n.path)) byPath.set(n.path, n);
  }
  for (let i = N - 1; i > 0; i--) {  // pre-order: children come after their parent
    const n = nodes[i];
    n.parent.height = Math.max(n.parent.height, n.height + 1);
  }
  const root = nodes[0];

  const state = { zoom: root, mode: TIME_ONLY ? "time" : "energy", inverted: false, query: "", match: null, drawn: [], hover: null };
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d"), tip = $("tip");

  // ---- numbers -------------------------------------------------------------------------
  function fmt(x, unit, scales) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    if (x === 0) return "0 " + unit;
    for (const [factor, prefix] of scales) {
      if (Math.abs(x) >= factor * 0.9995) return (x / factor).toPrecision(3) + " " + prefix + unit;
    }
    const [factor, prefix] = scales[scales.length - 1];
    return (x / factor).toPrecision(3) + " " + prefix + unit;
  }
  const SI = [[1, ""], [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"]];
  const joules = (x) => DATA.unit === "J" ? fmt(x, "J", [[1e3, "k"]].concat(SI)) : fmt(x, DATA.unit, [[1, ""]]);
  const secs = (x) => fmt(x, "s", SI);
  const pct = (a, b) => b > 0 ? (100 * a / b).toFixed(a / b < 0.001 ? 3 : a / b < 0.1 ? 2 : 1) + "%" : "–";
  const value = (n) => state.mode === "time" ? n.s : n.e;
  const known = (x) => x !== null && x !== undefined;
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

  // ---- differences (diff mode) ----------------------------------------------------------
  const signedJ = (x) => (x > 0 ? "+" : x < 0 ? "−" : "±") + joules(Math.abs(x));
  function change(n) {  // (B - A) / A as text
    const a = n.a, b = n.b;
    if (a === 0 && b === 0) return "0 in both";
    if (a === 0) return "only in " + DIFF.names[1];
    if (b === 0) return "only in " + DIFF.names[0];
    const r = (b - a) / a;
    return (r >= 0 ? "+" : "−") + Math.abs(100 * r).toFixed(Math.abs(r) < 0.1 ? 1 : 0) + "%";
  }
  // -1: B much less (or only in A), +1: B much more (or only in B), 0: within SAME.
  // Strength grows with |log2(B/A)|, full at 4x.
  function direction(n) {
    const a = n.a, b = n.b, big = Math.max(a, b);
    if (!(big > 0) || Math.abs(b - a) <= SAME * big) return 0;
    const t = a > 0 && b > 0 ? Math.min(Math.abs(Math.log2(b / a)) / 2, 1) : 1;
    return b > a ? Math.max(t, 0.02) : -Math.max(t, 0.02);
  }
  function diffHsl(d) {
    if (d === 0) return [0, 0, 84];
    const t = Math.abs(d);
    return [d > 0 ? 2 : 214, 35 + 50 * t, 84 - 26 * t];
  }

  // ---- drawing -------------------------------------------------------------------------
  function colour(n, faded) {
    if (DIFF) {
      const [h, s, l] = diffHsl(direction(n));
      return faded ? `hsl(${h} ${s * 0.35}% ${Math.min(l + 8, 94)}%)` : `hsl(${h} ${s}% ${l}%)`;
    }
    const [h, s, l] = n.hue;
    let k = 0;  // a little lightness jitter by name so neighbours stay apart
    for (let i = 0; i < n.name.length; i++) k = (k * 31 + n.name.charCodeAt(i)) | 0;
    const light = l + ((k >>> 0) % 9) - 4;
    return faded ? `hsl(${h} ${s * 0.35}% ${Math.min(light + 10, 94)}%)` : `hsl(${h} ${s}% ${light}%)`;
  }

  function label(n, w) {
    if (w < MIN_LABEL) return "";
    const room = w - 8;
    const full = DIFF ? `${n.name}  ${signedJ(n.b - n.a)} (${change(n)})`
      : `${n.name}  ${joulesOrSecs(n)} · ${pct(value(n), value(root))}`;
    if (ctx.measureText(full).width <= room) return full;
    if (ctx.measureText(n.name).width <= room) return n.name;
    let k = Math.floor(n.name.length * room / ctx.measureText(n.name).width);
    while (k > 3 && ctx.measureText(n.name.slice(0, k) + "…").width > room) k--;
    return k > 3 ? n.name.slice(0, k) + "…" : "";  // "att…" says nothing: no label
  }
  const joulesOrSecs = (n) => state.mode === "time" ? secs(n.s / INF) : joules(n.e / INF);

  function draw() {
    const z = state.zoom;
    const rows = z.depth + z.height + 1;
    const chart = $("chart"), cs = getComputedStyle(chart);
    const width = Math.max(chart.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight), 100);
    const height = rows * ROW + 1;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = FONT; ctx.textBaseline = "middle";
    const y = (depth) => (state.inverted ? depth : rows - 1 - depth) * ROW;
    const drawn = [];
    const box = (n, x, w, faded) => {
      const matched = state.match !== null && state.match[n.index];
      const dim = faded || (state.match !== null && !matched);
      ctx.fillStyle = colour(n, dim);
      ctx.fillRect(x, y(n.depth), Math.max(w - 1, 0.5), ROW - 1);
      if (matched || n === state.hover) {
        ctx.strokeStyle = n === state.hover ? "#111" : "#c2007a"; ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y(n.depth) + 1, Math.max(w - 3, 0.5), ROW - 3);
      }
      const text = label(n, w);
      if (text) {
        ctx.fillStyle = dim ? "#666" : "#111";
        ctx.font = n.kind === "collapsed" ? "italic " + FONT : FONT;
        ctx.fillText(text, x + 4, y(n.depth) + ROW / 2);
        ctx.font = FONT;
      }
      drawn.push({ n, x, y: y(n.depth), w, matched });
    };
    for (let a = z.parent; a; a = a.parent) box(a, 0, width, true);  // where we zoomed from
    const stack = [[z, 0, width]];
    while (stack.length) {
      const [n, x, w] = stack.pop();
      box(n, x, w, false);
      const total = n.children.reduce((t, c) => t + value(c), 0);
      const v = value(n);
      if (!(total > 0) || !(v > 0)) continue;
      const scale = (w / v) * Math.min(1, v / total);  // children never wider than their parent
      let cx = x;
      for (const c of n.children) {
        const cw = value(c) * scale;
        if (cw >= MIN_DRAW) stack.push([c, cx, cw]);
        cx += cw;
      }
    }
    state.drawn = drawn;
    tip.hidden = true;  // what was under the mouse has moved
    header();
  }

  // ---- header, legend, tooltip ----------------------------------------------------------
  function header() {
    const what = state.mode === "time" ? "time" : "energy";
    if (DIFF) {
      $("explain").innerHTML = `Width = a layout width in <b>${what}</b>: at least ${esc(DIFF.names[0])}'s and ` +
        `${esc(DIFF.names[1])}'s ${what} per inference, inclusive (the larger run's own plus its children's widths, ` +
        `so it can exceed both; a frame spans everything ${state.inverted ? "below" : "above"} it). ` +
        `Colour = energy (${esc(DIFF.names[1])} − ${esc(DIFF.names[0])}) / ${esc(DIFF.names[0])}: ` +
        `<b class="more">red</b> where ${esc(DIFF.names[1])} spends more, <b class="less">blue</b> where less, grey ` +
        `within ±${Math.round(SAME * 100)}%. Per-layer energies are <b>estimates</b> (hover a frame for both runs ` +
        `and the difference). Click to zoom; Esc or the root to go back; / to search.`;
    } else if (TIME_ONLY) {
      $("explain").innerHTML = `Width = share of <b>time</b>, inclusive (a frame spans everything ` +
        `${state.inverted ? "below" : "above"} it), measured by the profiler. <b>Energy was not measured</b>: ` +
        `the trace has no power readings. Click to zoom; Esc or the root to go back; / to search.`;
    } else {
      $("explain").innerHTML = `Width = share of <b>${what}</b>, inclusive (a frame spans everything ` +
        `${state.inverted ? "below" : "above"} it). Per-layer energies are <b>estimates</b>` +
        (LEVEL ? ` with ${LEVEL} intervals` : "") + ` (hover a frame). Click to zoom; Esc or the root to go back; / to search.`;
    }
    $("mode-energy").classList.toggle("on", state.mode === "energy");
    $("mode-time").classList.toggle("on", state.mode === "time");
    $("invert").classList.toggle("on", state.inverted);
    $("invert").setAttribute("aria-pressed", String(state.inverted));
    const z = state.zoom;
    const where = DIFF
      ? (state.mode === "time"
        ? `${esc(DIFF.names[0])} ${secs(z.at)}, ${esc(DIFF.names[1])} ${secs(z.bt)} per inference`
        : `${esc(DIFF.names[0])} ${joules(z.a)}, ${esc(DIFF.names[1])} ${joules(z.b)} per inference`)
      : `${joulesOrSecs(z)} per inference, ${pct(value(z), value(root))} of the total ${what}`;
    $("crumbs").innerHTML = z === root ? "" :
      `Zoomed into <code>${esc(z.path)}</code>: ${where}. <a href="#" id="unzoom">Show all</a>`;
    const un = $("unzoom");
    if (un) un.onclick = (ev) => { ev.preventDefault(); zoom(null); };
  }

  function diffSummary() {
    $("title").innerHTML = `${esc(DATA.title)} <span class="tool">differential energy flamegraph · phprof</span>`;
    document.title = DATA.title;
    const [na, nb] = DIFF.names;
    const parts = [`${esc(na)}: <b>${joules(root.a)}</b> per inference`,
      `${esc(nb)}: <b>${joules(root.b)}</b> per inference`,
      `Δ <b class="total ${root.b > root.a ? "more" : "less"}">${signedJ(root.b - root.a)} (${change(root)})</b>`];
    if (DATA.frames_in > DATA.frames_out) {
      parts.push(`${DATA.frames_in.toLocaleString("en-US")} frames, those under ${pct(DATA.min_share, 1)} merged`);
    }
    $("summary").innerHTML = parts.join(" · ");
    const keys = [[-1, `only in A or ≤ ¼×`], [-0.5, "−50%"], [-0.15, "−20%"], [0, `equal (±${Math.round(SAME * 100)}%)`],
      [0.16, "+25%"], [0.5, "+100%"], [1, `≥ 4× or only in B`]];
    $("legend").innerHTML = `<span class="scale-label">B = ${esc(nb)} against A = ${esc(na)}:</span>` +
      keys.map(([d, text]) => {
        const [h, s, l] = diffHsl(d);
        return `<span class="key"><i style="background:hsl(${h} ${s}% ${l}%)"></i>${esc(text)}</span>`;
      }).join("");
  }

  function summary() {
    if (DIFF) { diffSummary(); return; }
    $("title").innerHTML = `${esc(DATA.title)} <span class="tool">${TIME_ONLY ? "time" : "energy"} flamegraph · phprof</span>`;
    document.title = DATA.title;
    const interval = known(root.lo) && known(root.hi)
      ? ` (estimated, ${LEVEL} interval ${joules(root.lo / INF)} – ${joules(root.hi / INF)})` : " (estimated)";
    const parts = TIME_ONLY
      ? [`Total time: <b class="total">${secs(root.s / INF)} per inference</b> (measured)`, `energy not measured`,
        `${INF.toLocaleString("en-US")} inferences`]
      : [`Total energy: <b class="total">${joules(root.e / INF)} per inference</b>${interval}`,
        `time ${secs(root.s / INF)} per inference`, `${INF.toLocaleString("en-US")} inferences`];
    if (DATA.method) parts.push(esc(DATA.method));
    if (DATA.device) parts.push(esc(DATA.device));
    if (DATA.frames_in > DATA.frames_out) {
      parts.push(`${DATA.frames_in.toLocaleString("en-US")} frames, those under ${pct(DATA.min_share, 1)} merged`);
    }
    $("summary").innerHTML = parts.join(" · ");
    const seen = new Set(nodes.map((n) => n.kind in KINDS ? n.kind : "other"));
    const items = [];
    for (const [kind, [name, hsl]] of Object.entries(KINDS)) {
      if (!seen.has(kind) || items.some((it) => it.name === name)) continue;
      items.push({ name, hsl });
    }
    $("legend").innerHTML = items.map(({ name, hsl }) =>
      `<span class="key"><i style="background:hsl(${hsl[0]} ${hsl[1]}% ${hsl[2]}%)"></i>${esc(name)}</span>`).join("");
  }

  function diffTooltip(n) {
    const [na, nb] = DIFF.names;
    const run = (name, e, lo, hi, t, has) => [esc(name), has
      ? `<b>${joules(e)}</b> per inference` + (known(lo) && known(hi)
        ? ` (${LEVEL} interval ${joules(lo)} – ${joules(hi)})` : "") + ` · ${secs(t)}`
      : "– (not in this run)"];
    const a = n.a > 0 || n.at > 0 || n.ase > 0, b = n.b > 0 || n.bt > 0 || n.bse > 0;
    const rows = [
      run(na, n.a, n.alo, n.ahi, n.at, a),
      run(nb, n.b, n.blo, n.bhi, n.bt, b),
      ["Δ", `<b>${signedJ(n.b - n.a)}</b> per inference (${change(n)})`],
    ];
    if (known(n.alo) && known(n.ahi) && known(n.blo) && known(n.bhi) && a && b) {
      const lo = n.blo - n.ahi, hi = n.bhi - n.alo;
      rows.push(["", `Δ range ${signedJ(lo)} – ${signedJ(hi)}` + (lo <= 0 && hi >= 0 ? " (includes 0)" : "")]);
    }
    rows.push(["width", `${joulesOrSecs(n)}: a layout width (the larger run's own plus its children's widths), ` +
      `not either run's ${state.mode === "time" ? "time" : "energy"}`]);
    rows.push(["method", esc(n.method || "–")]);
    if (n.merged) rows.push(["merged", `${n.merged.toLocaleString("en-US")} frames, each under ${pct(DATA.min_share, 1)}`]);
    return `<div class="path">${esc(n.path)}</div><div class="kind">${esc((KINDS[n.kind] || KINDS.other)[0])}</div>` +
      `<table>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</table>`;
  }

  function tooltip(n) {
    if (DIFF) return diffTooltip(n);
    const e = n.e / INF;
    const interval = known(n.lo) && known(n.hi)
      ? `${LEVEL} interval ${joules(n.lo / INF)} – ${joules(n.hi / INF)}`
      : `no interval (${esc(n.method || "method unknown")})`;
    const calls = n.calls === null ? "–"
      : `${n.calls.toLocaleString("en-US")} (${(n.calls / INF).toLocaleString("en-US", { maximumFractionDigits: 2 })} per inference)`;
    const rows = TIME_ONLY ? [
      ["time", `<b>${secs(n.s / INF)}</b> per inference · ${pct(n.s, root.s)} of time`],
      ["own", `${secs(n.ss / INF)} (outside its children)`],
      ["energy", "not measured"],
      ["calls", calls],
    ] : [
      ["energy", `<b>${joules(e)}</b> per inference · ${pct(n.e, root.e)} of energy`],
      ["", interval],
      ["time", `${secs(n.s / INF)} per inference · ${pct(n.s, root.s)} of time`],
      ["own", `${joules(n.se / INF)} · ${secs(n.ss / INF)} (outside its children)`],
      ["calls", calls],
      ["method", esc(n.method || "–")],
    ];
    if (n.merged) rows.push(["merged", `${n.merged.toLocaleString("en-US")} frames, each under ${pct(DATA.min_share, 1)}`]);
    return `<div class="path">${esc(n.path)}</div><div class="kind">${esc((KINDS[n.kind] || KINDS.other)[0])}</div>` +
      `<table>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("")}</table>`;
  }

  function hit(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ev.clientX - r.left, y = ev.clientY - r.top;
    for (let i = state.drawn.length - 1; i >= 0; i--) {
      const d = state.drawn[i];
      if (y >= d.y && y < d.y + ROW && x >= d.x && x < d.x + d.w) return d.n;
    }
    return null;
  }

  // ---- actions ---------------------------------------------------------------------------
  function zoom(path) {
    const n = path === null || path === undefined || path === "" ? root : byPath.get(path);
    if (!n) return false;
    state.zoom = n;
    draw();
    return true;
  }

  function search(text) {
    state.query = (text || "").trim();
    const q = state.query.toLowerCase();
    if (!q) { state.match = null; $("match").textContent = ""; draw(); return 0; }
    state.match = new Uint8Array(N);
    let count = 0, share = 0;
    for (const n of nodes) {
      if (n.name.toLowerCase().includes(q) || n.path.toLowerCase().includes(q)) { state.match[n.index] = 1; count++; }
    }
    for (const n of nodes) {  // share: matches without a matching ancestor, so nothing counts twice
      if (!state.match[n.index]) continue;
      let a = n.parent;
      while (a && !state.match[a.index]) a = a.parent;
      if (!a) share += value(n);
    }
    $("match").textContent = count ? `${count.toLocaleString("en-US")} frames match: ` +
      `${pct(share, value(root))} of ${DIFF ? "the layout width" : state.mode === "time" ? "time" : "energy"}`
      : "no frame matches";
    draw();
    return count;
  }

  function setMode(mode) {
    state.mode = mode === "time" || TIME_ONLY ? "time" : "energy";
    if (state.match) search(state.query); else draw();
  }

  function setInverted(on) { state.inverted = !!on; draw(); }

  canvas.addEventListener("mousemove", (ev) => {
    const n = hit(ev);
    if (n !== state.hover) { state.hover = n; draw(); }  // outlines the frame under the mouse
    if (!n) { canvas.style.cursor = ""; return; }
    canvas.style.cursor = "pointer";
    tip.innerHTML = tooltip(n);
    tip.hidden = false;
    const pad = 14, tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = ev.clientX + pad, top = ev.clientY + pad;
    if (left + tw > window.innerWidth - 4) left = Math.max(4, ev.clientX - tw - pad);
    if (top + th > window.innerHeight - 4) top = Math.max(4, ev.clientY - th - pad);
    tip.style.left = left + "px"; tip.style.top = top + "px";
  });
  canvas.addEventListener("mouseleave", () => { state.hover = null; draw(); });
  canvas.addEventListener("click", (ev) => {
    const n = hit(ev);
    if (n) zoom(n === root ? null : n.path);
  });
  $("reset").addEventListener("click", () => zoom(null));
  $("mode-energy").addEventListener("click", () => setMode("energy"));
  $("mode-time").addEventListener("click", () => setMode("time"));
  $("invert").addEventListener("click", () => setInverted(!state.inverted));
  let pending = 0;
  $("search").addEventListener("input", (ev) => {
    clearTimeout(pending);
    pending = setTimeout(() => search(ev.target.value), 120);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      if (document.activeElement === $("search")) $("search").blur();
      zoom(null);
    } else if (ev.key === "/" && document.activeElement !== $("search")) {
      ev.preventDefault(); $("search").focus();
    }
  });
  let resizing = 0;
  window.addEventListener("resize", () => { cancelAnimationFrame(resizing); resizing = requestAnimationFrame(draw); });

  window.phprof = {
    rootTotal: () => root.e,
    zoom: (path) => zoom(path),
    search: (text) => { $("search").value = text || ""; return search(text); },
    view: () => ({ zoomedPath: state.zoom.path, mode: state.mode, inverted: state.inverted }),
    setMode, setInverted,
    highlighted: () => state.drawn.filter((d) => d.matched).length,
    // diff mode: the two runs' names and totals per inference (null on a plain flamegraph)
    diff: () => DIFF ? { names: DIFF.names.slice(), a: root.a, b: root.b } : null,
    // a frame by path: its energies (per inference in diff mode: a, b, change) and fill colour
    frame: (path) => {
      const n = byPath.get(path);
      if (!n) return null;
      const out = { path: n.path, width: value(n), energy: n.e, colour: colour(n, false) };
      if (DIFF) Object.assign(out, { a: n.a, b: n.b, delta: n.b - n.a, change: change(n), direction: direction(n) });
      return out;
    },
  };

  if (TIME_ONLY) $("mode-energy").disabled = true;  // nothing to draw by energy
  summary();
  draw();
})();
