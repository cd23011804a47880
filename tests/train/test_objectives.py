"""The training objectives: T2L's SFT loss and its parts, and LoRA reconstruction (fast, no Ray)."""

import math

import pytest
import torch
import torch.nn.functional as F
from fixtures_models import tiny_model

from t2l_ray.lora import generated_lora
from t2l_ray.train.objectives import generated_l2, neftune, reconstruction_loss, response_loss, sft_loss

IGNORE = -100


def token_losses(logits, labels, smoothing=0.0):
    """Each sample's next-token losses on its response tokens, computed one sample at a time."""
    out = []
    for row_logits, row_labels in zip(logits, labels):
        keep = row_labels[1:] != IGNORE
        out.append(F.cross_entropy(row_logits[:-1][keep], row_labels[1:][keep], reduction="none",
                                   label_smoothing=smoothing))
    return out


def test_the_response_loss_counts_response_tokens_only_and_weighs_every_sample_equally():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, 4, 2],  # a 2-token response
                           [IGNORE, 7, 1, 3, 3, 9],  # a 5-token response
                           [IGNORE] * 6])  # no response at all: left out, not a zero
    per_sample = token_losses(logits, labels)
    expected = (per_sample[0].mean() + per_sample[1].mean()) / 2  # not the mean over the 7 tokens
    assert per_sample[0].mean() != pytest.approx(float(per_sample[1].mean()), rel=1e-3)
    torch.testing.assert_close(response_loss(logits, labels, 0.0), expected)
    assert float(response_loss(logits, labels, 0.0)) != pytest.approx(float(torch.cat(per_sample[:2]).mean()), rel=1e-4)

    changed = logits.clone()
    changed[0, :3] += 5.0  # positions whose next token is a prompt token
    changed[:, -1] += 5.0  # the last position predicts nothing
    torch.testing.assert_close(response_loss(changed, labels, 0.0), expected)
    smoothed = (token_losses(logits, labels, 0.1)[0].mean() + token_losses(logits, labels, 0.1)[1].mean()) / 2
    torch.testing.assert_close(response_loss(logits, labels, 0.1), smoothed)


def test_a_batch_without_response_tokens_has_zero_loss_that_still_backpropagates():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = response_loss(logits, torch.full((2, 4), IGNORE), 0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None and not logits.grad.any()


def test_neftune_is_off_at_alpha_zero_and_bounded_on_real_tokens_only():
    embeddings = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    assert neftune(embeddings, mask, 0.0) is embeddings
    torch.manual_seed(1)
    noise = neftune(embeddings, mask, 5.0) - embeddings
    assert not noise[mask == 0].any()  # padding stays as it was
    for row, length in enumerate((4, 2)):  # uniform in +-alpha / sqrt(L * d), L = the sample's real tokens
        bound = 5.0 / math.sqrt(length * 8)
        real = noise[row, :length]
        assert real.abs().max() <= bound + 1e-6 and real.abs().max() > 0.5 * bound


def lora_for(base, n, rank=2, seed=0, zero_b=False):
    generator = torch.Generator().manual_seed(seed)
    layers, hidden = base.config.num_hidden_layers, base.config.hidden_size
    kv = base.config.num_key_value_heads * (hidden // base.config.num_attention_heads)
    weights = {}
    for name, out in (("q_proj", hidden), ("v_proj", kv)):
        a = torch.randn(n, layers, rank, hidden, generator=generator) * 0.1
        b = torch.zeros(n, layers, out, rank) if zero_b else torch.randn(n, layers, out, rank, generator=generator) * 0.1
        weights[name] = (a, b)
    return weights


def test_the_sft_loss_is_the_response_loss_through_the_generated_loras_plus_l2():
    base = tiny_model("llama")
    ids = torch.randint(0, base.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.where(torch.arange(7) >= 4, ids, torch.full_like(ids, IGNORE))}
    weights = lora_for(base, 2)
    loss, parts = sft_loss(base, weights, 2.0, batch, label_smoothing=0.1, l2=0.5, neftune_alpha=5.0, training=False)
    with torch.no_grad(), generated_lora(base, weights, 2.0):
        logits = base(input_ids=ids).logits
    torch.testing.assert_close(parts["lm_loss"], response_loss(logits, batch["labels"], 0.1))
    torch.testing.assert_close(parts["l2"], generated_l2(weights))
    torch.testing.assert_close(loss, parts["lm_loss"] + 0.5 * parts["l2"])
    assert not parts["lm_loss"].requires_grad and not parts["l2"].requires_grad  # logged, never backpropagated

    # zero B: delta-W = 0, so the base's own loss; NEFTune only while training
    zero = lora_for(base, 2, zero_b=True)
    with torch.no_grad():
        plain = response_loss(base(input_ids=ids).logits, batch["labels"], 0.1)
    _, off = sft_loss(base, zero, 2.0, batch, label_smoothing=0.1, l2=0.0, neftune_alpha=5.0, training=False)
    _, noisy = sft_loss(base, zero, 2.0, batch, label_smoothing=0.1, l2=0.0, neftune_alpha=5.0, training=True)
    torch.testing.assert_close(off["lm_loss"], plain)
    assert float(noisy["lm_loss"]) != pytest.approx(float(plain), abs=1e-6)


def test_reconstruction_compares_delta_w_by_default_and_a_and_b_on_request():
    torch.manual_seed(3)
    a, b = torch.randn(2, 2, 4, 6), torch.randn(2, 2, 5, 4)
    target = {"q_proj": (a, 2.0 * b)}  # targets carry their PEFT scale folded into B
    assert float(reconstruction_loss({"q_proj": (a, b)}, target, 2.0)) < 1e-6
    assert float(reconstruction_loss({"q_proj": (a, b)}, target, 2.0, "ab")) < 1e-6
    # the same delta-W from other factors: nothing to learn on delta-W, a real error on A and B
    rescaled = {"q_proj": (3.0 * a, b / 3.0)}
    assert float(reconstruction_loss(rescaled, target, 2.0)) < 1e-5
    expected_ab = (2.0 * a).abs().mean() + (2.0 * b / 3.0 - 2.0 * b).abs().mean()
    torch.testing.assert_close(reconstruction_loss(rescaled, target, 2.0, "ab"), expected_ab)
    # delta-W: the mean absolute entry error, averaged over modules
    other = {"q_proj": (a, b), "v_proj": (a, b)}
    wanted = {"q_proj": (a, 2.0 * b), "v_proj": (a, torch.zeros_like(b))}
    expected = (0 + (2.0 * torch.einsum("nlor,nlri->nloi", b, a)).abs().mean()) / 2
    torch.testing.assert_close(reconstruction_loss(other, wanted, 2.0), expected)
