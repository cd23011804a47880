"""bench/gpu_check.sh on a machine without CUDA: one clear line and exit 2, before anything runs."""

import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the whole check")
def test_the_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "gpu_check: torch sees no CUDA device; this check needs one NVIDIA GPU (--device cpu checks the script "
        "itself at toy sizes)"]
    assert not done.stdout and not (tmp_path / "work").exists()
