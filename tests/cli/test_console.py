"""The console: a command's own lines on the terminal, framework output in its log file (cli/console.py)."""

import io
import subprocess
import sys
import textwrap

from console_check import framework_records

from t2l_ray.cli import console as console_module
from t2l_ray.cli.console import Progress

# Lines of `make demo`'s console before the log file existed (2026-11-30), one of each kind.
FRAMEWORK_LINES = [
    "2026-12-01 00:04:26,116\tINFO worker.py:2038 -- Started a local Ray instance.",
    "[2026-12-01 00:04:27,677 E 1196 1196] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches(EncodeActor))'",
    "\x1b[36m(TrainController pid=1697)\x1b[0m Requesting resources: {'CPU': 0.5} * 2",
    "\x1b[36m(MapWorker(ReadBinary->FlatMap(<lambda>)->MapBatches(AttachDescription)) pid=2486)\x1b[0m Failed to convert",
    "\x1b[36m(RayTrainWorker pid=1818)\x1b[0m [2026-12-01 00:05:25,454] [WARNING] [lr_schedules.py:759:get_lr] Attempting",
    "\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node",
    "/x/torch/distributed/c10d_logger.py:83: FutureWarning: `torch.distributed.all_gather_into_tensor` is deprecated.",
    "  return func(*args, **kwargs)",
    "2026-12-01 00:06:23,072\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set `ray.data...`",
    "[2026-12-01 00:05:25,454] [WARNING] [lr_schedules.py:759:get_lr] Attempting to get learning rate",
    "Loading weights: 100%|██████████| 103/103 [00:00<00:00, 24697.77it/s]",
]
OWN_LINES = [
    "train: sft, 2 workers, ZeRO-2, 60 steps -> /home/ada/t2l-ray/demo_out/run",
    "train: 0/60 steps (0%), starting (10 s)",
    "data: 29 tasks, 1,160 instances, 88,461 tokens (82,222 prompt + 6,239 response); embeddings 145 computed, 0 cached",
    "step  5/60  loss 7.6455  lm_loss 7.6455  lr 8.00e-04  samples/s 70.1",
    "warning: train: no node offers train_gpu yet; the work waits until the autoscaler adds one",
    "  manifest   /home/ada/t2l-ray/demo_out/adapters/_manifest/run-20261201T001413.174103Z-9790d51f-0000.jsonl",
    "error: training stopped on a code error, rank 1: ValueError: bad recipe",
    "valid: /home/ada/t2l-ray/demo_out/adapters/reverse-words (rank 8, 2 layers, modules ['q_proj', 'v_proj'])",
]


def test_the_checker_knows_framework_records_from_a_commands_own_lines():
    assert [number for number, _, _ in framework_records("\n".join(FRAMEWORK_LINES))] == list(
        range(1, len(FRAMEWORK_LINES) + 1))
    assert framework_records("\n".join(OWN_LINES)) == []


SCRIPT = textwrap.dedent("""
    import logging, os, sys, typer, warnings
    from t2l_ray.cli.console import capture
    try:
      with capture(sys.argv[1]) as console:
        console.echo("own line")
        print("a framework's print")
        os.write(2, b"[2026-12-01 00:00:00,000 E 1 1] core_worker.cc:1: a C++ line\\n")
        logging.getLogger("ray").warning("a ray record")
        warnings.warn("a deprecation", FutureWarning)
        logging.getLogger("t2l_ray").warning("no node offers gen_gpu")
        if len(sys.argv) > 2:
            raise RuntimeError("an unexpected bug")
    except typer.Exit as exit:  # what typer does with it at the end of a command
        sys.exit(exit.exit_code)
    print("after the command")
""")


def run_script(tmp_path, *args):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "logs"), *args], capture_output=True,
                          text=True, timeout=120)


def test_framework_output_goes_to_the_log_file_and_the_commands_own_to_the_terminal(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["own line", "after the command"]
    assert done.stderr.splitlines() == ["warning: no node offers gen_gpu"]
    log = (tmp_path / "logs" / "t2l-ray.log").read_text()
    for text in ("a framework's print", "core_worker.cc:1: a C++ line", "a ray record", "FutureWarning: a deprecation"):
        assert text in log
    assert "own line" not in log


def test_an_unexpected_error_is_one_line_naming_the_log_with_its_traceback(tmp_path):
    done = run_script(tmp_path, "fail")
    log = tmp_path / "logs" / "t2l-ray.log"
    assert done.returncode == 1 and done.stdout.splitlines() == ["own line"]
    assert done.stderr.splitlines()[-1] == f"error: RuntimeError: an unexpected bug (traceback in {log})"
    assert "Traceback (most recent call last)" in log.read_text() and "Traceback" not in done.stderr


def test_plain_progress_counts_its_rate_from_the_first_item(monkeypatch):
    """Start-up is not progress: 100 s before the first item must not make the ETA hours long."""
    now = [1000.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = Progress(out, "batch-generate", "line", total=110, tty=False)
    bar.skip(5)  # lines settled before any work (adapters already there): no clock yet
    now[0] += 100
    bar.update(1)  # the first adapter starts the clock
    now[0] += 10
    bar.update(20)
    assert bar.status() == "batch-generate: 26/110 lines (24%), 2.00 lines/s, eta 42 s"
    bar.close()


def test_plain_progress_says_it_is_starting_until_the_first_item(monkeypatch):
    now = [50.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: now[0])
    bar = Progress(io.StringIO(), "train", "step", total=60, tty=False)
    now[0] += 31
    assert bar.status() == "train: 0/60 steps (0%), starting (31 s)"
    bar.set(5, loss="7.1")
    assert bar.status() == "train: 5/60 steps (8%), starting (31 s), loss 7.1"
    bar.close()


def test_plain_progress_prints_a_status_line_only_after_a_quiet_spell(monkeypatch):
    """A line every PLAIN_EVERY_S seconds without other output, twice as long after one that shows no progress."""
    now = [0.0]
    monkeypatch.setattr(console_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = Progress(out, "eval", "cell", total=4, tty=False)
    bar.stop.set()  # the test drives the heartbeat's checks itself
    ticks = []
    for second in range(1, 61):
        now[0] = float(second)
        if second == 5:
            bar.write("eval: 2 rows x 2 tasks = 4 cells")  # the command's own line resets the quiet spell
        if second == 40:
            bar.update(1)
        before = out.getvalue().count("\n")
        bar.beat()
        if out.getvalue().count("\n") > before:
            ticks.append(second)
    # 10 s after the command's line; 10 s later a line showing no progress since, so the next wait is 20 s;
    # that one shows progress, so 10 s again
    assert ticks == [15, 25, 45, 55]
    assert out.getvalue().splitlines()[0] == "eval: 2 rows x 2 tasks = 4 cells"
