"""`t2l-ray train-lora`: oracle and multi-task LoRA baselines through DeepSpeed, written in the adapter contract."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from t2l_ray import adapters
from t2l_ray.config import load_config
from t2l_ray.data.suite import build_suite
from t2l_ray.train.baselines import BaselineRecipe

pytestmark = pytest.mark.slow

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256,
        "initializer_range": 0.2}  # a random base with enough gain that a LoRA can move its logits in a few steps


def recipe_overrides(tmp_path, tasks):
    task_list = tmp_path / "tasks.txt"
    task_list.write_text("".join(f"{t}\n" for t in tasks))
    return [
        "model.name_or_path=mistral-7b-instruct-v0.2", "model.init=random", "model.tokenizer=train",
        f"model.config_overrides={json.dumps(TINY)}",
        "data.source=suite", f"data.task_list={task_list}", "data.max_prompt_tokens=48", "data.max_response_tokens=16",
        "optim.neftune_alpha=0", "run.num_workers=2", "run.cpus_per_worker=0.5",
        "baseline.lr=1e-2", "baseline.max_steps=30", "baseline.multitask_steps=60", "baseline.warmup_steps=2", "baseline.log_every=5",
        "baseline.batch_size=8", "baseline.tasks_per_job=4", "baseline.cpus_per_job=1",
        f"baseline.output_dir={tmp_path / 'baselines'}",
    ]


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_oracle_and_multitask_loras_pass_the_contract_and_learn(ray_cluster, tmp_path):
    import torch
    from peft import PeftModel

    from t2l_ray.data.tokenizer import load_tokenizer
    from t2l_ray.train.baselines import Examples, run_baselines, task_rows
    from t2l_ray.base_model import build_base_model
    from t2l_ray.train.objectives import response_loss

    suite = build_suite(seed=0)
    tasks = [t.name for t in suite.train[:8]]
    cfg = load_config(BaselineRecipe, None, [*recipe_overrides(tmp_path, tasks), "baseline.mode=both"])
    out = tmp_path / "baselines"
    assert run_baselines(cfg) == str(out)

    assert sorted(p.name for p in (out / "oracle").iterdir()) == sorted(tasks)
    # On a random base every LoRA names the base's saved copy (its config, weights and tokenizer), not the preset.
    assert (out / "base" / "config.json").is_file() and (out / "base" / "tokenizer.json").is_file()
    ratios = []
    for task in tasks:
        folder = out / "oracle" / task
        report = adapters.validate_adapter(str(folder), base_model=str(out / "base"))
        assert report.ok, (task, report.errors)
        assert json.loads((folder / adapters.CONFIG_FILE).read_text())["base_model_name_or_path"] == str(out / "base")
        meta = json.loads((folder / adapters.META_FILE).read_text())
        assert meta["kind"] == "oracle" and meta["task"] == task
        assert meta["descriptions"] == suite.descriptions.train[task]  # what reconstruction reads
        rows = read_log(out / "logs" / "oracle" / f"{task}.jsonl")
        assert [r["step"] for r in rows] == [1, 5, 10, 15, 20, 25, 30]
        assert rows[-1]["loss"] < rows[0]["loss"], (task, rows)
        ratios.append(rows[-1]["loss"] / rows[0]["loss"])
    assert sum(ratios) / len(ratios) < 0.9, ratios

    report = adapters.validate_adapter(str(out / "multitask"), base_model=str(out / "base"))
    assert report.ok, report.errors
    meta = json.loads((out / "multitask" / adapters.META_FILE).read_text())
    assert meta["kind"] == "multitask" and meta["tasks"] == sorted(tasks)
    rows = read_log(out / "logs" / "multitask.jsonl")
    assert rows[-1]["step"] == 60 and rows[-1]["loss"] < 0.9 * rows[0]["loss"], rows
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["oracle"]) == sorted(tasks) and summary["multitask"]["steps"] == 60

    # The folded adapter IS the trained LoRA: PEFT loads it onto the same random base and it beats the base.
    cfg.model.config_overrides["vocab_size"] = len(load_tokenizer(str(out / "tokenizer")))
    base = build_base_model(cfg.model)
    task = next(t for t in suite.train if t.name == tasks[0])
    batch = Examples(task_rows(task), load_tokenizer(str(out / "tokenizer")), 48, 16)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    with torch.no_grad():
        plain = float(response_loss(base(**inputs).logits, batch.labels, 0.0))
        tuned_model = PeftModel.from_pretrained(base, str(out / "oracle" / task.name))
        tuned = float(response_loss(tuned_model(**inputs).logits, batch.labels, 0.0))
    assert tuned < 0.95 * plain, (plain, tuned)

    # The command: re-running into the same folder skips the finished oracle LoRAs; the last line is the folder.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"objective": "sft"}))
    from t2l_ray.cli import app

    result = CliRunner().invoke(app, ["train-lora", "--config", str(recipe), "--mode", "oracle",
                                      "--output-dir", str(out), *[x for o in recipe_overrides(tmp_path, tasks) for x in ("--set", o)]])
    assert result.exit_code == 0, result.output
    assert "8 of 8 LoRAs already written" in result.output
    assert result.output.strip().splitlines()[-1] == f"output_dir: {out}"
