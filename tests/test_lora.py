import copy

import pytest
import torch
from fixtures_models import tiny_model
from peft import PeftModel

from t2l_ray import adapters
from t2l_ray.hypernet import HypernetConfig, TextToLoRA
from t2l_ray.lora import freeze, generated_lora
from t2l_ray.shapes import base_shapes


def random_hypernet(model, variant, encoder_dim=12):
    torch.manual_seed(3)
    shapes = base_shapes(model.config)
    hypernet = TextToLoRA(HypernetConfig(variant=variant, latent=16, head_in=32), shapes, encoder_dim)
    with torch.no_grad():
        for head in hypernet.heads.values():
            head.weight.normal_(0, 0.2)
    return hypernet.eval()


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_functional_logits_equal_peft_loaded_adapter(tiny_family, variant, tmp_path):
    base = freeze(tiny_model(tiny_family))
    pristine = copy.deepcopy(base)
    hypernet = random_hypernet(base, variant)
    ids = torch.randint(0, base.config.vocab_size, (3, 9))
    with torch.no_grad():
        weights = hypernet(torch.randn(3, 12))
        with generated_lora(base, weights, hypernet.config.scale):
            functional = base(ids).logits
        plain = base(ids).logits  # the context left the model clean
        assert torch.allclose(plain, pristine(ids).logits)
        assert not torch.allclose(functional, plain, atol=1e-4), "the generated LoRA must change the logits"
        for i in range(3):
            files = adapters.render_adapter(
                weights, i, shapes=hypernet.shapes, rank=8, scale=hypernet.config.scale,
                description=f"task {i}", checkpoint_sha256="0" * 64, encoder="test", dtype="float32",
            )
            folder = tmp_path / f"a{i}"
            adapters.write_adapter(str(folder), files)
            peft_model = PeftModel.from_pretrained(copy.deepcopy(pristine), str(folder)).eval()
            torch.testing.assert_close(peft_model(ids[i : i + 1]).logits[0], functional[i], rtol=1e-5, atol=1e-5)


def test_gradients_flow_only_into_the_hypernet():
    base = freeze(tiny_model("llama"))
    hypernet = random_hypernet(base, "M").train()
    ids = torch.randint(0, base.config.vocab_size, (2, 7))
    weights = hypernet(torch.randn(2, 12))
    with generated_lora(base, weights, hypernet.config.scale):
        loss = base(ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is None for p in base.parameters())
    assert hypernet.heads["q_proj"].weight.grad.abs().sum() > 0
    assert hypernet.task_proj[0].weight.grad.abs().sum() > 0


def test_each_sample_gets_its_own_adapter():
    base = freeze(tiny_model("qwen2"))
    hypernet = random_hypernet(base, "L")
    ids = torch.randint(0, base.config.vocab_size, (1, 6)).repeat(2, 1)
    with torch.no_grad():
        weights = hypernet(torch.randn(2, 12))
        with generated_lora(base, weights, hypernet.config.scale):
            logits = base(ids).logits
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)


def test_batch_size_mismatch_is_an_error():
    base = freeze(tiny_model("llama"))
    hypernet = random_hypernet(base, "L")
    with torch.no_grad(), generated_lora(base, hypernet(torch.randn(2, 12)), 1.0):
        with pytest.raises(ValueError, match="2 generated LoRAs"):
            base(torch.zeros(3, 4, dtype=torch.long))
