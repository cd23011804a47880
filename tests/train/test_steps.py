"""The optimizer-step loop of every training engine and its metrics window (fast, no Ray cluster)."""

import pytest
import torch
from ports import free_port

from t2l_ray.config import load_config
from t2l_ray.train.config import TrainConfig
from t2l_ray.train.steps import LogWindow, is_log_step, keyed_batches, mean_across_workers, run_steps


@pytest.fixture
def cuda_only_group(monkeypatch):
    """A real one-process torch.distributed group that, like nccl, reduces no CPU tensor ("cuda:gloo": gloo
    registered for CUDA only), on a worker whose device (Ray Train's `get_device()`) is `meta`: meta tensors
    pass the collective without a GPU, CPU tensors are refused with nccl's own message."""
    import ray.train.torch
    import torch.distributed as dist

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("meta"))
    dist.init_process_group("cuda:gloo")
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def test_metrics_are_averaged_on_the_worker_device_as_nccl_requires(cuda_only_group):
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        cuda_only_group.all_reduce(torch.ones(2))  # the group refuses CPU tensors, as nccl does
    try:
        reduced = mean_across_workers([7.5, 3.0])
    except RuntimeError as error:
        pytest.fail(f"mean_across_workers handed torch.distributed a tensor on the CPU, not on the worker's device; "
                    f"nccl (like this CUDA-only group) refuses it: {error}")
    assert reduced.device.type == "meta" and reduced.shape == (2,)


def test_a_log_window_averages_device_sums_over_steps():
    """Outside a process group the sums come back as they are; numbers and tensors mix."""
    window = LogWindow(torch.device("cpu"))
    window.add(loss=torch.tensor(2.0, requires_grad=True) * 1, tokens=torch.tensor([3, 4]).sum(), samples=8)
    window.add(loss=torch.tensor(4.0), tokens=torch.tensor(5), samples=8)
    assert window.steps == 2 and window.mean_sums() == {"loss": 6.0, "samples": 16.0, "tokens": 12.0}


def test_log_steps_and_keyed_batches():
    assert [s for s in range(1, 11) if is_log_step(s, 4, 10)] == [1, 4, 8, 10]
    batches = keyed_batches(lambda step, micro: (step, micro), 5, 2)
    assert [next(batches) for _ in range(5)] == [(5, 0), (5, 1), (6, 0), (6, 1), (7, 0)]  # a resume at step 5


@pytest.fixture
def single_process_group(monkeypatch):
    """The one-process gloo group a DeepSpeed engine needs outside Ray Train (as the oracle LoRA jobs run)."""
    import deepspeed
    import torch.distributed as dist

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_step_is_grad_accum_micro_batches_and_one_update_of_a_real_engine(single_process_group):
    """DeepSpeed updates once per `grad_accum` micro-batches; the loop's steps must be those updates, logged with
    the window of exactly their micro-batches (asking the engine for the boundary after `step()` is one off)."""
    from t2l_ray.train.engine import build_engine

    cfg = load_config(TrainConfig, None, ["optim.grad_accum=3", "optim.max_steps=5", "optim.warmup_steps=1",
                                          "optim.lr=0.1", "data.tasks_per_batch=2"])
    torch.manual_seed(0)
    engine, _, _ = build_engine(torch.nn.Linear(4, 1), cfg)
    taken, logged, updates = [], [], []
    inputs = (torch.full((2, 4), float(i)) for i in range(100))

    def loss_of(batch):
        taken.append(batch)
        return engine(batch).pow(2).mean(), {"samples": batch.shape[0]}

    def log(step, window):
        logged.append((step, window.steps, window.mean_sums()["samples"]))

    def after_step(step):
        updates.append((step, engine.global_steps))

    run_steps(engine, inputs, loss_of, start=1, stop=5, grad_accum=3, log_every=2, log=log, after_step=after_step,
              device=torch.device("cpu"))
    assert updates == [(2, 1), (3, 2), (4, 3), (5, 4)]  # steps 2-5 of a run resumed after step 1: one update each
    assert len(taken) == 12 and float(taken[-1][0, 0]) == 11
    assert logged == [(2, 3, 6.0), (4, 6, 12.0), (5, 3, 6.0)]
    engine.destroy()
