"""The offline tokenizer: trained from texts, saved, reloaded with no hub, deterministic."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from t2l_ray.data.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, TokenizerNotFound, load_tokenizer, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Reverse the letters of the given word.",
    "Akshuat dendropark ( Russian : Акшуатский дендропарк ) is a natural monument.",
    "Café £ 12 ≤ 15 → 3 ÷ 1 × 2 🙂",
] * 20

TRAIN_IN_SUBPROCESS = """
import sys
from t2l_ray.data.tokenizer import train_tokenizer
texts = [line for line in sys.stdin.read().split("\\x00") if line]
train_tokenizer(texts, sys.argv[1], vocab_size=int(sys.argv[2]))
"""


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()


def test_trained_tokenizer_round_trips_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=512)
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == SPECIAL_TOKENS
    assert 256 < len(tokenizer) <= 512
    for text in TEXTS[:4] + ["never seen: ẞ Ω ∑ 漢字"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    assert tokenizer("word")["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer("word", add_special_tokens=False)["input_ids"][0] != tokenizer.bos_token_id
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_chat_template_survives_reload(tmp_path):
    train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=400)
    rendered = load_tokenizer(tmp_path / "tok").apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<s><|user|>\nhi</s>\n<|assistant|>\n"


def test_training_uses_the_texts(tmp_path):
    tokenizer = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=512)
    assert len(tokenizer("Reverse the letters", add_special_tokens=False)["input_ids"]) <= 4
    other = train_tokenizer(["zzz qqq xxx"] * 20, tmp_path / "other", vocab_size=512)
    assert len(other("Reverse the letters", add_special_tokens=False)["input_ids"]) > 10


def test_training_is_deterministic_within_and_across_processes(tmp_path):
    train_tokenizer(TEXTS, tmp_path / "a", vocab_size=600)
    train_tokenizer(TEXTS, tmp_path / "b", vocab_size=600)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    subprocess.run(
        [sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(tmp_path / "c"), "600"],
        input="\x00".join(TEXTS),
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert digest(tmp_path / "c") == digest(tmp_path / "a")


def test_unknown_name_without_hub_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerNotFound, match="not a local folder"):
        load_tokenizer("t2l-ray-tests/no-such-tokenizer")
    with pytest.raises(TokenizerNotFound):
        load_tokenizer(tmp_path / "missing-folder")
