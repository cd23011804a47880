"""Two Ray nodes on one machine (tests/fixtures_multinode.py), driven the way a cloud cluster is: `ray start` and
`ray job submit`. The demo training asks for one `t2l_slot` per Ray Train worker; each node has one, so its two
workers land on different nodes.

1. The demo training and a batch-generate of jobs/examples/descriptions.jsonl through `ray job submit`
   (`--runtime-env jobs/runtime_env_cpu.yaml`: the checkout as working_dir); Ray's state API says which
   node each train worker ran on, and the workers' own pid files agree. The batch-generate asks for
   `resources.worker_node` (as cluster jobs ask for `gen_gpu`) and all its actors land on the worker node.
2. Preemption: the worker node is SIGKILLed (raylet, agents, workers, all at once) in the middle of a
   1,000-line batch-generate (once it has done generation work) and in the middle of a training run.
   Generation finishes on the head (Ray Data restarts the lost actors and retries their batches), or a
   rerun completes it, with every adapter written once; training is retried by Ray Train's
   FailureConfig, resumes from its last checkpoint when a worker node comes back, and its metrics
   continue from there instead of starting again at step 1. The kill waits for a checkpoint the Train
   controller has registered (`checkpoint_manager_snapshot.json`): one the workers wrote but the controller
   had not yet collected (it polls every 2 s) dies with the node, and the retry would start from step 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fixtures_multinode import ROOT, TERMINAL, LocalCluster

from t2l_ray import adapters, manifest
from t2l_ray.train.plot import read_metrics

pytestmark = pytest.mark.slow

GEN_LINES = 1000  # long enough that the worker node's actors finish starting and take work before the kill
# The demo recipe made short; one `t2l_slot` per train worker puts the two workers on different nodes.
TRAIN_SETS = ["run.num_workers=2", "run.log_every=1", "run.resources_per_worker={t2l_slot: 1}"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("multinode")


def train_command(run_dir: Path, *sets: str) -> list[str]:
    args = ["t2l-ray", "train", "--config", "jobs/demo_cpu.yaml", "--output-dir", str(run_dir)]
    for value in [*TRAIN_SETS, *sets]:
        args += ["--set", value]
    return args


def rank_pids(run_dir: Path) -> dict[int, int]:
    return {int(p.stem.removeprefix("rank")): int(p.read_text()) for p in (run_dir / "_workers").glob("rank*.pid")}


def complete_adapters(out: Path) -> set[str]:
    if not out.is_dir():
        return set()
    return {p.name for p in out.iterdir() if p.name != manifest.MANIFEST_DIR and adapters.is_complete(str(p))}


@pytest.fixture(scope="module")
def trained(two_nodes, work):
    """The demo training through `ray job submit`: 6 steps, two workers, one per node -> (run folder, job id)."""
    run_dir = work / "train"
    started = time.monotonic()
    job = two_nodes.submit("mn-train", *train_command(run_dir, "optim.max_steps=6", "run.checkpoint_every=3"))
    status = two_nodes.wait_job(job, 900)
    assert status == "SUCCEEDED", two_nodes.logs(job)[-6000:]
    print(f"training job: {time.monotonic() - started:.0f}s")
    return run_dir, job


def test_training_and_generation_run_on_both_nodes(two_nodes, trained, work):
    from t2l_ray.checkpoint import read_checkpoint_config

    run_dir, job = trained
    head, worker = two_nodes.node_id("head"), two_nodes.node_id(two_nodes.workers[-1].name)
    assert [r["step"] for r in read_metrics(str(run_dir))] == [1, 2, 3, 4, 5, 6]
    assert read_checkpoint_config(str(run_dir / "hypernet"))["encoder"] == "all-minilm-l6-v2"
    assert json.loads((run_dir / "hypernet" / "hypernet.json").read_text())["step"] == 6

    # Where did the workers run? Ray's record of each train worker actor (node id, pid) against the pid each
    # rank wrote from inside its own process.
    node_of = {a.pid: a.node_id for a in two_nodes.actors(job, "RayTrainWorker")}
    pids = rank_pids(run_dir)
    assert sorted(pids) == [0, 1] and all(pid in node_of for pid in pids.values()), (pids, node_of)
    assert {node_of[pid] for pid in pids.values()} == {head, worker}

    # Generation steered by a custom resource, as the cluster configs' gen_gpu: only the worker node offers
    # `worker_node`, so every encoder and hypernet actor must run there.
    out = work / "adapters"
    started = time.monotonic()
    job = two_nodes.submit("mn-gen", "t2l-ray", "batch-generate", "jobs/examples/descriptions.jsonl",
                         "--checkpoint", str(run_dir / "hypernet"), "--out", str(out), "--concurrency", "2",
                         "--set", "resources.worker_node=0.25")
    status = two_nodes.wait_job(job, 600)
    assert status == "SUCCEEDED", two_nodes.logs(job)[-6000:]
    print(f"batch-generate job (22 lines): {time.monotonic() - started:.0f}s")
    lines = [json.loads(line) for line in (ROOT / "jobs/examples/descriptions.jsonl").read_text().splitlines()]
    assert complete_adapters(out) == {line["id"] for line in lines}
    rows = manifest.latest_by_line(str(out))
    assert sorted(rows) == list(range(1, len(lines) + 1)) and {r["status"] for r in rows.values()} == {"written"}
    # An actor Ray Data asked for but never placed (the job ended first) has no node; it ran nowhere.
    placed = [(a.class_name, a.node_id) for a in two_nodes.actors(job) if a.class_name.startswith("MapWorker")
              and a.node_id]
    stages = {name for name, _ in placed}
    assert any("EmbedStage" in s for s in stages) and any("GenerateStage" in s for s in stages), placed
    assert {node for _, node in placed} == {worker}, (placed, worker)


def write_descriptions(path: Path, count: int) -> list[str]:
    topics = ["invoices", "support tickets", "product reviews", "legal clauses", "recipes", "bug reports",
              "sports results", "medical notes", "poems", "SQL schemas"]
    ids = []
    with open(path, "w") as sink:
        for i in range(count):
            ids.append(f"mn-{i:04d}")
            text = f"Task {i}: read {topics[i % len(topics)]} and answer variant {i // len(topics)} in one short line."
            sink.write(json.dumps({"id": ids[-1], "description": text}) + "\n")
    return ids


def finished_tasks_on(two_nodes: LocalCluster, job: str, node_id: str) -> int:
    """Actor tasks of a job that finished on a node (Ray Data's map batches run as actor tasks)."""
    from ray.util.state import list_tasks

    job_id = two_nodes.job_id(job)
    if job_id is None:
        return 0
    tasks = list_tasks(address=two_nodes.dashboard, limit=10_000, filters=[
        ("job_id", "=", job_id), ("node_id", "=", node_id), ("state", "=", "FINISHED"), ("type", "=", "ACTOR_TASK")])
    return sum(1 for t in tasks if t.name.startswith("MapWorker(") and t.name.endswith(".submit"))


def test_generation_survives_losing_the_worker_node(two_nodes, trained, work):
    run_dir, _ = trained
    source, out = work / "many.jsonl", work / "many"
    ids = write_descriptions(source, GEN_LINES)
    command = ["t2l-ray", "batch-generate", str(source), "--checkpoint", str(run_dir / "hypernet"), "--out", str(out),
               "--concurrency", "2", "--batch-size", "2"]
    victim_id = two_nodes.ensure_worker()
    victim = two_nodes.workers[-1]
    started = time.monotonic()
    job = two_nodes.submit("mn-gen-preempt", *command)

    def working_on_victim() -> bool:
        status = two_nodes.status(job)
        assert status not in TERMINAL, f"the job ended ({status}) before the worker node took part:\n{two_nodes.logs(job)[-3000:]}"
        return len(complete_adapters(out)) >= 10 and finished_tasks_on(two_nodes, job, victim_id) > 0

    two_nodes.wait_for(working_on_victim, 600, "no generation work on the worker node")
    before = len(complete_adapters(out))
    victim.kill()
    killed_at = time.monotonic()
    print(f"killed {victim.name} {killed_at - started:.0f}s after submit, {before}/{GEN_LINES} adapters written")
    two_nodes.wait_for(lambda: victim_id not in two_nodes.alive_roles(), 120, "the GCS did not mark the node dead")
    print(f"node marked dead after {time.monotonic() - killed_at:.0f}s")

    status = two_nodes.wait_job(job, 900)
    print(f"job {status} {time.monotonic() - killed_at:.0f}s after the kill")
    runs = 1
    if status != "SUCCEEDED":
        # The contract when a run does not survive: a rerun finishes it, skipping what is already written.
        print(f"first run {status}; its log ends with:\n{two_nodes.logs(job)[-2000:]}")
        rerun = two_nodes.submit("mn-gen-rerun", *command)
        status = two_nodes.wait_job(rerun, 900)
        assert status == "SUCCEEDED", two_nodes.logs(rerun)[-6000:]
        runs = 2

    # one folder per line, beside the manifest and the command's log
    assert sorted(p.name for p in out.iterdir()) == sorted([*ids, manifest.MANIFEST_DIR, "_logs"])
    assert complete_adapters(out) == set(ids)
    rows = manifest.latest_by_line(str(out))
    assert sorted(rows) == list(range(1, GEN_LINES + 1))
    assert all(rows[i + 1]["status"] in ("written", "skipped") and rows[i + 1]["id"] == ids[i] for i in range(GEN_LINES))
    per_file = [[json.loads(t)["line"] for t in Path(f).read_text().splitlines()] for f in manifest.manifest_files(str(out))]
    assert len(per_file) == runs and all(len(lines) == len(set(lines)) for lines in per_file), "a line recorded twice"


def registered_step(run_dir: Path) -> int:
    """The step of the latest checkpoint in Ray Train's own record (written after the controller registers it)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    latest = snapshot.get("latest_checkpoint_result") or {}
    return int((latest.get("metrics") or {}).get("step", 0))


def test_training_resumes_when_the_worker_node_returns(two_nodes, work):
    run_dir = work / "train-preempt"
    max_steps, every = 80, 5
    victim_id = two_nodes.ensure_worker()
    victim = two_nodes.workers[-1]
    started = time.monotonic()
    job = two_nodes.submit("mn-train-preempt", *train_command(
        run_dir, f"optim.max_steps={max_steps}", f"run.checkpoint_every={every}", "run.max_failures=3"))

    def checkpointed() -> bool:
        """A checkpoint the controller has registered: one that workers merely wrote is lost with them."""
        status = two_nodes.status(job)
        assert status not in TERMINAL, f"the job ended ({status}) before the node could be lost:\n{two_nodes.logs(job)[-3000:]}"
        return registered_step(run_dir) >= every

    two_nodes.wait_for(checkpointed, 900, "no checkpoint")
    first_pids = rank_pids(run_dir)
    victim.kill()
    killed_at, kill_clock = time.monotonic(), time.time()
    step_at_kill, registered = read_metrics(str(run_dir))[-1]["step"], registered_step(run_dir)
    assert step_at_kill < max_steps
    print(f"killed {victim.name} {killed_at - started:.0f}s after submit, at step {step_at_kill}/{max_steps} "
          f"(latest registered checkpoint: step {registered})")
    two_nodes.wait_for(lambda: victim_id not in two_nodes.alive_roles(), 120, "the GCS did not mark the node dead")
    print(f"node marked dead after {time.monotonic() - killed_at:.0f}s")
    assert two_nodes.status(job) not in TERMINAL, two_nodes.logs(job)[-4000:]

    two_nodes.add_worker()  # the replacement VM: Ray Train's FailureConfig restarts the group once both slots exist
    new_worker = two_nodes.node_id(two_nodes.workers[-1].name)
    print(f"replacement node up {time.monotonic() - killed_at:.0f}s after the kill")
    status = two_nodes.wait_job(job, 900)
    assert status == "SUCCEEDED", two_nodes.logs(job)[-6000:]
    print(f"training finished {time.monotonic() - killed_at:.0f}s after the kill")

    rows = read_metrics(str(run_dir))
    assert [r["step"] for r in rows] == list(range(1, max_steps + 1))  # each step once: no gap, no repeat
    before = [r for r in rows if r["time"] < kill_clock]
    after = [r for r in rows if r["time"] >= kill_clock]
    assert before and after and before[0]["step"] == 1, "the run started again from step 1"
    resumed_from = after[0]["step"] - 1
    assert registered <= resumed_from <= step_at_kill and resumed_from % every == 0, (resumed_from, registered, step_at_kill)
    marked = [r["resumed_from"] for r in rows if "resumed_from" in r]  # the loop marks the first row after a resume
    assert marked in ([], [resumed_from]), marked
    print(f"resumed after the step-{resumed_from} checkpoint (killed at step {step_at_kill})")
    assert json.loads((run_dir / "hypernet" / "hypernet.json").read_text())["step"] == max_steps

    new_pids = rank_pids(run_dir)
    assert set(new_pids.values()).isdisjoint(first_pids.values())  # a new worker group wrote them
    node_of = {a.pid: a.node_id for a in two_nodes.actors(job, "RayTrainWorker")}
    assert {node_of[pid] for pid in first_pids.values()} == {two_nodes.node_id("head"), victim_id}
    assert {node_of[pid] for pid in new_pids.values()} == {two_nodes.node_id("head"), new_worker}
