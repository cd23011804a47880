"""Pieces shared by `train` and `train-lora`: metrics across workers (fast, no Ray cluster)."""

import pytest
import torch
from ports import free_port

from t2l_ray.train.common import mean_across_workers


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
    from t2l_ray.train.common import LogWindow

    window = LogWindow(torch.device("cpu"))
    window.add(loss=torch.tensor(2.0, requires_grad=True) * 1, tokens=torch.tensor([3, 4]).sum(), samples=8)
    window.add(loss=torch.tensor(4.0), tokens=torch.tensor(5), samples=8)
    assert window.steps == 2 and window.mean_sums() == {"loss": 6.0, "samples": 16.0, "tokens": 12.0}
