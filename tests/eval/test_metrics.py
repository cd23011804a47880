"""Eval metrics against hand-computed values, and log-likelihood choice picking on a model we can compute by hand."""

import math
from decimal import Decimal
from types import SimpleNamespace

import pytest
import torch

from t2l_ray.eval import metrics


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # LCS the,cat,on,the,mat = 5 of 6 and 6 tokens: P = R = F = 5/6
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # LCS 2; P = 2/2, R = 2/4 -> F = 2 * 1 * 0.5 / 1.5 = 2/3
        ("A B", "a b c d", 2 / 3),
        # the classic ROUGE-L example: LCS "police killed" (2 of 4 each way) -> 0.5
        ("police killed the gunman", "the gunman police killed", 0.5),
        # case and punctuation are not tokens
        ("Hello, world!", "hello world", 1.0),
        # in-order subsequence with gaps: LCS a,c,e = 3; P = 3/3, R = 3/5 -> F = 2 * 0.6 / 1.6 = 0.75
        ("a c e", "a b c d e", 0.75),
        ("", "anything", 0.0),
        ("no overlap", "at all", 0.0),
        # non-ASCII words are tokens too
        ("Grüße aus Köln", "grüße aus köln", 1.0),
    ],
)
def test_rouge_l_hand_computed(prediction, reference, expected):
    assert metrics.rouge_l_single(prediction, reference) == pytest.approx(expected)


def test_rouge_l_takes_the_best_reference():
    assert metrics.rouge_l("a b", ["x y", "a b c d", "a b"]) == 1.0
    assert metrics.rouge_l("a b", ["x y", "a b c d"]) == pytest.approx(2 / 3)
    assert metrics.rouge_l("a b", []) == 0.0


def test_lcs_length():
    assert metrics.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example
    assert metrics.lcs_length([], ["a"]) == 0


def test_exact_match_normalises_case_punctuation_and_spaces():
    assert metrics.exact_match("The  Answer.", ["the answer"]) == 1.0
    assert metrics.exact_match(" yes ", ["no", "Yes!"]) == 1.0
    assert metrics.exact_match("answer", ["the answer"]) == 0.0  # articles are kept, as in SNI
    assert metrics.exact_match("", ["x"]) == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7. The answer is 7.", Decimal(7)),
        ("It costs $1,234.50 in all.", Decimal("1234.50")),
        ("The temperature drops to -5 degrees", Decimal(-5)),
        ("no digits here", None),
        ("first 12 then 13", Decimal(13)),
    ],
)
def test_last_number(text, expected):
    assert metrics.last_number(text) == expected


def test_number_match_against_gsm8k_answers():
    gold = "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72"
    assert metrics.gsm8k_answer(gold) == Decimal(72)
    assert metrics.number_match("48 + 24 = 72, so the answer is 72.", gold) == 1.0
    assert metrics.number_match("The answer is 72.0", gold) == 1.0  # 72.0 == 72
    assert metrics.number_match("The answer is 24.", gold) == 0.0  # the LAST number counts
    assert metrics.number_match("I do not know", gold) == 0.0
    assert metrics.number_match("so 1000 in total", "#### 1,000") == 1.0


class Bigram(torch.nn.Module):
    """logits at position t depend only on the token at t: row `table[token]`."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32), requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


# After token 0 every token has p = 1/3; after token 1: p = [1/4, 1/4, 1/2].
BIGRAM = [[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0]]


def test_continuation_logprobs_hand_computed():
    model = Bigram(BIGRAM)
    pairs = [([0], [1, 2]), ([0], [2]), ([2, 0, 1], [2])]
    scores = metrics.continuation_logprobs(model, pairs, pad_id=0, batch_size=2)
    assert scores[0][0] == pytest.approx(math.log(1 / 3) + math.log(1 / 2))  # p(1|0) * p(2|1)
    assert scores[1][0] == pytest.approx(math.log(1 / 3))
    assert scores[2][0] == pytest.approx(math.log(1 / 2))  # only the continuation is scored
    assert [count for _, count in scores] == [2, 1, 1]


def test_mc_log_likelihood_picks_the_right_choice():
    """Choice A = [1, 2] (log 1/3 + log 1/2, 2 tokens), B = [2] (log 1/3, 1 token): the sum picks B, per token picks A."""
    model = Bigram(BIGRAM)
    scores = metrics.continuation_logprobs(model, [([0], [1, 2]), ([0], [2])], pad_id=0)
    assert metrics.pick_choice(scores, "sum") == 1
    assert metrics.pick_choice(scores, "mean") == 0
    # a context that makes choice 0 likelier: after 1, token 2 has p = 1/2 > 1/4
    scores = metrics.continuation_logprobs(model, [([1], [2]), ([1], [0])], pad_id=0)
    assert metrics.pick_choice(scores) == 0


def test_continuation_logprobs_truncates_the_context_not_the_continuation():
    model = Bigram(BIGRAM)
    (total, count), = metrics.continuation_logprobs(model, [([2, 2, 2, 2, 1], [2, 0])], pad_id=0, max_length=3)
    assert count == 2 and total == pytest.approx(math.log(1 / 2) + math.log(1 / 3))
    with pytest.raises(ValueError):
        metrics.continuation_logprobs(model, [([0], [])], pad_id=0)


def test_batched_scores_equal_one_at_a_time_on_a_real_model():
    """Right padding must not change any score (a tiny random Llama, so attention and positions are real)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = AutoModelForCausalLM.from_config(config).eval()
    pairs = [([1, 5, 7], [9, 3]), ([1, 4], [8]), ([1, 2, 3, 4, 5, 6], [7, 8, 9])]
    together = metrics.continuation_logprobs(model, pairs, pad_id=0, batch_size=3)
    alone = [metrics.continuation_logprobs(model, [p], pad_id=0)[0] for p in pairs]
    for (a, _), (b, _) in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-4)
