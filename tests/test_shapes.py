import json

import pytest

from t2l_ray.shapes import base_shapes, load_base_config


def test_gqa_value_projection_is_narrower():
    shapes = base_shapes("mistralai/Mistral-7B-Instruct-v0.2")
    assert (shapes.module("q_proj").in_features, shapes.module("q_proj").out_features) == (4096, 4096)
    assert (shapes.module("v_proj").in_features, shapes.module("v_proj").out_features) == (4096, 1024)
    assert shapes.num_layers == 32 and shapes.base_model == "mistralai/Mistral-7B-Instruct-v0.2"


def test_gemma_uses_explicit_head_dim():
    shapes = base_shapes("gemma-2-2b-it")
    assert shapes.num_layers == 26
    assert shapes.module("q_proj").out_features == 8 * 256
    assert shapes.module("v_proj").out_features == 4 * 256
    assert shapes.module("q_proj").in_features == 2304


def test_llama_preset_and_other_modules():
    shapes = base_shapes("llama-3.1-8b-instruct", ["q_proj", "k_proj", "o_proj", "down_proj"])
    assert [m.name for m in shapes.modules] == ["q_proj", "k_proj", "o_proj", "down_proj"]
    assert shapes.module("down_proj").in_features == 14336
    assert shapes.module("down_proj").parent == "mlp"


def test_config_json_file_and_folder(tmp_path):
    data = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
            "num_hidden_layers": 3, "intermediate_size": 128, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(data))
    for source in (tmp_path, tmp_path / "config.json"):
        shapes = base_shapes(str(source))
        assert shapes.num_layers == 3
        assert shapes.module("v_proj").out_features == 16
    assert load_base_config(tmp_path).hidden_size == 64


def test_unknown_model_and_module_fail_clearly():
    with pytest.raises(ValueError, match="not a preset"):
        base_shapes("no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="unsupported target module"):
        base_shapes("gemma-2-2b-it", ["lm_head"])
