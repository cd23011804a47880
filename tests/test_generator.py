"""Descriptions -> adapter folders' bytes (t2l_ray/generator.py), on a tiny checkpoint and the offline encoder."""

import json

import pytest
import torch
from fixtures_models import tiny_bert
from safetensors.torch import load

from t2l_ray import adapters, checkpoint
from t2l_ray.encoders import TextEncoder
from t2l_ray.generator import Generator
from t2l_ray.packing import lora_key
from t2l_ray.request_rule import content_id

TEXTS = ["Sort the words of the sentence.", "Add the two numbers.", "Answer yes if the text mentions an animal."]


def fp32_generator(ckpt_uri: str, encoder) -> Generator:
    """A generator on its own loaded checkpoint (a Renderer takes its model over), fp32 end to end."""
    return Generator(checkpoint.load_checkpoint(ckpt_uri), encoder=encoder, dtype="float32", forward="float32")


def test_render_embeddings_is_the_generators_path(tiny_ckpt, minilm):
    """Embedding first and rendering after gives the bytes of `Generator.render`, metadata added."""
    generator = Generator(checkpoint.load_checkpoint(tiny_ckpt[0]), encoder=minilm)
    texts, ids = ["Sort the words.", "Add the numbers."], ["sort", "add"]
    whole = generator.render(texts, ids)
    split = generator.render_embeddings(minilm.encode(texts), texts, ids, extra_meta=[None, {"metadata": {"k": 1}}])
    assert [f.files[adapters.WEIGHTS_FILE] for f in whole] == [f.files[adapters.WEIGHTS_FILE] for f in split]
    assert json.loads(split[1].files[adapters.META_FILE])["metadata"] == {"k": 1}


def weights(files: adapters.AdapterFiles) -> dict[str, torch.Tensor]:
    return load(files.files[adapters.WEIGHTS_FILE])


def test_each_row_of_a_batch_is_the_adapter_of_its_own_description(tiny_ckpt, minilm):
    """One batched generation gives every description the weights it gets alone: rows neither mix nor shift."""
    generator = fp32_generator(tiny_ckpt[0], minilm)
    embeddings = minilm.encode(TEXTS)
    batch = generator.render_embeddings(embeddings, TEXTS)
    for i, text in enumerate(TEXTS):
        (alone,) = generator.render_embeddings(embeddings[i : i + 1], [text])
        for key, tensor in weights(alone).items():
            torch.testing.assert_close(weights(batch[i])[key], tensor)
    assert len({f.files[adapters.WEIGHTS_FILE] for f in batch}) == len(TEXTS)  # the descriptions steer the weights


def test_the_weights_are_the_hypernets_lora_with_the_scale_folded_into_b(tiny_ckpt, minilm):
    loaded = checkpoint.load_checkpoint(tiny_ckpt[0])
    with torch.no_grad():
        expected = loaded.model(minilm.encode(TEXTS[:1]))
    scale = loaded.model.config.scale
    tensors = weights(fp32_generator(tiny_ckpt[0], minilm).render(TEXTS[:1])[0])
    shapes = loaded.model.shapes
    assert len(tensors) == 2 * len(expected) * shapes.num_layers
    for name, (a, b) in expected.items():
        for layer in range(shapes.num_layers):
            torch.testing.assert_close(tensors[lora_key(layer, shapes.module(name), "A")], a[0, layer])
            torch.testing.assert_close(tensors[lora_key(layer, shapes.module(name), "B")], b[0, layer] * scale)


def test_ids_meta_and_config_of_each_adapter(tiny_ckpt, minilm):
    uri, sha = tiny_ckpt
    generator = Generator(checkpoint.load_checkpoint(uri), encoder=minilm)
    given, derived = generator.render(TEXTS[:2], ids=["my-sort", None])
    meta = json.loads(given.files[adapters.META_FILE])
    assert meta["adapter_id"] == "my-sort" and meta["description"] == TEXTS[0]
    assert (meta["checkpoint_sha256"], meta["encoder"], meta["dtype"]) == (sha, "all-minilm-l6-v2", "bfloat16")
    assert meta["folded_scale"] == pytest.approx(generator.config.scale)
    assert json.loads(derived.files[adapters.META_FILE])["adapter_id"] == content_id(TEXTS[1], sha)
    config = json.loads(given.files[adapters.CONFIG_FILE])
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert given.files[adapters.CONFIG_FILE] == derived.files[adapters.CONFIG_FILE]


def test_written_adapters_pass_the_contract(tiny_ckpt, minilm, tmp_path):
    for index, files in enumerate(Generator(checkpoint.load_checkpoint(tiny_ckpt[0]), encoder=minilm).render(TEXTS)):
        adapters.write_adapter(str(tmp_path / str(index)), files)
        report = adapters.validate_adapter(str(tmp_path / str(index)))
        assert report.ok, report.errors
        assert (report.rank, report.num_layers) == (4, 2)


def test_no_descriptions_no_adapters(tiny_ckpt, minilm):
    assert Generator(checkpoint.load_checkpoint(tiny_ckpt[0]), encoder=minilm).render([]) == []


def test_an_encoder_of_another_width_is_refused_by_name(tiny_ckpt, minilm):
    narrow = TextEncoder("tiny-bert", tiny_bert(minilm.tokenizer.vocab_size), minilm.tokenizer, "mean")
    with pytest.raises(ValueError, match="encoder tiny-bert gives 32-dim embeddings; the hypernet expects 384"):
        Generator(checkpoint.load_checkpoint(tiny_ckpt[0]), encoder=narrow)
