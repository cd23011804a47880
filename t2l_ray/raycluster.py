"""One way for commands to get a Ray cluster: the one in RAY_ADDRESS, or a private local one.

Ray workers copy the driver's environment only when the cluster starts, so storage settings
(`AWS_ENDPOINT_URL`, credentials) must be set before this is first called; a cluster named by
RAY_ADDRESS needs them set on its own nodes.
"""

from __future__ import annotations

import logging
import os


_started_here = False


def ensure_ray():
    """Initialise Ray once per process; returns the `ray` module. A no-op when Ray is already initialised."""
    global _started_here
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        ray.init(address=address)
    else:
        ray.init(**private_cluster_options())
    _started_here = True
    return ray


def shutdown_if_started_here() -> None:
    """Disconnect (and for a private cluster, stop it) when `ensure_ray` connected this process: a command
    ends with its work, and the last lines Ray forwards from workers arrive before this returns."""
    global _started_here
    if _started_here:
        import ray

        ray.shutdown()
        _started_here = False


def private_cluster_options() -> dict:
    """`ray.init` options of a private cluster for one command (or one test session).

    Ray 2.60 turns a 127.0.0.1 node address into the machine's external one (services.resolve_ip_for_localhost),
    so there is no loopback-only option to pass. More logical CPUs than cores: Ray Data tasks must still get
    scheduled while train workers hold theirs, or a small machine deadlocks (the reader waits for a CPU the
    trainers never release). No dashboard (memory, start-up time), so no state API: see the hook below.
    """
    return {
        "include_dashboard": False,
        "num_cpus": int(os.environ.get("T2L_RAY_NUM_CPUS", max(8, 2 * (os.cpu_count() or 1)))),
        "runtime_env": {"worker_process_setup_hook": f"{__name__}.{quiet_state_api_warnings.__name__}"},
    }


STATE_API_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_state_api_warnings() -> None:
    """Worker setup hook of the private cluster. Without a dashboard there is no state API, so Ray Train's
    PlacementGroupCleaner warns "Failed to query Ray Train Controller actor state" every 2 s of every run.
    Its job (freeing a dead controller's placement group) does not matter here: the private cluster ends with
    the command. Clusters named by RAY_ADDRESS have a dashboard and keep the warning."""
    import logging

    logging.getLogger(STATE_API_LOGGER).setLevel(logging.ERROR)


def unadvertised(resources: dict[str, float]) -> list[str]:
    """Custom resources that no alive node offers now: work asking for them waits for the autoscaler to add
    such a node, forever on a fixed cluster. Callers warn with these names."""
    import ray

    offered = set().union(*(node["Resources"] for node in ray.nodes() if node["Alive"]))
    return sorted(name for name in resources if name not in offered)


def warn_unadvertised(resources: dict[str, float], command: str, setting: str) -> list[str]:
    """Warn (logger `t2l_ray`, which commands show on the console) which of the resources `command` asks for
    (through `setting`) no node offers yet, so a job that waits for the autoscaler, or forever on a fixed
    cluster, says why. Returns those names."""
    missing = unadvertised(resources) if resources else []
    if missing:
        logging.getLogger("t2l_ray").warning(
            f"{command}: no node offers {', '.join(missing)} yet; the work waits until the autoscaler adds one "
            f"(on a fixed cluster, forever: check `{setting}`)")
    return missing
