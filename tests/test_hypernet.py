import pytest
import torch

from t2l_ray.hypernet import HypernetConfig, TextToLoRA, rotary
from t2l_ray.shapes import base_shapes

MISTRAL = "mistral-7b-instruct-v0.2"


@pytest.mark.parametrize("variant,expected_millions", [("L", 55.4), ("M", 34.4), ("S", 5.0)])
def test_parameter_counts_match_t2l_on_mistral_preset(variant, expected_millions):
    shapes = base_shapes(MISTRAL)
    with torch.device("meta"):
        model = TextToLoRA(HypernetConfig(variant=variant), shapes, encoder_dim=1024)
    millions = model.num_parameters() / 1e6
    assert abs(millions - expected_millions) / expected_millions < 0.02, millions


def small(variant, **kw):
    torch.manual_seed(0)
    shapes = base_shapes("mistral-7b-instruct-v0.2")
    from t2l_ray.shapes import BaseShapes, ModuleShape

    shapes = BaseShapes("tiny", "llama", 3, (ModuleShape("q_proj", 32, 32), ModuleShape("v_proj", 32, 16)))
    return TextToLoRA(HypernetConfig(variant=variant, latent=16, head_in=24, **kw), shapes, encoder_dim=12)


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_delta_w_is_zero_at_init_but_a_is_not(variant):
    model = small(variant).eval()
    out = model(torch.randn(5, 12))
    for name, (a, b) in out.items():
        delta = torch.einsum("nlor,nlri->nloi", b, a)
        assert torch.count_nonzero(delta) == 0
        assert a.abs().sum() > 0, "A must carry the PEFT init so B receives gradient"


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_shapes_of_generated_weights(variant):
    out = small(variant)(torch.randn(4, 12))
    a, b = out["v_proj"]
    assert a.shape == (4, 3, 8, 32) and b.shape == (4, 3, 16, 8)
    a, b = out["q_proj"]
    assert a.shape == (4, 3, 8, 32) and b.shape == (4, 3, 32, 8)


def perturb(model):
    """Give the zero-initialised heads random weights so outputs depend on the task."""
    torch.manual_seed(1)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("variant", ["L", "M", "S"])
@pytest.mark.parametrize("rank_embedding", ["learned", "rotary"])
def test_batched_generation_equals_one_at_a_time(variant, rank_embedding):
    model = perturb(small(variant, rank_embedding=rank_embedding)).eval()
    emb = torch.randn(6, 12)
    batched = model(emb)
    for i in range(6):
        single = model(emb[i : i + 1])
        for name in batched:
            torch.testing.assert_close(batched[name][0][i], single[name][0][0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched[name][1][i], single[name][1][0], rtol=1e-5, atol=1e-6)
    # and different tasks get different adapters
    assert not torch.allclose(batched["q_proj"][1][0], batched["q_proj"][1][1])


def test_layers_get_different_weights():
    model = perturb(small("L")).eval()
    _, b = model(torch.randn(1, 12))["q_proj"]
    assert not torch.allclose(b[0, 0], b[0, 1])


def test_gradients_reach_the_trunk_after_one_step():
    model = small("M")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        a, b = model(torch.randn(2, 12))["q_proj"]
        loss = (torch.einsum("nlor,nlri->nloi", b, a) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.task_proj[0].weight.grad.abs().sum() > 0


def test_rotary_preserves_norm_and_depends_on_position():
    x = torch.randn(4, 16)
    y0, y1 = rotary(x, torch.tensor(0)), rotary(x, torch.tensor(3))
    torch.testing.assert_close(y0, x)
    torch.testing.assert_close(y1.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(y1, x)


def test_bad_inputs_are_refused():
    model = small("L")
    with pytest.raises(ValueError, match=r"\[N, 12\]"):
        model(torch.randn(2, 13))
    with pytest.raises(ValueError, match="variant"):
        HypernetConfig(variant="XL").check()


def test_scale_is_rslora_by_default():
    config = HypernetConfig()
    assert config.scale == pytest.approx(16 / 8**0.5)
    assert HypernetConfig(use_rslora=False).scale == pytest.approx(2.0)
