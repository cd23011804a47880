"""Core commands: info, init-checkpoint, generate, validate-adapter, compare-adapters."""

from __future__ import annotations

import json
from typing import Optional

import typer

from t2l_ray.config import NAME_OR_PATH, PATH, local_path

VariantOption = typer.Option("L", "--variant", help="Hypernet variant: L, M or S.")


def local(kind: str = PATH, names: tuple[str, ...] = ()):
    """The typer callback of a path option: a local path is made absolute here, on the driver, by the config
    rule (`t2l_ray.config.local_path`), before any Ray task sees it; names, presets and URIs pass unchanged."""
    return lambda value: local_path(value, kind, names) if value else value


def fail(message: str, code: int = 2) -> None:
    """One line on stderr (the terminal's, also while a command's logs go to a file), then exit."""
    from t2l_ray.cli.console import echo

    echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_checked(cls, config: str | None, overrides: list[str]):
    """A recipe from YAML + `--set` overrides, checked; any problem exits 2 with the reason."""
    from t2l_ray.config import load_config

    try:
        cfg = load_config(cls, config, overrides)
        cfg.check()
    except ValueError as error:  # ConfigError included
        fail(str(error))
    return cfg


def _hypernet_config(variant: str, rank: int, target_modules: str):
    from t2l_ray.hypernet import HypernetConfig

    config = HypernetConfig(
        variant=variant.upper(), rank=rank, lora_alpha=2.0 * rank,
        target_modules=[m.strip() for m in target_modules.split(",") if m.strip()],
    )
    try:
        config.check()
    except ValueError as error:
        fail(str(error))
    return config


def _shapes(base_model: str, target_modules: list[str]):
    from t2l_ray.shapes import base_shapes

    try:
        return base_shapes(base_model, target_modules)
    except ValueError as error:
        fail(str(error))


def info(
    base_model: str = typer.Option(..., "--base-model", help="Preset name, config.json / folder, or hub name.",
                                   callback=local(NAME_OR_PATH)),
    variant: str = VariantOption,
    encoder_dim: int = typer.Option(1024, "--encoder-dim", help="Task-embedding width (gte-large: 1024)."),
    rank: int = typer.Option(8, "--rank"),
    target_modules: str = typer.Option("q_proj,v_proj", "--target-modules"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Hypernet parameter count, per-module LoRA shapes and adapter size for a base model."""
    from t2l_ray.hypernet import TextToLoRA

    config = _hypernet_config(variant, rank, target_modules)
    shapes = _shapes(base_model, config.target_modules)
    import torch

    with torch.device("meta"):
        params = TextToLoRA(config, shapes, encoder_dim).num_parameters()
    adapter_params = shapes.adapter_params(rank)
    result = {
        "base_model": shapes.base_model,
        "variant": config.variant,
        "params": params,
        "adapter_params": adapter_params,
        "adapter_bytes_bf16": adapter_params * 2,
        "num_layers": shapes.num_layers,
        "rank": rank,
        "encoder_dim": encoder_dim,
        "modules": {m.name: {"A": [rank, m.in_features], "B": [m.out_features, rank]} for m in shapes.modules},
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"base model      {shapes.base_model} ({shapes.model_type}, {shapes.num_layers} layers)")
    typer.echo(f"hypernet        T2L-{config.variant}: {params:,} parameters ({params / 1e6:.1f}M), encoder dim {encoder_dim}")
    for m in shapes.modules:
        typer.echo(f"  {m.name:<10}    A [{rank}, {m.in_features}]  B [{m.out_features}, {rank}]  per layer")
    typer.echo(f"adapter         {adapter_params:,} parameters, {adapter_params * 2:,} bytes in bf16")


def init_checkpoint(
    base_model: str = typer.Option(..., "--base-model", help="Preset name, config.json / folder, or hub name.",
                                   callback=local(NAME_OR_PATH)),
    out: str = typer.Option(..., "--out", help="Where to write the checkpoint folder (path or URI).", callback=local()),
    variant: str = VariantOption,
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Task encoder (default: the packaged offline MiniLM).",
                                          callback=local(NAME_OR_PATH)),
    rank: int = typer.Option(8, "--rank"),
    target_modules: str = typer.Option("q_proj,v_proj", "--target-modules"),
    seed: int = typer.Option(0, "--seed"),
):
    """Write an untrained hypernet checkpoint (every adapter starts as delta-W = 0)."""
    from t2l_ray import checkpoint, encoders

    config = _hypernet_config(variant, rank, target_modules)
    shapes = _shapes(base_model, config.target_modules)
    sha = checkpoint.init_checkpoint(config, shapes, encoder or encoders.OFFLINE_DEFAULT, out, seed=seed)
    typer.echo(f"wrote untrained T2L-{config.variant} checkpoint for {shapes.base_model} to {out} (sha256 {sha[:12]})")


def generate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Hypernet checkpoint folder (path or URI).", callback=local()),
    description: str = typer.Option(..., "--description", help="Plain-text task description."),
    out: str = typer.Option(..., "--out", help="Parent folder: the adapter goes to OUT/ID/.", callback=local()),
    adapter_id: Optional[str] = typer.Option(None, "--id", help="Adapter id (default: a content hash)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16 or float32."),
):
    """Generate one adapter folder from a description."""
    from t2l_ray import adapters, storage
    from t2l_ray.checkpoint import verify_checkpoint
    from t2l_ray.generator import Generator
    from t2l_ray.request_rule import check_adapter_id, content_id

    if not description.strip():
        fail("--description is empty")
    if adapter_id is not None:
        try:
            check_adapter_id(adapter_id)
        except ValueError as error:
            fail(str(error))
    try:
        verify_checkpoint(checkpoint)
        storage.check_writable_folder(out)
        generator = Generator.from_uri(checkpoint, dtype=dtype)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    adapter_id = adapter_id or content_id(description, generator.checkpoint.sha256)
    (files,) = generator.render([description], [adapter_id])
    target = storage.join(out, adapter_id)
    adapters.write_adapter(target, files)
    typer.echo(f"wrote adapter {adapter_id} ({files.weights_bytes:,} weight bytes) to {target}")


def validate_adapter(
    path: str = typer.Argument(..., help="Adapter folder (path or URI).", callback=local()),
    max_lora_rank: Optional[int] = typer.Option(None, "--max-lora-rank", help="Largest rank the server accepts."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Check shapes against this base model.",
                                             callback=local(NAME_OR_PATH)),
    as_json: bool = typer.Option(False, "--json"),
):
    """Check an adapter folder against the contract; exit 0 only when valid."""
    from t2l_ray.adapters import validate_adapter as run_validation

    try:
        report = run_validation(path, max_rank=max_lora_rank, base_model=base_model)
    except ValueError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    elif report.ok:
        typer.echo(f"valid: {path} (rank {report.rank}, {report.num_layers} layers, modules {sorted(report.modules)})")
    else:
        typer.echo(f"invalid: {path}", err=True)
        for error in report.errors:
            typer.echo(f"  - {error}", err=True)
    if not report.ok:
        raise typer.Exit(1)


def compare_adapters(
    paths: list[str] = typer.Argument(..., help="Adapter folders, or folders of adapter folders (a factory's OUT)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (norms, distances, cosines)."),
):
    """How different adapters are: each one's |delta-W| and the pairwise relative distances of their delta-W."""
    from t2l_ray.compare import adapter_folders, compare

    try:
        comparison = compare(adapter_folders([local_path(p) for p in paths]))
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(json.dumps(comparison.to_dict()) if as_json else comparison.table())
