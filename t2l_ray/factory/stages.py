"""The factory's stages: the same objects on Ray Data actor pools or, for small jobs, in this process.

- `EmbedStage`: descriptions -> task embeddings, with the encoder the checkpoint was trained with.
- `GenerateStage`: embeddings -> `render.Renderer` (batched forwards, bf16 where the device has it, scale
  folded and cast on the device, one copy per forward chunk into a reused host buffer) -> `AdapterWriter`
  (hash and write from slices of that buffer on a thread pool, a chunk's adapters while the next chunk is
  generated) -> one result row per adapter.
`ray_pipeline` chains them on Ray Data; `run_in_process` calls them batch by batch here: the same stages on
the same batches write the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

from t2l_ray import adapters, storage
from t2l_ray.checkpoint import load_checkpoint
from t2l_ray.encoders import load_encoder
from t2l_ray.factory.config import FactoryConfig
from t2l_ray.factory.plan import Request
from t2l_ray.factory.writer import AdapterWriter
from t2l_ray.render import Renderer


def _device(num_gpus: float) -> str:
    return "cuda" if num_gpus > 0 else "cpu"


class EmbedStage:
    """Holds the encoder the checkpoint was trained with; adds an `embedding` column."""

    def __init__(self, encoder: str, encoder_dim: int, num_gpus: float):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per actor start would break the driver's bar
        self.encoder = load_encoder(encoder, device=_device(num_gpus))
        if self.encoder.dim != encoder_dim:
            raise ValueError(
                f"encoder {encoder} gives {self.encoder.dim}-dim embeddings; the hypernet expects {encoder_dim}"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["embedding"] = self.encoder.encode([str(text) for text in batch["description"]]).numpy()
        return batch


class GenerateStage:
    """Holds the hypernet (as a Renderer) and a writer pool; one forward and one host copy per batch."""

    def __init__(self, checkpoint: str, checkpoint_sha: str, dtype: str, forward_dtype: str, num_gpus: float,
                 write_threads: int):
        loaded = load_checkpoint(checkpoint, device=_device(num_gpus))
        if loaded.sha256 != checkpoint_sha:
            raise ValueError(
                f"{checkpoint} changed while the factory ran (sha256 {loaded.sha256}, expected {checkpoint_sha})"
            )
        model = loaded.model
        self.renderer = Renderer(model, dtype, forward_dtype)
        self.writer = AdapterWriter(
            self.renderer.layout, threads=write_threads, checkpoint_sha256=loaded.sha256, encoder=loaded.encoder,
            scale=self.renderer.scale, dtype=dtype,
            config=adapters.config_bytes(model.shapes, model.config.rank, [m.name for m in model.modules_]),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        futures = []
        try:
            for first, rows in self.renderer.chunks(torch.from_numpy(np.asarray(batch["embedding"], np.float32))):
                futures += self.writer.submit(rows, batch, first)  # written while the next chunk is generated
        finally:
            wait(futures)  # the host buffer is reused by the next batch: no write may still read it
        return self.writer.results(futures)


def stage_items(todo: list[tuple[Request, str]], out: str, shown_out: str) -> list[dict]:
    """One input row per adapter to make: `uri` absolute (it crosses to Ray tasks), `shown` as given."""
    return [
        {"line": r.line, "source": r.source, "id": i, "description": r.description,
         "metadata": json.dumps(r.metadata) if r.metadata is not None else "",
         "uri": storage.join(out, i), "shown": storage.join(shown_out, i)}
        for r, i in todo
    ]


def _stage_args(checkpoint: str, checkpoint_config: dict, config: FactoryConfig) -> tuple[dict, dict]:
    embed = {"encoder": checkpoint_config["encoder"], "encoder_dim": int(checkpoint_config["encoder_dim"]),
             "num_gpus": config.num_gpus}
    generate = {"checkpoint": checkpoint, "checkpoint_sha": checkpoint_config["weights_sha256"], "dtype": config.dtype,
                "forward_dtype": config.forward_dtype, "num_gpus": config.num_gpus,
                "write_threads": config.write_threads}
    return embed, generate


def in_process_stages(checkpoint: str, checkpoint_config: dict, config: FactoryConfig):
    """Both stages built here (loading the encoder and the checkpoint) and a runner over the items that embeds
    the next batch on a thread while the current one is generated and written, as the Ray actors overlap."""
    embed_args, generate_args = _stage_args(checkpoint, checkpoint_config, config)
    embed, generate = EmbedStage(**embed_args), GenerateStage(**generate_args)

    def batch(chunk: list[dict]) -> dict[str, np.ndarray]:
        return embed({key: np.array([item[key] for item in chunk]) for key in chunk[0]})

    def run(items: list[dict]) -> Iterator[dict]:
        chunks = [items[start:start + config.batch_size] for start in range(0, len(items), config.batch_size)]
        previous = torch.get_num_threads()
        if config.num_gpus == 0:  # leave the writer threads a core: torch's spinning threads would starve them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="t2l-embed") as encoder:  # embeds batch k+1 meanwhile
                embedded = encoder.submit(batch, chunks[0])
                for index, chunk in enumerate(chunks):
                    ready = embedded.result()
                    if index + 1 < len(chunks):
                        embedded = encoder.submit(batch, chunks[index + 1])
                    results = generate(ready)
                    yield from ({key: values[i] for key, values in results.items()} for i in range(len(chunk)))
        finally:
            torch.set_num_threads(previous)

    return run


def ray_pipeline(items: list[dict], checkpoint: str, checkpoint_config: dict, config: FactoryConfig):
    """The stages as Ray Data actor pools; iterate the returned dataset's rows for the results."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws one bar for the whole run
    embed_args, generate_args = _stage_args(checkpoint, checkpoint_config, config)
    actor = {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus or None, "resources": config.resources or None,
             "batch_size": config.batch_size, "batch_format": "numpy",
             "compute": ray.data.ActorPoolStrategy(size=config.concurrency)}
    blocks = min(len(items), max(1, -(-len(items) // config.batch_size)))
    return (
        ray.data.from_items(items, override_num_blocks=blocks)
        .map_batches(EmbedStage, fn_constructor_kwargs=embed_args, **actor)
        .map_batches(GenerateStage, fn_constructor_kwargs=generate_args, **actor)
    )
