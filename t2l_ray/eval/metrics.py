"""Scores of one prediction against its references, and multiple-choice picking by log-likelihood.

- ROUGE-L F1 (`rouge_l`): longest common subsequence of tokens, F = 2PR / (P + R). Tokens are the text
  lowercased and split into runs of word characters (`\\w+`, so non-English words count and punctuation
  does not), the same rule as `rouge_score`'s default tokenizer widened beyond ASCII. No stemming (SNI's
  setting). With several references the best one counts, as SNI's `metric_max_over_ground_truths` does.
- Exact match (`exact_match`): equal after SNI's normalisation (lowercase, punctuation removed, whitespace
  collapsed); 1 when any reference matches.
- GSM8K (`number_match`): the last number in the generation equals the number after `####` in the
  reference answer (commas, `$` and trailing `.0` ignored).
- Multiple choice (`continuation_logprobs`, `pick_choice`): each choice is scored by the summed
  log-probability of its tokens after the prompt (`mean` divides by its token count); the argmax is the answer.

Scores are fractions in [0, 1]; reports show them as percentages.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import torch

_WORD = re.compile(r"\w+", re.UNICODE)
_PUNCTUATION = set(string.punctuation)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


# ------------------------------------------------------------------------------------------------ text


def rouge_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_single(prediction: str, reference: str) -> float:
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    common = lcs_length(pred, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1 against the best-matching reference."""
    return max((rouge_l_single(prediction, r) for r in references), default=0.0)


def normalize_answer(text: str) -> str:
    """SNI's normalisation for exact match: lowercase, drop punctuation, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    norm = normalize_answer(prediction)
    return float(any(norm == normalize_answer(r) for r in references))


def _to_number(text: str) -> Decimal | None:
    cleaned = text.replace(",", "").replace("$", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def last_number(text: str) -> Decimal | None:
    """The last number written in `text` (e.g. `The answer is $1,234.50.` -> 1234.50), or None."""
    for match in reversed(_NUMBER.findall(text)):
        value = _to_number(match)
        if value is not None:
            return value
    return None


def gsm8k_answer(answer: str) -> Decimal | None:
    """The gold number of a GSM8K answer: what follows `####` (else the last number in it)."""
    if "####" in answer:
        return last_number(answer.rsplit("####", 1)[1])
    return last_number(answer)


def number_match(prediction: str, gold: Decimal | str | None) -> float:
    if isinstance(gold, str):
        gold = gsm8k_answer(gold)
    found = last_number(prediction)
    return float(gold is not None and found is not None and found == gold)


# ------------------------------------------------------------------------------------------------ log-likelihood


@torch.inference_mode()
def continuation_logprobs(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[tuple[float, int]]:
    """(summed log-probability, token count) of each continuation given its context, token ids in.

    Each row is `context + continuation`, right-padded; when it is longer than `max_length` the context
    loses its first tokens (the continuation is always scored whole). `model(input_ids, attention_mask)`
    must return an object with `.logits` [batch, length, vocab], as HF causal LMs (and PEFT models) do.
    """
    results: list[tuple[float, int]] = []
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows, spans = [], []
        for context, continuation in chunk:
            if not continuation:
                raise ValueError("an empty continuation cannot be scored")
            context, continuation = list(context), list(continuation)
            if max_length is not None and len(context) + len(continuation) > max_length:
                keep = max(1, max_length - len(continuation))
                context = context[-keep:]
            if not context:
                raise ValueError("a continuation needs at least one context token (e.g. BOS) before it")
            rows.append(context + continuation)
            spans.append((len(context), len(continuation)))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for i, (start_at, length) in enumerate(spans):
            targets = ids[i, start_at : start_at + length].to(logprobs.device)
            # the token at position p is predicted by the logits at p - 1
            picked = logprobs[i, start_at - 1 : start_at - 1 + length].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            results.append((float(picked.sum()), length))
    return results


def pick_choice(scores: Sequence[tuple[float, int]], normalize: str = "sum") -> int:
    """Index of the best choice: by summed log-probability, or per token with `normalize='mean'`."""
    if not scores:
        raise ValueError("no choices to pick from")
    values = [total / count if normalize == "mean" else total for total, count in scores]
    return max(range(len(values)), key=values.__getitem__)
