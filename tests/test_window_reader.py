"""Reading a profiler window as torch holds it (no JSON export) gives the export's table."""
from __future__ import annotations

import numpy as np
import torch

from phprof.tracing.kineto import load_kineto, read_profiler_result


def _window(tmp_path):
    """One small CPU window: nested annotations (scopes) around a two-layer model's ops."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    got = {}

    def ready(prof):
        path = tmp_path / "w.json"
        prof.export_chrome_trace(str(path))
        got["json"] = load_kineto(path, scope_filter=lambda n: n != "not.a.scope")
        got["direct"] = read_profiler_result(prof.profiler.kineto_results, scope_filter=lambda n: n != "not.a.scope")

    with torch.no_grad(), torch.profiler.profile(
            schedule=torch.profiler.schedule(wait=0, warmup=1, active=3, repeat=1), on_trace_ready=ready) as p:
        for i in range(5):
            with torch.profiler.record_function(f"phprof.inference.{i}"):
                with torch.profiler.record_function("model.0"):
                    x = model[0](torch.ones(4, 8))
                with torch.profiler.record_function("not.a.scope"):
                    model[2](model[1](x))
            p.step()
    return got["json"], got["direct"]


def test_the_direct_reader_gives_the_exports_table(tmp_path):
    exported, direct = _window(tmp_path)
    a, b = exported.events, direct.events
    assert len(a) == len(b) > 20
    for column in ("start_ns", "end_ns", "kind", "device", "correlation", "external_id", "op"):
        np.testing.assert_array_equal(a[column], b[column], err_msg=column)
    assert [exported.names[i] for i in a["name"]] == [direct.names[i] for i in b["name"]]
    assert [exported.stack_path(s) for s in a["stack"]] == [direct.stack_path(s) for s in b["stack"]]
    assert any(exported.stack_path(s)[-1:] == ["model.0"] for s in a["stack"])  # the scopes were found
    assert not any("not.a.scope" in exported.stack_path(s) for s in a["stack"])
    # one thread in the export, one in torch's events (their ids differ: system vs torch's own)
    assert len(np.unique(a["stream"])) == len(np.unique(b["stream"])) == 1
