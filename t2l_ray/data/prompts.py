"""T2L's prompt format and the tokens a training step needs.

The user prompt is T2L's (`preprocessing.py`, `lol_` branch, with `LOL_TEMPLATE = "{task_def}\\n\\n{problem}"`):

    Definition + " Please complete the task without any explanation."
    [+ "\\nThe answer should be a comma-separated list of possible completions."   when >1 answer]
    + "\\n\\n" + input

and the target is `", ".join(outputs)`. The input is stripped of surrounding whitespace, as SNI's collator
did when it built the texts T2L trained on (e.g. task1453's inputs start with a space).

Rendering: with the tokenizer's chat template when it has one (one user turn, `add_generation_prompt=True`),
tokenised without extra special tokens since the template writes them; otherwise `PLAIN_TEMPLATE`,
tokenised with the tokenizer's own special tokens (e.g. a BOS).

Truncation is per part, so a long input never eats the answer:
- the prompt keeps its LAST `max_prompt_tokens` tokens: the end holds the instance input and the
  generation prompt the response must follow; the definition's start is what gets cut;
- the response keeps its FIRST `max_response_tokens - 1` tokens and always ends with EOS, so the model
  always learns to stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from t2l_ray.data.tokenizer import load_tokenizer

NO_EXPLANATION = " Please complete the task without any explanation."
MULTIPLE_ANSWERS = "\nThe answer should be a comma-separated list of possible completions."
PLAIN_TEMPLATE = "{prompt}\n\nAnswer:\n"
"""Used only for tokenizers without a chat template (base models)."""

IGNORE_INDEX = -100
CONSUMED_COLUMNS = ("definition", "input", "outputs")
"""Text columns turned into tokens; every other column of a batch (task, id, description, ...) passes through."""


def user_prompt(definition: str, input: str, num_outputs: int = 1) -> str:
    """The user turn for one instance, exactly as T2L builds it."""
    task_def = definition + NO_EXPLANATION
    if num_outputs > 1:
        task_def += MULTIPLE_ANSWERS
    return f"{task_def}\n\n{input.strip()}"


def target_text(outputs: Iterable[str]) -> str:
    """The response: every acceptable answer, comma-separated."""
    return ", ".join(outputs)


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The full prompt text up to where the response starts."""
    return render_messages(tokenizer, [{"role": "user", "content": prompt}])


def render_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """A conversation (`[{"role", "content"}]`) up to where the assistant's answer starts, as training renders
    its one user turn; Serve's chat route renders requests with it. Without a chat template the turns' texts
    are joined by blank lines into `PLAIN_TEMPLATE`. Templates may refuse a conversation (a system turn,
    broken alternation): jinja2's TemplateError, or ValueError."""
    if uses_chat_template(tokenizer):
        # enable_thinking=False: reasoning templates (Qwen3) would otherwise expect a <think> block first.
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return PLAIN_TEMPLATE.format(prompt="\n\n".join(m["content"] for m in messages))


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompts: a chat template writes its own special tokens (BOS), so none are added
    then; plain prompts get the tokenizer's own."""
    return tokenizer(texts, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]


def tokenize_batch(
    batch: Mapping,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int = 1024,
    max_response_tokens: int = 256,
) -> dict[str, np.ndarray]:
    """Rows with `definition`, `input`, `outputs` -> padded token arrays plus the passed-through columns.

    `batch` is a dict of columns (Ray's "numpy" format) or a pandas DataFrame. Returns `input_ids`,
    `labels`, `attention_mask` as int64 [rows, longest row] (right-padded), and int64 [rows]
    `prompt_tokens` / `response_tokens` (the response count includes EOS). Labels are -100 except on the
    response tokens.
    """
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise ValueError("max_prompt_tokens and max_response_tokens must be at least 1")
    missing = [column for column in CONSUMED_COLUMNS if column not in batch]
    if missing:
        raise KeyError(f"tokenize_batch needs columns {list(CONSUMED_COLUMNS)}; missing {missing}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no EOS token; responses must end with one")
    outputs = [_as_outputs(value) for value in batch["outputs"]]
    prompts = [
        render_prompt(tokenizer, user_prompt(str(definition), str(text), len(answers)))
        for definition, text, answers in zip(batch["definition"], batch["input"], outputs)
    ]
    prompt_ids = encode_prompts(tokenizer, prompts)
    response_ids = tokenizer([target_text(answers) for answers in outputs], add_special_tokens=False)["input_ids"]
    prompt_ids = [ids[-max_prompt_tokens:] for ids in prompt_ids]
    response_ids = [ids[: max_response_tokens - 1] + [eos_id] for ids in response_ids]

    rows = len(prompts)
    width = max((len(p) + len(r) for p, r in zip(prompt_ids, response_ids)), default=0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    input_ids = np.full((rows, width), pad_id, dtype=np.int64)
    labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64)
    attention_mask = np.zeros((rows, width), dtype=np.int64)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        length = len(prompt) + len(response)
        input_ids[row, :length] = prompt + response
        labels[row, len(prompt) : length] = response
        attention_mask[row, :length] = 1

    passed = {column: np.asarray(batch[column]) for column in batch.keys() if column not in CONSUMED_COLUMNS}
    return {
        **passed,
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "prompt_tokens": np.array([len(p) for p in prompt_ids], dtype=np.int64),
        "response_tokens": np.array([len(r) for r in response_ids], dtype=np.int64),
    }


class TokenizeBatch:
    """`tokenize_batch` as a callable class for Ray Data `map_batches`: the tokenizer loads once per worker."""

    def __init__(self, tokenizer: str | Path, max_prompt_tokens: int = 1024, max_response_tokens: int = 256):
        self.tokenizer = load_tokenizer(tokenizer)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_response_tokens = max_response_tokens

    def __call__(self, batch: Mapping) -> dict[str, np.ndarray]:
        return tokenize_batch(batch, self.tokenizer, self.max_prompt_tokens, self.max_response_tokens)


def _as_outputs(value: object) -> list[str]:
    """A row's answers as a list of strings, whether Ray hands over a list, an ndarray or one string."""
    if isinstance(value, str):
        return [value]
    return [str(answer) for answer in value]
