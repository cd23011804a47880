"""Two Ray nodes on one machine, driven the way a cloud cluster is: `ray start` and `ray job submit`.

A head (`ray start --head`, custom resource `head_node`) and a worker node (`ray start --address`,
custom resource `worker_node`) each advertise one `t2l_slot`; the demo training asks for one slot per
Ray Train worker, so its two workers must land on different nodes. Every node runs in its own session
(`ray start --block`) with its own `--temp-dir`, so the test can kill exactly that node's processes (a
preempted VM) and never touches other Ray clusters on the machine. No `ray stop` anywhere.

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

Minimal `ray start` set for `ray job submit` on a shared machine: a dashboard on a free port (the job
API lives in the dashboard), `--dashboard-agent-listen-port=0` (the agent's default 52365 may belong to
another cluster; the dashboard finds each agent's real port by node id), a free GCS and Ray Client port.
Ray 2.60 replaces `--node-ip-address=127.0.0.1` by the machine's address; both nodes then share one IP,
which is why the checks below go by node id, not IP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
from ports import free_port

from t2l_ray import adapters, manifest
from t2l_ray.train.plot import read_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNTIME_ENV = "jobs/runtime_env_cpu.yaml"
NODE_CPUS = 2  # logical CPUs per node (the machine has 2 cores in all): room for the train and Ray Data actors
SLOT = {"t2l_slot": 1}
GEN_LINES = 1000  # long enough that the worker node's actors finish starting and take work before the kill
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

# The demo recipe made short; one `t2l_slot` per train worker puts the two workers on different nodes.
TRAIN_SETS = ["run.num_workers=2", "run.log_every=1", "run.resources_per_worker={t2l_slot: 1}"]


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # job entrypoints find `t2l-ray` on the node's PATH
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # tests/conftest.py turns this off to keep single-node clusters on loopback; `ray start --address`
        # refuses to join a second node without it.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        # The GCS declares a silent node dead after period x threshold (defaults: about 15 s or more).
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "5",
    })
    return env


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:  # gone already
            pass


class Node:
    """One `ray start --block` session: its raylet, agents and workers, and nothing else."""

    def __init__(self, name: str, temp_dir: Path, args: list[str], resources: dict):
        self.name, self.temp_dir = name, temp_dir
        temp_dir.mkdir(parents=True)
        self.log = temp_dir.parent / f"{name}.log"
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
                 "--dashboard-agent-listen-port=0", f"--num-cpus={NODE_CPUS}", "--object-store-memory=200000000",
                 f"--resources={json.dumps(resources)}", *args],
                cwd=ROOT, env=node_env(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def processes(self) -> list[psutil.Process]:
        """`ray start`, its descendants, and any process naming this node's temp dir (re-parented workers)."""
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                found[p.pid] = p
        except psutil.NoSuchProcess:
            pass
        marker = f"{self.temp_dir}/"
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in arg or arg.endswith(str(self.temp_dir)) for arg in p.info["cmdline"] or ()):
                    found[p.pid] = p
                    for child in p.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def kill(self) -> None:
        """A preempted VM: every process of the node gets SIGKILL at once, no goodbye to the GCS."""
        signal_all(self.processes(), signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        procs = self.processes()
        signal_all(procs, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=15)
        signal_all(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class LocalCluster:
    """A head and worker nodes started with `ray start`; jobs go through the `ray job submit` CLI."""

    START_ATTEMPTS = 3  # `ray start` gives a node 30 s (hard-coded) to register; a loaded machine can miss that

    def __init__(self, base: Path):
        self.base = base
        self.workers: list[Node] = []
        self.head: Node | None = None

    def start_head(self) -> None:
        for attempt in range(self.START_ATTEMPTS):
            self.dashboard_port = free_port()
            self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
            self.head = Node(f"head{attempt}", self.base / f"head{attempt}", [
                "--head", f"--port={free_port()}", f"--ray-client-server-port={free_port()}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            ], {"head_node": 1, **SLOT})
            address = self._wait_for_head()
            if address:
                self.gcs_address = address
                return
            self.head.stop()
        raise AssertionError(f"the head failed to start {self.START_ATTEMPTS} times:\n{self.head.tail()}")

    def _wait_for_head(self, timeout: float = 240) -> str | None:
        """The GCS address once the head's job API answers; None when `ray start` gave up."""
        from ray.job_submission import JobSubmissionClient

        marker = self.head.temp_dir / "ray_current_cluster"  # the GCS address `ray start` resolved
        deadline = time.monotonic() + timeout
        while self.head.proc.poll() is None:
            assert time.monotonic() < deadline, f"the head did not start in {timeout} s:\n{self.head.tail()}"
            if marker.exists() and marker.read_text().strip():
                try:
                    JobSubmissionClient(self.dashboard).list_jobs()
                    return marker.read_text().strip()
                except Exception:  # noqa: BLE001 - the dashboard is still starting
                    pass
            time.sleep(1)
        print(f"{self.head.name} exited during start-up:\n{self.head.tail(800)}")
        return None

    def add_worker(self) -> Node:
        for _ in range(self.START_ATTEMPTS):
            index = len(self.workers)
            node = Node(f"worker{index}", self.base / f"worker{index}", [f"--address={self.gcs_address}"],
                        {"worker_node": 1, **SLOT})
            self.workers.append(node)
            deadline = time.monotonic() + 240
            while node.proc.poll() is None:
                if node.name in self.alive_roles().values():
                    return node
                assert time.monotonic() < deadline, f"{node.name} did not join within 240 s:\n{node.tail()}"
                time.sleep(1)
            print(f"{node.name} exited during start-up:\n{node.tail(800)}")
            node.stop()
        raise AssertionError(f"no worker node joined in {self.START_ATTEMPTS} attempts:\n{node.tail()}")

    def ensure_worker(self) -> str:
        """The live worker node's id, starting one when the last was lost (e.g. by a failed test)."""
        if not self.workers or self.workers[-1].name not in self.alive_roles().values():
            self.add_worker()
        return self.node_id(self.workers[-1].name)

    def nodes(self) -> list:
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard, detail=True, limit=1000)

    def alive_roles(self) -> dict[str, str]:
        """node id -> "head" or the name of the worker node it is (the newest worker holds `worker_node`)."""
        roles = {}
        for n in self.nodes():
            if n.state != "ALIVE":
                continue
            if "head_node" in n.resources_total:
                roles[n.node_id] = "head"
            elif "worker_node" in n.resources_total and self.workers:
                roles[n.node_id] = self.workers[-1].name
        return roles

    def node_id(self, role: str) -> str:
        ids = [i for i, r in self.alive_roles().items() if r == role]
        assert len(ids) == 1, (role, self.alive_roles())
        return ids[0]

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} within {timeout} s\n{self.head.tail()}"
            time.sleep(1)

    def submit(self, name: str, *entrypoint: str) -> str:
        """`ray job submit --no-wait` from the checkout, with the CPU runtime env (working_dir: .); the job's id."""
        submission_id = f"{name}-{uuid.uuid4().hex[:8]}"
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
             "--no-wait", "--runtime-env", RUNTIME_ENV, "--", *entrypoint],
            cwd=ROOT, env=node_env(), capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return submission_id

    def status(self, submission_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.dashboard).get_job_status(submission_id).value)

    def logs(self, submission_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard).get_job_logs(submission_id)

    def wait_job(self, submission_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.status(submission_id)) not in TERMINAL:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {submission_id} still {status} after {timeout} s:\n"
                                     f"{self.logs(submission_id)[-5000:]}")
            time.sleep(2)
        return status

    def job_id(self, submission_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard).get_job_info(submission_id).job_id

    def actors(self, submission_id: str, class_name: str | None = None) -> list:
        """Every actor of a job, dead ones included, with the node it was placed on and its pid."""
        from ray.util.state import list_actors

        job_id = self.job_id(submission_id)
        if job_id is None:  # the driver has not started yet
            return []
        filters = [("job_id", "=", job_id)]
        if class_name:
            filters.append(("class_name", "=", class_name))
        return list_actors(address=self.dashboard, filters=filters, detail=True, limit=10_000)

    def stop(self) -> None:
        for node in reversed([self.head, *self.workers]):
            if node is not None:
                node.stop()


