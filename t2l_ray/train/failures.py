"""Which training failures a restart can fix, and stopping at once on the others.

Ray Train restarts the whole worker group from the latest checkpoint whenever a worker fails, up to
`FailureConfig.max_failures` (`run.max_failures`) times. A restart helps when a worker, its node or the
connection between workers was lost. It cannot help when the training code raised: a recipe that cannot run,
a bug, a tensor on the wrong device. The restart raises the same error again, minutes later. So:

- `stop_on_code_errors(loop)` wraps a worker loop. An error the loop raises becomes a `WorkerCodeError`
  carrying the worker's rank and traceback, unless it is a sign of a lost peer (a Ray system error such as a
  dead actor or a lost object, or a broken collective); those pass through unchanged.
- `StopOnCodeErrors`, a Ray Train `UserCallback`, runs on the controller when workers fail. When a
  `WorkerCodeError` is among the errors and nothing else explains it (no dead worker, no Ray system error, only
  collectives broken by the failing worker), it raises it as a `ray.train.ControllerError`, which Ray's failure
  policy never retries, so `trainer.fit()` raises at once. A dead worker beside a code error wins: when one
  rank dies, the others often fail in odd ways, and the restart is what they need.
"""

from __future__ import annotations

import functools
import traceback

import ray.exceptions
import ray.train
import torch.distributed

LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused")
"""gloo's messages when the other end of a collective went away (nccl's errors are `DistBackendError`s)."""

RAY_SYSTEM_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError,
                     ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError, ray.exceptions.RaySystemError,
                     ray.exceptions.LocalRayletDiedError)
"""Ray's errors for lost processes, nodes and objects (not `RayTaskError`: that one wraps a code error)."""


class WorkerCodeError(RuntimeError):
    """An error the training code raised on a worker; restarting the workers would raise it again."""

    def __init__(self, rank: int, message: str, worker_traceback: str):
        super().__init__(f"rank {rank}: {message}")
        self.rank, self.message, self.worker_traceback = rank, message, worker_traceback

    def __reduce__(self):  # travels worker -> controller -> driver without the (maybe unpicklable) cause
        return (type(self), (self.rank, self.message, self.worker_traceback))


def is_broken_collective(error: BaseException) -> bool:
    """A torch.distributed call that failed because a peer went away (or the network between them)."""
    if isinstance(error, torch.distributed.DistError):  # nccl, store and network failures
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in LOST_PEER)


def is_lost_peer(error: BaseException) -> bool:
    """An error a restart on healthy processes can fix."""
    return isinstance(error, RAY_SYSTEM_ERRORS) or is_broken_collective(error)


def stop_on_code_errors(loop):
    """The worker loop, raising its code errors as `WorkerCodeError` (see the module docstring)."""

    @functools.wraps(loop)
    def run(config):
        try:
            return loop(config)
        except Exception as error:
            if is_lost_peer(error):
                raise
            rank = ray.train.get_context().get_world_rank()
            raise WorkerCodeError(rank, f"{type(error).__name__}: {error}", traceback.format_exc()) from error

    return run


def code_error(errors: dict[int, Exception]) -> WorkerCodeError | None:
    """The first rank's code error when a restart cannot help, else None (see the module docstring)."""
    code = [errors[rank] for rank in sorted(errors) if isinstance(errors[rank], WorkerCodeError)]
    others = [e for e in errors.values() if not isinstance(e, WorkerCodeError)]
    if code and all(is_broken_collective(e) for e in others):
        return code[0]
    return None


class StopOnCodeErrors(ray.train.UserCallback):
    """Ends the run at the first code error instead of letting `max_failures` restarts repeat it."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        error = code_error(worker_exceptions)
        if error is not None:
            raise ray.train.ControllerError(error)


def fit(trainer):
    """`trainer.fit()`; when the run stopped on a code error, that `WorkerCodeError` itself is raised."""
    try:
        return trainer.fit()
    except ray.train.ControllerError as error:
        if isinstance(error.controller_failure, WorkerCodeError):
            raise error.controller_failure from None
        raise
