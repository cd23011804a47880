"""The training driver's own pieces (fast, no Ray): the random base it saves for the run's adapters."""

import torch
from transformers import AutoModelForCausalLM

from t2l_ray.config import load_config
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer
from t2l_ray.shapes import base_shapes
from t2l_ray.train.common import hypernet_shapes
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.driver import save_random_base
from t2l_ray.train.engine import build_base_model

TINY = ('{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,'
        ' head_dim: 8, vocab_size: 300, max_position_embeddings: 128}')


def test_a_random_base_is_saved_whole_and_loads_bit_identically(tmp_path):
    cfg = load_config(TrainConfig, None, ["model.name_or_path=mistral-7b-instruct-v0.2", "model.init=random",
                                          f"model.config_overrides={TINY}", "model.seed=3"])
    train_tokenizer(["reverse the words of a sentence", "count the letters 1 2 3"], tmp_path / "tok", vocab_size=300)
    uri = save_random_base(cfg, str(tmp_path / "run"), str(tmp_path / "tok"))
    assert uri == str(tmp_path / "run" / "base")
    saved = AutoModelForCausalLM.from_pretrained(uri, dtype=torch.float32).state_dict()
    built = build_base_model(cfg, torch.device("cpu")).state_dict()
    assert saved.keys() == built.keys()
    assert all(torch.equal(saved[k], built[k]) for k in built)  # the very weights every worker trains against
    assert load_tokenizer(uri).chat_template == load_tokenizer(tmp_path / "tok").chat_template
    # the folder names a base whose LoRA shapes are the hypernet's, so validate-adapter --base-model RUN/base works
    ours, preset = base_shapes(uri), hypernet_shapes(cfg)
    assert (ours.num_layers, ours.modules) == (preset.num_layers, preset.modules)
    assert ours.base_model == uri and preset.base_model == "mistral-7b-instruct-v0.2"
