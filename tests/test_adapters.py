"""The adapter contract: a good folder passes; each kind of violation is rejected with a clear message."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from t2l_ray import adapters
from t2l_ray.cli import app
from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.shapes import base_shapes

runner = CliRunner()
TINY_BASE = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 128}


@pytest.fixture
def base_config(tmp_path):
    path = tmp_path / "base" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY_BASE))
    return str(path)


@pytest.fixture
def good_adapter(tmp_path, base_config):
    torch.manual_seed(0)
    hypernet = TextToLoRA(HypernetConfig(latent=16, head_in=16), base_shapes(base_config), 12)
    with torch.no_grad():
        for head in hypernet.heads.values():
            head.weight.normal_(0, 0.1)
        weights = hypernet(torch.randn(1, 12))
    files = adapters.render_adapter(weights, 0, shapes=hypernet.shapes, rank=8, scale=hypernet.config.scale,
                                    description="reverse the words", checkpoint_sha256="ab" * 32, encoder="test")
    folder = tmp_path / "good"
    adapters.write_adapter(str(folder), files)
    return folder


def validate(folder, *extra):
    return runner.invoke(app, ["validate-adapter", str(folder), *extra])


def test_good_folder_passes(good_adapter, base_config):
    result = validate(good_adapter, "--base-model", base_config, "--max-lora-rank", "8")
    assert result.exit_code == 0, result.output
    report = json.loads(validate(good_adapter, "--json").stdout)
    assert report["valid"] and report["rank"] == 8 and report["num_layers"] == 2
    assert report["modules"] == {"q_proj": [32, 32], "v_proj": [32, 16]}


def test_written_files_follow_the_contract(good_adapter):
    config = json.loads((good_adapter / adapters.CONFIG_FILE).read_text())
    assert config["lora_alpha"] == config["r"] == 8 and config["use_rslora"] is False
    assert config["use_dora"] is False and config["modules_to_save"] is None and config["bias"] == "none"
    tensors = load_file(good_adapter / adapters.WEIGHTS_FILE)
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" in tensors
    assert all(t.dtype == torch.bfloat16 and t.is_contiguous() for t in tensors.values())
    meta = json.loads((good_adapter / adapters.META_FILE).read_text())
    assert meta["description"] == "reverse the words" and meta["folded_scale"] == pytest.approx(16 / 8**0.5)


def test_scale_is_folded_into_b(tmp_path):
    a = torch.randn(1, 1, 8, 4)
    b = torch.randn(1, 1, 3, 8)
    from t2l_ray.shapes import BaseShapes, ModuleShape

    shapes = BaseShapes("x", "llama", 1, (ModuleShape("q_proj", 4, 3),))
    files = adapters.render_adapter({"q_proj": (a, b)}, 0, shapes=shapes, rank=8, scale=2.5, description="d",
                                    checkpoint_sha256="0" * 64, encoder="test", dtype="float32")
    adapters.write_adapter(str(tmp_path / "a"), files)
    tensors = load_file(tmp_path / "a" / adapters.WEIGHTS_FILE)
    torch.testing.assert_close(tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"], b[0, 0] * 2.5)
    torch.testing.assert_close(tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"], a[0, 0])


def test_unexpected_files_are_flagged(good_adapter):
    (good_adapter / f".{adapters.META_FILE}.tmp-{'ab' * 16}").write_text("{half")
    (good_adapter / "notes.txt").write_text("x")
    result = validate(good_adapter)
    assert result.exit_code == 1
    assert "unexpected file .t2l_meta.json.tmp-" in result.output and "a temp file a killed write left" in result.output
    assert "unexpected file notes.txt (not part of an adapter)" in result.output


def rewrite_weights(folder, change):
    path = folder / adapters.WEIGHTS_FILE
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def test_wrong_key_name_is_rejected(good_adapter):
    def rename(t):
        t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = t.pop(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")

    rewrite_weights(good_adapter, rename)
    result = validate(good_adapter)
    assert result.exit_code == 1
    assert "lora_A.default.weight" in result.output and "does not match" in result.output


def test_wrong_shape_is_rejected(good_adapter, base_config):
    def widen(t):
        for layer in (0, 1):
            key = f"base_model.model.model.layers.{layer}.self_attn.v_proj.lora_B.weight"
            t[key] = torch.zeros(32, 8, dtype=t[key].dtype)

    rewrite_weights(good_adapter, widen)
    result = validate(good_adapter, "--base-model", base_config)
    assert result.exit_code == 1
    assert "v_proj" in result.output and "do not fit" in result.output


def test_rank_above_server_limit_is_rejected(good_adapter):
    result = validate(good_adapter, "--max-lora-rank", "4")
    assert result.exit_code == 1 and "exceeds --max-lora-rank 4" in result.output


def test_rslora_true_is_rejected(good_adapter):
    path = good_adapter / adapters.CONFIG_FILE
    config = json.loads(path.read_text())
    config["use_rslora"] = True
    path.write_text(json.dumps(config))
    result = validate(good_adapter)
    assert result.exit_code == 1 and "use_rslora is True" in result.output


def test_nan_is_rejected(good_adapter):
    def poison(t):
        t["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"][0, 0] = float("nan")

    rewrite_weights(good_adapter, poison)
    result = validate(good_adapter)
    assert result.exit_code == 1 and "non-finite" in result.output and "layers.1.self_attn.q_proj.lora_A" in result.output


@pytest.mark.parametrize("name", adapters.REQUIRED_FILES)
def test_missing_file_is_rejected(good_adapter, name):
    (good_adapter / name).unlink()
    result = validate(good_adapter)
    assert result.exit_code == 1 and f"missing file {name}" in result.output


def test_unpaired_matrix_is_rejected(good_adapter):
    rewrite_weights(good_adapter, lambda t: t.pop("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"))
    result = validate(good_adapter)
    assert result.exit_code == 1 and "without its pair" in result.output
