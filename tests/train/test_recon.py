"""Reconstruction training: a library of PEFT LoRA folders in, a hypernet that regenerates them out."""

import json
import math
import uuid

import pytest
import torch
from safetensors.torch import save as save_safetensors

from t2l_ray import adapters, storage
from t2l_ray.config import load_config
from t2l_ray.data.suite import build_suite
from t2l_ray.packing import lora_key
from t2l_ray.shapes import BaseShapes, ModuleShape
from t2l_ray.train.config import TrainConfig
from t2l_ray.data.library import LibraryError, library_base, load_targets, scan_library

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256}
SHAPES = BaseShapes("mistralai/Mistral-7B-Instruct-v0.2", "mistral", 2,
                    (ModuleShape("q_proj", 32, 32), ModuleShape("v_proj", 32, 16)))
MODULES = ["q_proj", "v_proj"]


def random_lora(generator, rank=8):
    """module -> (A [1, layers, r, in], B [1, layers, out, r]), magnitudes like a trained LoRA's."""
    out = {}
    for m in SHAPES.modules:
        a = (torch.rand(1, SHAPES.num_layers, rank, m.in_features, generator=generator) * 2 - 1) / math.sqrt(m.in_features)
        b = torch.randn(1, SHAPES.num_layers, m.out_features, rank, generator=generator) * 0.05
        out[m.name] = (a, b)
    return out


def write_peft_folder(uri, weights, rank, alpha, rslora, meta=None):
    """A folder as PEFT's save_pretrained writes it (its own alpha and rsLoRA, no scale folded)."""
    tensors = {}
    for name, (a, b) in weights.items():
        module = SHAPES.module(name)
        for layer in range(SHAPES.num_layers):
            tensors[lora_key(layer, module, "A")] = a[0, layer].contiguous()
            tensors[lora_key(layer, module, "B")] = b[0, layer].contiguous()
    config = {**adapters.adapter_config(SHAPES, rank, MODULES), "lora_alpha": alpha, "use_rslora": rslora}
    files = {adapters.WEIGHTS_FILE: save_safetensors(tensors), adapters.CONFIG_FILE: json.dumps(config).encode()}
    if meta is not None:
        files[adapters.META_FILE] = json.dumps(meta).encode()
    storage.write_folder(uri, files, adapters.CONFIG_FILE)


def delta_w(a, b, scale):
    return scale * torch.einsum("lor,lri->loi", b, a)


def test_library_base_is_the_one_base_its_loras_name(tmp_path):
    weights = random_lora(torch.Generator().manual_seed(0))
    write_peft_folder(str(tmp_path / "lib" / "a"), weights, 8, 16, False)
    write_peft_folder(str(tmp_path / "lib" / "b"), weights, 8, 16, False)
    assert library_base(scan_library(str(tmp_path / "lib"))) == SHAPES.base_model
    config = tmp_path / "lib" / "b" / adapters.CONFIG_FILE  # a LoRA made for another base: no one name
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "/runs/demo/base"}))
    assert library_base(scan_library(str(tmp_path / "lib"))) is None


def test_targets_fold_each_folders_peft_scale(tmp_path):
    """Plain LoRA, rsLoRA and our contract folders all become targets whose B @ A is PEFT's delta-W."""
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    base = MistralForCausalLM(MistralConfig(vocab_size=64, **{k: v for k, v in TINY.items()}))
    cases = {"plain": (4, 16, False), "rslora": (8, 16, True)}
    expected = {}
    for task, (rank, alpha, rslora) in cases.items():
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora, target_modules=MODULES))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        model.save_pretrained(str(tmp_path / "lib" / task))
        attn = model.base_model.model.model.layers
        expected[task] = {m: torch.stack([getattr(attn[i].self_attn, m).get_delta_weight("default") for i in range(2)])
                          for m in MODULES}
        base = model.unload()
    generator = torch.Generator().manual_seed(1)
    contract = random_lora(generator)
    adapters.write_adapter(str(tmp_path / "lib" / "contract"), adapters.render_adapter(
        contract, 0, shapes=SHAPES, rank=8, scale=2.5, description="d", checkpoint_sha256="", encoder="", dtype="float32"))
    expected["contract"] = {m: delta_w(a[0], b[0], 2.5) for m, (a, b) in contract.items()}
    (tmp_path / "lib" / "half-written").mkdir()  # no adapter_config.json: not a library entry

    entries = scan_library(str(tmp_path / "lib"))
    assert sorted(entries) == ["contract", "plain", "rslora"]
    assert entries["plain"].scale == 4.0 and entries["rslora"].scale == pytest.approx(16 / math.sqrt(8))
    for task, entry in entries.items():
        targets = load_targets(entry, SHAPES, MODULES)
        for m in MODULES:
            a, b = targets[m]
            assert a.shape == (2, entry.rank, SHAPES.module(m).in_features)
            torch.testing.assert_close(delta_w(a, b, 1.0), expected[task][m], atol=1e-5, rtol=1e-4)

    write_peft_folder(str(tmp_path / "bad" / "dora"), contract, 8, 8, False)
    config_uri = tmp_path / "bad" / "dora" / adapters.CONFIG_FILE
    config_uri.write_text(json.dumps({**json.loads(config_uri.read_text()), "use_dora": True}))
    with pytest.raises(LibraryError, match="use_dora"):
        scan_library(str(tmp_path / "bad"))
    wrong = BaseShapes("m", "mistral", 2, (ModuleShape("q_proj", 64, 64), ModuleShape("v_proj", 64, 16)))
    with pytest.raises(LibraryError, match="needs A"):
        load_targets(entries["plain"], wrong, MODULES)


