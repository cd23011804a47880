"""`t2l-ray compare-adapters`: how far apart adapters' delta-W are (t2l_ray/compare.py)."""

import json

import pytest
import torch
from fixtures_models import tiny_checkpoint
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from t2l_ray import adapters
from t2l_ray.cli import app
from t2l_ray.compare import compare, load_factors

runner = CliRunner()


@pytest.fixture(scope="module")
def generated(tmp_path_factory, minilm):
    """Four adapters from a tiny hypernet whose heads depend on the description; two share one description."""
    from t2l_ray.generator import Generator

    root = tmp_path_factory.mktemp("compare")
    tiny_checkpoint(str(root / "ckpt"))
    generator = Generator.from_uri(str(root / "ckpt"), dtype="float32")
    texts = {"reverse": "Reverse the order of the words.", "digits": "Extract every digit in order.",
             "parity": "Say whether the number is even or odd.", "reverse-again": "Reverse the order of the words."}
    for (name, text), files in zip(texts.items(), generator.render(list(texts.values()), list(texts))):
        adapters.write_adapter(str(root / "out" / name), files)
    return root / "out"


def dense(folder) -> torch.Tensor:
    return torch.cat([(b @ a).flatten() for _, (a, b) in sorted(load_factors(str(folder)).items())])


def test_distances_are_those_of_the_full_delta_w(generated):
    names = ["digits", "parity", "reverse", "reverse-again"]
    result = compare([str(generated / n) for n in names])
    assert result.names == names
    full = {n: dense(generated / n) for n in names}
    for i, a in enumerate(names):
        assert result.norms[i] == pytest.approx(float(full[a].norm()), rel=1e-9)
        for j, b in enumerate(names):
            mean = (full[a].norm() + full[b].norm()) / 2
            assert result.distance[i][j] == pytest.approx(float((full[a] - full[b]).norm() / mean), rel=1e-6, abs=1e-6)
    assert result.distance[2][3] == pytest.approx(0.0, abs=1e-6) and result.cosine[2][3] == pytest.approx(1.0)
    assert min(result.distance[0][1], result.distance[0][2], result.distance[1][2]) > 1e-3  # descriptions matter


def test_a_peft_loras_own_scale_is_applied(tmp_path, generated):
    """A LoRA saved by PEFT itself (rsLoRA, alpha 16, rank 4): its delta-W is alpha / sqrt(r) * B @ A."""
    folder = tmp_path / "peft"
    folder.mkdir()
    config = json.loads((generated / "digits" / adapters.CONFIG_FILE).read_text())
    (folder / adapters.CONFIG_FILE).write_text(json.dumps({**config, "lora_alpha": 16, "use_rslora": True}))
    saved = load_file(generated / "digits" / adapters.WEIGHTS_FILE)
    tensors = {key.replace(".weight", ".default.weight"): tensor for key, tensor in saved.items()}
    save_file(tensors, folder / adapters.WEIGHTS_FILE)
    (folder / adapters.META_FILE).write_text("{}")
    result = compare([str(generated / "digits"), str(folder)])
    assert result.norms[1] == pytest.approx(result.norms[0] * 16 / 2)  # rank 4: sqrt(4) = 2
    assert result.cosine[0][1] == pytest.approx(1.0)


def test_the_command_takes_a_factory_output_and_refuses_what_is_not_adapters(generated, tmp_path):
    result = runner.invoke(app, ["compare-adapters", str(generated)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["adapter", "|delta-W|"] and [line.split()[0] for line in lines[1:5]] == [
        "digits", "parity", "reverse", "reverse-again"]
    assert runner.invoke(app, ["compare-adapters", str(generated), "--json"]).exit_code == 0
    (tmp_path / "empty").mkdir()
    refused = runner.invoke(app, ["compare-adapters", str(tmp_path / "empty")])
    assert refused.exit_code == 2 and "neither an adapter folder nor a folder of adapters" in refused.output
