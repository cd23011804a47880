"""`t2l-ray` core commands, run the way a user runs them."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from t2l_ray.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "t2l_ray", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("info", "init-checkpoint", "generate", "validate-adapter"):
        assert command in out


@pytest.mark.parametrize("variant,millions", [("L", 55.4), ("M", 34.4), ("S", 5.0)])
def test_info_json_on_mistral(variant, millions):
    result = run("info", "--base-model", "mistral-7b-instruct-v0.2", "--variant", variant, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert abs(info["params"] / 1e6 - millions) / millions < 0.02
    per_layer = 8 * (4096 + 4096) + 8 * (4096 + 1024)
    assert info["adapter_params"] == 32 * per_layer
    assert info["adapter_bytes_bf16"] == 2 * info["adapter_params"]
    assert info["modules"]["v_proj"] == {"A": [8, 4096], "B": [1024, 8]}


def test_info_text_and_bad_model():
    result = run("info", "--base-model", "gemma-2-2b-it")
    assert result.exit_code == 0 and "26 layers" in result.stdout and "B [1024, 8]" in result.stdout
    bad = run("info", "--base-model", "nope/nothing-here")
    assert bad.exit_code == 2 and "not a preset" in bad.output


def test_init_generate_validate(tmp_path, minilm):
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "adapters")
    result = run("init-checkpoint", "--base-model", "gemma-2-2b-it", "--variant", "M", "--out", ckpt)
    assert result.exit_code == 0, result.output
    result = run("generate", "--checkpoint", ckpt, "--description", "Answer trivia questions.", "--out", out, "--id", "trivia")
    assert result.exit_code == 0, result.output
    result = run("validate-adapter", f"{out}/trivia", "--base-model", "gemma-2-2b-it", "--max-lora-rank", "16")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "adapters" / "trivia" / "t2l_meta.json").read_text())
    assert meta["description"] == "Answer trivia questions." and meta["encoder"] == "all-minilm-l6-v2"
    # An untrained hypernet gives delta-W = 0: every B is zero.
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "adapters" / "trivia" / "adapter_model.safetensors")
    assert all(t.abs().sum() == 0 for k, t in tensors.items() if "lora_B" in k)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_A" in k)


def test_generate_without_id_uses_a_content_hash(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    assert run("init-checkpoint", "--base-model", "gemma-2-2b-it", "--variant", "S", "--out", ckpt).exit_code == 0
    result = run("generate", "--checkpoint", ckpt, "--description", "Sort the letters.", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    (folder,) = (tmp_path / "o").iterdir()
    assert folder.name.startswith("t2l-") and len(folder.name) == 28


def test_generate_refuses_bad_ids_and_checkpoints(tmp_path):
    result = run("generate", "--checkpoint", str(tmp_path), "--description", "x", "--out", str(tmp_path), "--id", "../up")
    assert result.exit_code == 2 and "invalid adapter id" in result.output
    result = run("generate", "--checkpoint", str(tmp_path / "none"), "--description", "x", "--out", str(tmp_path))
    assert result.exit_code == 2 and "not a hypernet checkpoint" in result.output
