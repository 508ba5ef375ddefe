#!/usr/bin/env python3
"""The study's multi-purpose comparison, component by component: Flan-T5 against BLOOMz.

Both run the same zero-shot settings of ../shared/docs/paper.md (sentiment:
1 new token; QA: 65; summarisation: 15 on CNN/DailyMail, with CNN/DailyMail's
input length) under `phprof trace`, and every layer is put in its component (embeddings, self-attention,
cross-attention, mlp, norm, head; encoder or decoder stack) by phprof's taxonomy.

With a power sensor (a GPU; or RAPL), each pair is compared in energy with
`phprof compare` (a markdown table and the comparison page per task). Without
one, as on a CPU-only VM, the table is the *time* per component, measured by
the profiler: it says where each architecture spends its work, not its joules,
and says so.

    python tools/repro_multipurpose.py [--seq2seq google/flan-t5-base] [--decoder bigscience/bloomz-560m]
        [--inferences 5] [--device cpu] [--out repro/] [--task zero-shot-summarization ...]
    # on a GPU, the study's sizes: --seq2seq google/flan-t5-xl --decoder bigscience/bloomz-3b --device cuda
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import phprof
from phprof.attribution.components import COMPONENTS
from phprof.models import get_task, resolve
from phprof.models.tasks import default_shape
from phprof.store import phase_kind
from phprof.store.results import Role

TASKS = {  # the study's zero-shot settings (paper.md): the dataset whose shape to use, None for
    "zero-shot-sentiment": None,  # the mean of the task's datasets (phprof trace's default): 1 new token
    "zero-shot-qa": None,  # 65 new tokens
    "zero-shot-summarization": "cnn_dailymail/3.0.0",  # 15 new tokens: the study's CNN/DailyMail run
}


def component_times(path: Path) -> tuple[dict[tuple[str, str], float], dict, int]:
    """Seconds per (stack, component) over a trace's inferences, the phases' counts, inferences."""
    t = phprof.load(path)
    results = phprof.results(path, store=False)
    out: dict[tuple[str, str], float] = defaultdict(float)
    for x in results.layers:
        if not x.role.between_inferences and x.seconds > 0:
            out[(x.stack or "-", x.component)] += x.seconds
    phases: dict[str, int] = defaultdict(int)
    for name in t.phases["name"]:
        phases[phase_kind(t.strings[int(name)])] += 1
    return dict(out), dict(phases), len(t.inferences)


def time_table(task: str, runs: dict[str, Path]) -> str:
    """Markdown: ms per inference per (stack, component), and its share, per model."""
    data = {name: component_times(path) for name, path in runs.items()}
    keys = sorted({k for d, _, _ in data.values() for k in d},
                  key=lambda k: (k[0], COMPONENTS.index(k[1]) if k[1] in COMPONENTS else 99))
    names = list(runs)
    head = "| stack | component | " + " | ".join(f"{n} ms/inference (share)" for n in names) + " |"
    lines = [f"**{task}** (time measured by the profiler; no power sensor, so no energy)", "", head,
             "|---|---|" + "---:|" * len(names)]
    for stack, comp in keys:
        cells = []
        for n in names:
            d, _, inferences = data[n]
            total = sum(d.values()) or 1.0
            s = d.get((stack, comp), 0.0)
            cells.append(f"{1e3 * s / inferences:.2f} ({s / total:.0%})" if s else "-")
        lines.append(f"| {stack} | {comp} | " + " | ".join(cells) + " |")
    totals = []
    for n in names:
        d, phases, inferences = data[n]
        tokens = phases.get("prefill", 0) + phases.get("decode", 0)
        per_token = f", {1e3 * sum(d.values()) / max(tokens, 1):.2f} ms per generated token" if tokens else ""
        totals.append(f"{1e3 * sum(d.values()) / inferences:.1f} ms{per_token}")
    lines.append("| **all** | | " + " | ".join(totals) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq2seq", default="google/flan-t5-base")
    ap.add_argument("--decoder", default="bigscience/bloomz-560m")
    ap.add_argument("--inferences", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--out", type=Path, default=Path("repro"))
    ap.add_argument("--task", action="append", choices=list(TASKS), help="Only these tasks (default: all).")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    tables = []
    for task in args.task or TASKS:
        runs = {}
        for model in (args.seq2seq, args.decoder):
            out = args.out / f"{model.replace('/', '_')}-{task}.h5"
            shape = default_shape(resolve(model), get_task(task), TASKS[task])
            print(f"tracing {model} on {task} ({args.inferences} inferences, {shape.seq_len} input tokens, "
                  f"{shape.new_tokens} new tokens)...", file=sys.stderr)
            s = phprof.trace(model, task, inferences=args.inferences, warmup=1, output=out, overwrite=True,
                      seq_len=shape.seq_len, new_tokens=shape.new_tokens, device=args.device, size=args.size,
                      idle_s=0.5)
            runs[model] = (out, s)
        measured = all(s.energy is not None and s.energy.joules is not None for _, s in runs.values())
        paths = [str(p) for p, _ in runs.values()]
        if measured:
            comparison = phprof.compare(paths)
            page = phprof.render(comparison, args.out / f"compare-{task}.html")
            tables.append(f"**{task}** (energy)\n\n{phprof.render(comparison, 'markdown')}\npage: {page}\n")
        else:
            tables.append(time_table(task, {m: p for m, (p, _) in runs.items()}))
    report = "\n".join(tables)
    (args.out / "table.md").write_text(report)
    print(report)
    print(f"written: {args.out / 'table.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
