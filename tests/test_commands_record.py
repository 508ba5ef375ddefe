"""`phprof trace` (the command): bad input is a one-line error and writes nothing.

The recording itself is tested through the library in test_trace.py."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from phprof.commands import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, message",
    [
        (["gtp2"], "gpt2"),  # unknown id: close matches
        (["gpt2", "--task", "object-detection"], "object-detection"),
        (["gpt2", "--seq-len", "100000"], "1024"),
        (["gpt2", "-o", "/nonexistent/dir/t.h5"], "does not exist"),
        (["gpt2", "--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # the default output goes under ./traces
    result = CliRunner().invoke(main, ["trace", *args, "--size", "tiny", "-n", "2", "--idle", "0"],
                                env={"HF_HUB_OFFLINE": "1"})
    assert not list(tmp_path.glob("**/*.h5"))
    assert result.exit_code != 0
    err = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and message in err[0], result.output
