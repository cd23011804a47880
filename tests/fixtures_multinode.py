"""A two-node Ray cluster on one machine, driven the way a cloud cluster is: `ray start` and `ray job submit`.

A head (`ray start --head`, custom resource `head_node`) and a worker node (`ray start --address`,
custom resource `worker_node`) each advertise one `t2l_slot`; the demo training asks for one slot per
Ray Train worker, so its two workers must land on different nodes. Every node runs in its own session
(`ray start --block`) with its own `--temp-dir`, so a test can kill exactly that node's processes (a
preempted VM) and never touches other Ray clusters on the machine. No `ray stop` anywhere.

Minimal `ray start` set for `ray job submit` on a shared machine: a dashboard on a free port (the job
API lives in the dashboard), `--dashboard-agent-listen-port=0` (the agent's default 52365 may belong to
another cluster; the dashboard finds each agent's real port by node id), a free GCS and Ray Client port.
Ray 2.60 replaces `--node-ip-address=127.0.0.1` by the machine's address; both nodes then share one IP,
which is why the checks go by node id, not IP.

`two_nodes` is the fixture (tests/test_multinode.py uses it); `LocalCluster` is the harness behind it.
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNTIME_ENV = "jobs/runtime_env_cpu.yaml"
NODE_CPUS = 2  # logical CPUs per node (the machine has 2 cores in all): room for the train and Ray Data actors
SLOT = {"t2l_slot": 1}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


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
def two_nodes(request):
    """A head and one worker node for a test module, stopped (node logs kept if a test failed) after it."""
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
