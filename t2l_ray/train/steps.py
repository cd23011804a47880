"""The optimizer-step loop every training engine here runs, and the metrics window beside it.

`run_steps` is the inner loop of hypernet training (SFT and reconstruction, through `loop.py`) and of the LoRA
baselines (`baselines.py`): each optimizer step takes `grad_accum` micro-batches, each a forward, a backward
and `engine.step()` (DeepSpeed applies the update on the last of them). The steps are counted here, not
asked of DeepSpeed: `engine.is_gradient_accumulation_boundary()` tells whether the *next* micro-step ends
an accumulation, so read after `engine.step()` it is off by one micro-step whenever `grad_accum` > 1.

Logged values are summed on the device between log steps (`LogWindow`) and read once per log step.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


def mean_across_workers(values, device: torch.device | None = None) -> torch.Tensor:
    """The mean of each value over all workers, as a float64 tensor on this worker's device.

    The tensor is built and reduced on `device`, by default Ray Train's device for this worker
    (`ray.train.torch.get_device()`, cuda:N on GPU workers): nccl reduces CUDA tensors only and refuses others
    ("No backend type associated with device type cpu"). Code outside a Ray Train worker (the oracle LoRA
    jobs) passes its own. `values` may be numbers or device tensors, so nothing waits for the device until the
    caller reads the result, once per log step. Outside a process group the values come back as they are.
    """
    import torch.distributed as dist

    if device is None:
        import ray.train.torch

        device = ray.train.torch.get_device()
    tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


class LogWindow:
    """Sums of per-micro-step values between two log steps, kept as device tensors.

    Reading a loss on the host (`float(loss)`) waits for the GPU; doing it every step stalls the pipeline.
    The sums are read once per log step instead, averaged over the workers in one collective.
    """

    def __init__(self, device: torch.device | None = None):
        self.device = device  # None: Ray Train's device for this worker (see mean_across_workers)
        self.sums: dict[str, torch.Tensor | float] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, **values) -> None:
        """One micro-step's values: tensors (detached here) or numbers."""
        for name, value in values.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1

    def mean_sums(self) -> dict[str, float]:
        """Each value's sum over this window, averaged over the workers (divide by `steps` for a per-step mean),
        in the order the values were first added. A collective: every worker must call it."""
        names = sorted(self.sums)  # the same order on every worker
        reduced = dict(zip(names, mean_across_workers([self.sums[n] for n in names], self.device).tolist()))
        return {name: reduced[name] for name in self.sums}

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def is_log_step(step: int, every: int, last: int) -> bool:
    """Steps are logged at the first, every `every`-th and the last."""
    return step == 1 or step % every == 0 or step == last


def keyed_batches(make: Callable[[int, int], T], start: int, grad_accum: int) -> Generator[T, None, None]:
    """`make(step, micro)` for the micro-batches of steps `start`, `start + 1`, ... (a step is numbered by the
    steps done before it): batches that are a pure function of their place in the run, so a resumed run draws
    the very batches the uninterrupted one would have."""
    for step in itertools.count(start):
        for micro in range(grad_accum):
            yield make(step, micro)


def run_steps(engine, micro_batches: Iterator, loss_of: Callable, *, start: int, stop: int, grad_accum: int,
              log_every: int, log: Callable[[int, LogWindow], None],
              after_step: Callable[[int], None] | None = None, device: torch.device | None = None) -> None:
    """Optimizer steps `start + 1` to `stop` of `engine` (a DeepSpeed engine).

    Each step takes `grad_accum` micro-batches from `micro_batches`; `loss_of(batch)` returns the loss and the
    other values to log (a dict: tensors or numbers), summed with the loss into the log window. On log steps
    (`is_log_step`) `log(step, window)` reads the window, which then starts again (so the time `after_step`
    takes, a checkpoint for instance, counts in the next window); `after_step(step)` follows every step.
    """
    window = LogWindow(device)
    for step in range(start + 1, stop + 1):
        for _ in range(grad_accum):
            batch = next(micro_batches)
            engine.train()
            loss, values = loss_of(batch)
            engine.backward(loss)
            engine.step()
            window.add(loss=loss, **values)
        if is_log_step(step, log_every, stop):
            log(step, window)
            window = LogWindow(device)
        if after_step is not None:
            after_step(step)
