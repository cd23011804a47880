"""Task encoders (t2l_ray/encoders.py): T2L's scaling, the pooling rules on padded batches, specs, the cache."""

import json
import math

import pytest
import torch
from fixtures_models import tiny_base_folder, tiny_bert

from t2l_ray.encoders import OFFLINE_DEFAULT, EmbeddingCache, TextEncoder, load_encoder, normalise, text_key

SHORT, LONG = "Sort the words.", "Answer yes when the sentence mentions an animal, otherwise answer no, in one word."


def test_normalise_gives_every_row_norm_sqrt_d_in_float32():
    x = torch.randn(5, 16, dtype=torch.bfloat16)
    out = normalise(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.full((5,), 4.0))
    torch.testing.assert_close(out / 4.0, x.float() / x.float().norm(dim=-1, keepdim=True))


def test_text_key_names_the_encoder_and_the_exact_text():
    key = text_key("enc", "Sort the words.")
    assert key == text_key("enc", "Sort the words.") and len(key) == 64
    assert len({key, text_key("other", "Sort the words."), text_key("enc", "Sort the words. "),
                text_key("enc S", "ort the words.")}) == 4


def test_minilm_embeddings_are_scaled_and_independent_of_the_batch(minilm):
    """Mean pooling ignores padding, so a text's embedding does not depend on its batch or the batch size."""
    batch = minilm.encode([SHORT, LONG, SHORT], batch_size=2)
    assert batch.shape == (3, 384) and batch.dtype == torch.float32
    torch.testing.assert_close(batch.norm(dim=-1), torch.full((3,), math.sqrt(384)))
    torch.testing.assert_close(batch[0], minilm.encode([SHORT])[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch[0], batch[2])
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_encode_takes_a_list(minilm):
    with pytest.raises(TypeError, match="list of texts"):
        minilm.encode(SHORT)
    assert minilm.encode([]).shape == (0, 384)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_base_models_last_token_is_the_last_real_one_on_either_padding_side(tmp_path, side):
    encoder = load_encoder(f"base-model:{tiny_base_folder(tmp_path / 'base')}")
    assert (encoder.pooling, encoder.dim) == ("last", 64)
    assert encoder.tokenizer.pad_token is not None
    encoder.tokenizer.padding_side = side
    torch.testing.assert_close(encoder.encode([SHORT, LONG])[0], encoder.encode([SHORT])[0], atol=1e-4, rtol=1e-4)


def test_the_minilm_aliases_name_the_offline_default():
    assert load_encoder("sentence-transformers/all-MiniLM-L6-v2").name == OFFLINE_DEFAULT


def test_an_unreachable_encoder_is_named_with_the_offline_choices():
    with pytest.raises(ValueError, match="(?s)cannot load encoder 'no-such-org/no-such-encoder'.*Offline, use 'all-minilm-l6-v2'"):
        load_encoder("no-such-org/no-such-encoder")


@pytest.mark.parametrize("config,pooling", [
    (None, "mean"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
    ({"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}, "last"),
    ({"pooling_mode_mean_tokens": True}, "mean"),
])
def test_a_local_folder_pools_as_its_sentence_transformers_config_says(minilm, tmp_path, config, pooling):
    folder = tmp_path / "encoder"
    tiny_bert(minilm.tokenizer.vocab_size).save_pretrained(folder)
    minilm.tokenizer.save_pretrained(folder)
    if config is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    encoder = load_encoder(str(folder))
    assert (encoder.name, encoder.pooling, encoder.dim) == (str(folder), pooling, 32)
    if pooling == "cls":
        tokens = minilm.tokenizer([SHORT], return_tensors="pt")
        with torch.no_grad():
            first = encoder.model(**tokens).last_hidden_state[:, 0]
        torch.testing.assert_close(encoder.encode([SHORT]), normalise(first))


def test_the_cache_embeds_each_text_once(minilm):
    cache = EmbeddingCache(minilm.name)
    first = cache.encode(minilm, [SHORT, LONG, SHORT])
    assert (cache.misses, cache.hits) == (2, 1)
    again = cache.encode(minilm, [LONG])
    assert (cache.misses, cache.hits) == (2, 2)
    torch.testing.assert_close(again[0], first[1])
    torch.testing.assert_close(first, minilm.encode([SHORT, LONG, SHORT]), atol=1e-4, rtol=1e-4)
    assert cache.encode(minilm, []).shape == (0, 384)


def test_the_cache_round_trips_through_bytes_and_refuses_another_encoder(minilm):
    cache = EmbeddingCache(minilm.name)
    cache.encode(minilm, [SHORT, LONG])
    copy = EmbeddingCache(minilm.name)
    copy.update_from_bytes(cache.to_bytes())
    assert copy.table.keys() == cache.table.keys()
    torch.testing.assert_close(copy.encode(minilm, [LONG, SHORT]), cache.encode(minilm, [LONG, SHORT]))
    assert copy.misses == 0
    narrow = TextEncoder("tiny-bert", tiny_bert(minilm.tokenizer.vocab_size), minilm.tokenizer, "mean")
    with pytest.raises(ValueError, match="cache holds 'all-minilm-l6-v2' embeddings, not 'tiny-bert'"):
        cache.encode(narrow, [SHORT])
