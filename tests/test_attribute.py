"""The label timeline of a trace."""
from __future__ import annotations

from phprof import load
from phprof.attribution.timeline import OUTSIDE, scope_timeline
from phprof.tracing.run import trace

def test_the_timeline_covers_each_inference_once(tmp_path):
    out = tmp_path / "t.h5"
    trace("google/flan-t5-base", "zero-shot-summarization", inferences=4, warmup=0, output=out, size="tiny",
          idle_s=0, source="none")
    t = load(out)
    starts, ends, labels, names = scope_timeline(t)
    assert (starts[1:] >= ends[:-1]).all()  # no overlap
    inference_time = (t.inferences["end_ns"] - t.inferences["start_ns"]).sum()
    assert (ends - starts).sum() == inference_time  # every instant of every inference, once
    assert OUTSIDE in names and "encoder" in names and len(names) == len(set(names))


