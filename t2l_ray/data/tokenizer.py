"""Tokenizers without a hub: train a small real one from texts, or load a folder (path or URI) or a hub name.

Tests and the self-contained demo need a genuine tokenizer (byte-level BPE, special tokens, a chat
template) but cannot download one, so `train_tokenizer` builds it from the texts at hand. Training is
deterministic: the same texts and vocab size give the same `tokenizer.json`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""A Zephyr-like template: each turn ends with EOS, so a response that ends with EOS closes its turn."""


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, save it as a transformers tokenizer folder and return it.

    Plain encoding (`add_special_tokens=True`) prepends `<s>`, like Llama-style tokenizers; every byte is
    in the alphabet, so any text encodes without `<unk>`.
    """
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


class TokenizerNotFound(OSError):
    """Neither a local tokenizer folder nor a hub name that could be fetched."""


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a local folder, or from the hub by name when a hub is reachable."""
    path = Path(name_or_path)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise TokenizerNotFound(
            f"tokenizer {name_or_path!s}: not a local folder and not loadable from the hub{hint}: {error}"
        ) from error


def open_tokenizer(source: str | Path, scratch: str) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder (a path, or a storage URI, copied under `scratch` first) or a hub name.

    One without a pad token pads with EOS (batched generation needs a pad token; tokenizing for training pads
    with EOS then anyway)."""
    from t2l_ray import storage

    source = str(source)
    tokenizer = load_tokenizer(storage.local_copy(source, scratch) if "://" in source else source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
