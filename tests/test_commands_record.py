"""`phprof trace` (the command): bad input is a one-line error and writes nothing; the summary
names the device and power source.

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


CONFIGS = {  # what a user's config.json may hold that transformers or phprof cannot use
    "rejected": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 250,
                  "num_attention_heads": 7, "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 1000},
                 "transformers cannot build this config: Class validation error for validator "
                 "'validate_architecture': ValueError: The hidden size (250) is not a multiple"),
    "unknown type": ({"model_type": "mystery-lm", "architectures": ["MysteryForCausalLM"], "hidden_size": 32},
                     "model_type 'mystery-lm' is not one transformers"),
    "unknown activation": ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32, "n_head": 2,
                            "n_layer": 1, "vocab_size": 1000, "bos_token_id": 0, "eos_token_id": 0, "activation_function": "nosuchact"},
                           "transformers cannot build this config: it names 'nosuchact', which transformers does not know"),
    "no architectures": ({"model_type": "gpt2", "n_embd": 32, "n_head": 2, "n_layer": 2, "vocab_size": 1000},
                         "names no architecture (its config has no 'architectures'), so its task is not known: "
                         "give it with --task"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_config_phprof_cannot_use_is_one_line_saying_why(tmp_path, case):
    import json

    config, message = CONFIGS[case]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["trace", str(path), "-n", "1", "--idle", "0", "-o", str(tmp_path / "t.h5")],
                                env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 1 and not (tmp_path / "t.h5").exists()
    err = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and message in err[0], result.output
    assert "Traceback" not in result.output and "nothing phprof knows" not in result.output
    assert "unknown task ''" not in result.output


@pytest.mark.integration
def test_the_summary_names_the_device_and_power_source(tmp_path):
    """No --device: the CPU here (torch sees no GPU), and the summary says so, and which source."""
    out = tmp_path / "t.h5"
    result = CliRunner().invoke(main, ["trace", "gpt2", "--size", "tiny", "-n", "1", "--warmup", "0", "--new-tokens",
                                       "1", "--idle", "0", "--source", "none", "-o", str(out)],
                                env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("device: "))
    assert line.startswith("device: cpu (") and "as torch sees no CUDA GPU" in line, line
    assert line.endswith("; power source: none (time only)"), line


@pytest.mark.integration
def test_phprof_run_exits_with_the_programs_status(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prog = tmp_path / "prog.py"
    prog.write_text("import sys, torch\ntorch.nn.Linear(2, 2)(torch.ones(1, 2))\nsys.exit(int(sys.argv[1]))\n")
    out = tmp_path / "t.h5"
    result = CliRunner().invoke(main, ["run", "--idle", "0", "--source", "none", "-o", str(out), str(prog), "5"])
    assert result.exit_code == 5, result.output
    assert "failed: 1 inferences of Linear" in result.output and "each outermost call" in result.output
    result = CliRunner().invoke(main, ["run", "--idle", "0", "-o", str(tmp_path / "missing.h5"), "nowhere.py"])
    assert result.exit_code == 1 and "Error: can't open file" in result.output and not (tmp_path / "missing.h5").exists()
