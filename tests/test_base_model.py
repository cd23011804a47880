"""The one base-model builder of training, eval and the chat deployment (fast, no Ray)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from t2l_ray.base_model import ModelConfig, build_base_model, save_base, target_shapes, tokenizer_overrides
from t2l_ray.config import load_config
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer
from t2l_ray.eval.config import EvalModelConfig
from t2l_ray.shapes import base_shapes
from t2l_ray.train.config import TrainConfig

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 300, "max_position_embeddings": 128}


def tiny(seed=0, **fields):
    return ModelConfig(name_or_path="mistral-7b-instruct-v0.2", init="random", config_overrides=dict(TINY), seed=seed,
                       **fields)


def test_a_random_base_is_seeded_frozen_and_the_same_from_a_train_or_an_eval_config():
    built = build_base_model(tiny(seed=3))
    again = build_base_model(EvalModelConfig(name_or_path="mistral-7b-instruct-v0.2", init="random",
                                             config_overrides=dict(TINY), seed=3))
    other = build_base_model(tiny(seed=4))
    weights = built.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in again.state_dict().items())  # every process: the same weights
    assert not torch.equal(weights["model.embed_tokens.weight"], other.state_dict()["model.embed_tokens.weight"])
    assert not built.training and not any(p.requires_grad for p in built.parameters())
    assert built.config.hidden_size == 32 and built.config.vocab_size == 300  # overrides applied
    assert {p.dtype for p in build_base_model(tiny(), "bfloat16").parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("init, tokenizer, overrides, vocab", [
    ("random", "train", {"vocab_size": 300}, 512),  # a BPE trained for the run sets the vocabulary
    ("random", "/runs/demo/tokenizer", {}, 512),  # another named tokenizer: its size is the default ...
    ("random", "/runs/demo/tokenizer", {"vocab_size": 300}, 300),  # ... unless the overrides name one
    ("random", "", {}, None),  # the base's own tokenizer fits its own vocabulary
    ("pretrained", "train", {}, None),  # pretrained weights fix the vocabulary
])
def test_a_random_bases_vocabulary_follows_its_tokenizer(init, tokenizer, overrides, vocab):
    model = ModelConfig(init=init, tokenizer=tokenizer, config_overrides={"hidden_size": 64, **overrides})
    result = tokenizer_overrides(model, 512)
    assert result.get("vocab_size") == vocab and result["hidden_size"] == 64
    assert model.config_overrides == {"hidden_size": 64, **overrides}  # the model config itself is left alone


def test_a_random_base_is_saved_whole_and_loads_bit_identically(tmp_path):
    cfg = load_config(TrainConfig, None, ["model.name_or_path=mistral-7b-instruct-v0.2", "model.init=random",
                                          f"model.config_overrides={TINY}", "model.seed=3"])
    train_tokenizer(["reverse the words of a sentence", "count the letters 1 2 3"], tmp_path / "tok", vocab_size=300)
    uri = save_base(cfg.model, "float32", str(tmp_path / "tok"), str(tmp_path / "run" / "base"))
    assert uri == str(tmp_path / "run" / "base")
    saved = AutoModelForCausalLM.from_pretrained(uri, dtype=torch.float32).state_dict()
    built = build_base_model(cfg.model).state_dict()
    assert saved.keys() == built.keys()
    assert all(torch.equal(saved[k], built[k]) for k in built)  # the very weights every worker trains against
    assert load_tokenizer(uri).chat_template == load_tokenizer(tmp_path / "tok").chat_template
    # the folder names a base whose LoRA shapes are the hypernet's, so validate-adapter --base-model RUN/base works
    ours, preset = base_shapes(uri), target_shapes(cfg.model, cfg.hypernet.target_modules)
    assert (ours.num_layers, ours.modules) == (preset.num_layers, preset.modules)
    assert ours.base_model == uri and preset.base_model == "mistral-7b-instruct-v0.2"
    # ... and it loads as a pretrained base: what the chat deployment builds from RUN/base
    served = build_base_model(ModelConfig(name_or_path=uri)).state_dict()
    assert all(torch.equal(served[k], built[k]) for k in built)


def test_the_builder_does_not_import_ray():
    """Eval actors, the chat deployment and plain scripts build bases too; none of them should pull in Ray."""
    import subprocess
    import sys

    code = "import sys, t2l_ray.base_model as b; b.target_shapes(b.ModelConfig(), ['q_proj']); print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
