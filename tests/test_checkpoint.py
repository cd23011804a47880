import json

import pytest
import torch

from t2l_ray import checkpoint
from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.shapes import BaseShapes, ModuleShape

SHAPES = BaseShapes("tiny/base", "llama", 2, (ModuleShape("q_proj", 16, 16), ModuleShape("v_proj", 16, 8)))


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_round_trip_rebuilds_the_same_hypernet(tmp_path, variant):
    torch.manual_seed(0)
    model = TextToLoRA(HypernetConfig(variant=variant, latent=16, head_in=16), SHAPES, 12)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_()
    sha = checkpoint.save_checkpoint(model.eval(), "my-encoder", str(tmp_path / "ckpt"))
    loaded = checkpoint.load_checkpoint(str(tmp_path / "ckpt"))
    assert loaded.sha256 == sha and loaded.encoder == "my-encoder"
    assert loaded.model.shapes == SHAPES and loaded.model.config == model.config
    emb = torch.randn(2, 12)
    with torch.no_grad():
        for name, (a, b) in model(emb).items():
            torch.testing.assert_close(loaded.model(emb)[name][1], b)


def test_corrupt_weights_are_detected(tmp_path):
    model = TextToLoRA(HypernetConfig(latent=16, head_in=16), SHAPES, 12)
    checkpoint.save_checkpoint(model, "enc", str(tmp_path / "c"))
    weights = tmp_path / "c" / checkpoint.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="sha256"):
        checkpoint.load_checkpoint(str(tmp_path / "c"))


def test_missing_checkpoint_names_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a hypernet checkpoint"):
        checkpoint.load_checkpoint(str(tmp_path / "nothing"))


def test_config_is_self_describing(tmp_path):
    model = TextToLoRA(HypernetConfig(variant="S", latent=16, head_in=16), SHAPES, 12)
    checkpoint.save_checkpoint(model, "enc", str(tmp_path / "c"))
    config = json.loads((tmp_path / "c" / checkpoint.CONFIG_FILE).read_text())
    assert config["hypernet"]["variant"] == "S" and config["encoder_dim"] == 12
    assert config["shapes"]["modules"] == [["q_proj", 16, 16], ["v_proj", 16, 8]]