@pytest.fixture(scope="module")
def cluster(request):
    # A short private folder: Ray's unix socket paths under --temp-dir must stay below 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="t2lmn-", dir="/tmp"))
    failed_before = request.session.testsfailed
    started = time.monotonic()
    local = LocalCluster(base)
    try:
        local.start_head()
        local.add_worker()
        print(f"2-node cluster up in {time.monotonic() - started:.0f}s (dashboard {local.dashboard})")
        yield local
    finally:
        local.stop()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"node logs kept in {base}")


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
def trained(cluster, work):
    """The demo training through `ray job submit`: 6 steps, two workers, one per node -> (run folder, job id)."""
    run_dir = work / "train"
    started = time.monotonic()
    job = cluster.submit("mn-train", *train_command(run_dir, "optim.max_steps=6", "run.checkpoint_every=3"))
    status = cluster.wait_job(job, 900)
    assert status == "SUCCEEDED", cluster.logs(job)[-6000:]
    print(f"training job: {time.monotonic() - started:.0f}s")
    return run_dir, job


def test_training_and_generation_run_on_both_nodes(cluster, trained, work):
    from t2l_ray.checkpoint import read_checkpoint_config

    run_dir, job = trained
    head, worker = cluster.node_id("head"), cluster.node_id(cluster.workers[-1].name)
    assert [r["step"] for r in read_metrics(str(run_dir))] == [1, 2, 3, 4, 5, 6]
    assert read_checkpoint_config(str(run_dir / "hypernet"))["encoder"] == "all-minilm-l6-v2"
    assert json.loads((run_dir / "hypernet" / "hypernet.json").read_text())["step"] == 6

    # Where did the workers run? Ray's record of each train worker actor (node id, pid) against the pid each
    # rank wrote from inside its own process.
    node_of = {a.pid: a.node_id for a in cluster.actors(job, "RayTrainWorker")}
    pids = rank_pids(run_dir)
    assert sorted(pids) == [0, 1] and all(pid in node_of for pid in pids.values()), (pids, node_of)
    assert {node_of[pid] for pid in pids.values()} == {head, worker}

    # Generation steered by a custom resource, as the cluster configs' gen_gpu: only the worker node offers
    # `worker_node`, so every encoder and hypernet actor must run there.
    out = work / "adapters"
    started = time.monotonic()
    job = cluster.submit("mn-gen", "t2l-ray", "batch-generate", "jobs/examples/descriptions.jsonl",
                         "--checkpoint", str(run_dir / "hypernet"), "--out", str(out), "--concurrency", "2",
                         "--set", "resources.worker_node=0.25")
    status = cluster.wait_job(job, 600)
    assert status == "SUCCEEDED", cluster.logs(job)[-6000:]
    print(f"batch-generate job (22 lines): {time.monotonic() - started:.0f}s")
    lines = [json.loads(line) for line in (ROOT / "jobs/examples/descriptions.jsonl").read_text().splitlines()]
    assert complete_adapters(out) == {line["id"] for line in lines}
    rows = manifest.latest_by_line(str(out))
    assert sorted(rows) == list(range(1, len(lines) + 1)) and {r["status"] for r in rows.values()} == {"written"}
    # An actor Ray Data asked for but never placed (the job ended first) has no node; it ran nowhere.
    placed = [(a.class_name, a.node_id) for a in cluster.actors(job) if a.class_name.startswith("MapWorker")
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


def finished_tasks_on(cluster: LocalCluster, job: str, node_id: str) -> int:
    """Actor tasks of a job that finished on a node (Ray Data's map batches run as actor tasks)."""
    from ray.util.state import list_tasks

    job_id = cluster.job_id(job)
    if job_id is None:
        return 0
    tasks = list_tasks(address=cluster.dashboard, limit=10_000, filters=[
        ("job_id", "=", job_id), ("node_id", "=", node_id), ("state", "=", "FINISHED"), ("type", "=", "ACTOR_TASK")])
    return sum(1 for t in tasks if t.name.startswith("MapWorker(") and t.name.endswith(".submit"))


def test_generation_survives_losing_the_worker_node(cluster, trained, work):
    run_dir, _ = trained
    source, out = work / "many.jsonl", work / "many"
    ids = write_descriptions(source, GEN_LINES)
    command = ["t2l-ray", "batch-generate", str(source), "--checkpoint", str(run_dir / "hypernet"), "--out", str(out),
               "--concurrency", "2", "--batch-size", "2"]
    victim_id = cluster.ensure_worker()
    victim = cluster.workers[-1]
    started = time.monotonic()
    job = cluster.submit("mn-gen-preempt", *command)

    def working_on_victim() -> bool:
        status = cluster.status(job)
        assert status not in TERMINAL, f"the job ended ({status}) before the worker node took part:\n{cluster.logs(job)[-3000:]}"
        return len(complete_adapters(out)) >= 10 and finished_tasks_on(cluster, job, victim_id) > 0

    cluster.wait_for(working_on_victim, 600, "no generation work on the worker node")
    before = len(complete_adapters(out))
    victim.kill()
    killed_at = time.monotonic()
    print(f"killed {victim.name} {killed_at - started:.0f}s after submit, {before}/{GEN_LINES} adapters written")
    cluster.wait_for(lambda: victim_id not in cluster.alive_roles(), 120, "the GCS did not mark the node dead")
    print(f"node marked dead after {time.monotonic() - killed_at:.0f}s")

    status = cluster.wait_job(job, 900)
    print(f"job {status} {time.monotonic() - killed_at:.0f}s after the kill")
    runs = 1
    if status != "SUCCEEDED":
        # The contract when a run does not survive: a rerun finishes it, skipping what is already written.
        print(f"first run {status}; its log ends with:\n{cluster.logs(job)[-2000:]}")
        rerun = cluster.submit("mn-gen-rerun", *command)
        status = cluster.wait_job(rerun, 900)
        assert status == "SUCCEEDED", cluster.logs(rerun)[-6000:]
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


def test_training_resumes_when_the_worker_node_returns(cluster, work):
    run_dir = work / "train-preempt"
    max_steps, every = 80, 5
    victim_id = cluster.ensure_worker()
    victim = cluster.workers[-1]
    started = time.monotonic()
    job = cluster.submit("mn-train-preempt", *train_command(
        run_dir, f"optim.max_steps={max_steps}", f"run.checkpoint_every={every}", "run.max_failures=3"))

    def checkpointed() -> bool:
        """A checkpoint the controller has registered: one that workers merely wrote is lost with them."""
        status = cluster.status(job)
        assert status not in TERMINAL, f"the job ended ({status}) before the node could be lost:\n{cluster.logs(job)[-3000:]}"
        return registered_step(run_dir) >= every

    cluster.wait_for(checkpointed, 900, "no checkpoint")
    first_pids = rank_pids(run_dir)
    victim.kill()
    killed_at, kill_clock = time.monotonic(), time.time()
    step_at_kill, registered = read_metrics(str(run_dir))[-1]["step"], registered_step(run_dir)
    assert step_at_kill < max_steps
    print(f"killed {victim.name} {killed_at - started:.0f}s after submit, at step {step_at_kill}/{max_steps} "
          f"(latest registered checkpoint: step {registered})")
    cluster.wait_for(lambda: victim_id not in cluster.alive_roles(), 120, "the GCS did not mark the node dead")
    print(f"node marked dead after {time.monotonic() - killed_at:.0f}s")
    assert cluster.status(job) not in TERMINAL, cluster.logs(job)[-4000:]

    cluster.add_worker()  # the replacement VM: Ray Train's FailureConfig restarts the group once both slots exist
    new_worker = cluster.node_id(cluster.workers[-1].name)
    print(f"replacement node up {time.monotonic() - killed_at:.0f}s after the kill")
    status = cluster.wait_job(job, 900)
    assert status == "SUCCEEDED", cluster.logs(job)[-6000:]
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
    node_of = {a.pid: a.node_id for a in cluster.actors(job, "RayTrainWorker")}
    assert {node_of[pid] for pid in first_pids.values()} == {cluster.node_id("head"), victim_id}
    assert {node_of[pid] for pid in new_pids.values()} == {cluster.node_id("head"), new_worker}