@pytest.mark.slow
def test_reconstruction_lowers_delta_w_error_and_generates_valid_adapters(s3_server, s3_ray_cluster, tmp_path):
    from t2l_ray.generator import Generator
    from t2l_ray.train.driver import run_training

    # A library of 8 tasks on the object store: real suite descriptions, random LoRA targets of one magnitude;
    # half written as PEFT saves them (alpha 16, rsLoRA: B stored unscaled), half in our contract (alpha = r).
    suite = build_suite(seed=0, instances_per_task=1)
    tasks = [t.name for t in suite.train[:8]]
    library = s3_server.uri(f"recon-library/{uuid.uuid4().hex}")
    generator = torch.Generator().manual_seed(0)
    targets = {}
    for index, task in enumerate(tasks):
        weights = random_lora(generator)
        meta = {"description": suite.descriptions.train[task][0], "descriptions": suite.descriptions.train[task]}
        if index % 2:
            peft_scale = 16 / math.sqrt(8)
            unscaled = {m: (a, b / peft_scale) for m, (a, b) in weights.items()}
            write_peft_folder(storage.join(library, task), unscaled, 8, 16, True, meta)
        else:
            adapters.write_adapter(storage.join(library, task), adapters.render_adapter(
                weights, 0, shapes=SHAPES, rank=8, scale=1.0, description=meta["description"], checkpoint_sha256="",
                encoder="", dtype="float32", extra_meta={"descriptions": meta["descriptions"]}))
        targets[task] = {m: delta_w(a[0], b[0], 1.0) for m, (a, b) in weights.items()}

    run_dir = tmp_path / "recon"
    cfg = load_config(TrainConfig, None, [
        "objective=reconstruction", f"reconstruction.library={library}",
        "model.name_or_path=mistral-7b-instruct-v0.2", "model.init=random", f"model.config_overrides={json.dumps(TINY)}",
        "hypernet.variant=L", "hypernet.latent=32", "hypernet.head_in=64",
        "data.tasks_per_batch=4", "optim.lr=2e-3", "optim.warmup_steps=5", "optim.max_steps=120",
        "run.num_workers=2", "run.cpus_per_worker=0.5", "run.log_every=20", "run.checkpoint_every=60",
        f"run.output_dir={run_dir}",
    ])
    assert run_training(cfg) == str(run_dir)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 20, 40, 60, 80, 100, 120]
    assert rows[0]["delta_w_rel"] == pytest.approx(1.0, abs=0.05)  # the hypernet starts at delta-W = 0
    assert rows[-1]["delta_w_rel"] < 0.6 * rows[0]["delta_w_rel"], [r["delta_w_rel"] for r in rows]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert sorted(p.name for p in run_dir.glob("checkpoint_*")) and list((run_dir / "tensorboard").iterdir())
    exported = json.loads((run_dir / "hypernet" / "hypernet.json").read_text())
    assert exported["step"] == 120 and exported["objective"] == "reconstruction"

    # The trained result generates adapters that pass the contract and sit nearer their task's LoRA than zero.
    gen = Generator.from_uri(str(run_dir / "hypernet"), dtype="float32")
    descriptions = [suite.descriptions.train[t][0] for t in tasks]
    errors = {}
    for task, files in zip(tasks, gen.render(descriptions, ids=tasks)):
        folder = str(tmp_path / "generated" / task)
        adapters.write_adapter(folder, files)
        report = adapters.validate_adapter(folder)
        assert report.ok, report.errors
        generated = load_targets(scan_library(str(tmp_path / "generated"))[task], SHAPES, MODULES)
        error = sum(float((delta_w(a, b, 1.0) - targets[task][m]).abs().sum()) for m, (a, b) in generated.items())
        errors[task] = error / sum(float(targets[task][m].abs().sum()) for m in MODULES)
    assert max(errors.values()) < 0.9 and sum(errors.values()) / len(errors) < 0.6, errors
