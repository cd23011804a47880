"""From a request to the hypernet and back: one `Job` per requested description, and batches rendered so
that one bad description fails alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from t2l_ray import adapters
from t2l_ray.request_rule import IdClaims, RuleError, check_request, resolve_id
from t2l_ray.serve.config import ServeConfig
from t2l_ray.serve.gate import ApiError
from t2l_ray.serve.schema import CreateAdaptersRequest

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Job:
    description: str
    adapter_id: str


@dataclass
class Outcome:
    files: adapters.AdapterFiles | None
    error: str | None
    batch_size: int


def render_isolated(generator, jobs: list[Job]) -> list[Outcome]:
    """One batched `generator.render` for all jobs; if it fails, each job alone, so one bad job fails alone."""
    try:
        rendered = generator.render([j.description for j in jobs], [j.adapter_id for j in jobs])
        return [Outcome(files, None, len(jobs)) for files in rendered]
    except Exception as error:  # noqa: BLE001 - reported per request, never raised into the batch loop
        if len(jobs) == 1:
            return [Outcome(None, f"{type(error).__name__}: {error}", 1)]
        logger.warning("batch of %d failed (%s: %s); retrying one by one", len(jobs), type(error).__name__, error)
    outcomes = []
    for job in jobs:
        try:
            (files,) = generator.render([job.description], [job.adapter_id])
            outcomes.append(Outcome(files, None, 1))
        except Exception as error:  # noqa: BLE001
            outcomes.append(Outcome(None, f"{type(error).__name__}: {error}", 1))
    return outcomes


def jobs_for(body: CreateAdaptersRequest, cfg: ServeConfig, sha: str) -> list[Job]:
    """Check the descriptions and ids against the limits (422 naming each bad field); one Job per description.

    `sha` is the checkpoint's sha256: an item without an id gets the content id of (description, checkpoint)."""
    if body.items is not None:
        entries = [(f"items[{i}]", item.description, item.id) for i, item in enumerate(body.items)]
    else:
        entries = [("", body.description, body.id)]
    if not entries:
        raise ApiError(422, "invalid request: 'items' is empty; give at least one description")
    if len(entries) > cfg.max_descriptions:
        raise ApiError(422, f"invalid request: {len(entries)} descriptions; the limit is {cfg.max_descriptions} "
                            "per request (max_descriptions)")
    if body.return_ == "inline" and len(entries) > cfg.max_inline_descriptions:
        raise ApiError(422, f"invalid request: {len(entries)} descriptions with return=inline; the limit is "
                            f"{cfg.max_inline_descriptions} (max_inline_descriptions)")
    errors = [{"loc": f"{where}.{field}" if where else field, "msg": str(error), "type": error.kind}
              for where, text, given in entries for field, error in check_request(text, given, cfg.max_chars)]
    if errors:
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        raise ApiError(422, f"invalid request: {detail}", errors)
    jobs = [Job(text, resolve_id(text, given, sha)) for _, text, given in entries]
    claims: IdClaims[Job] = IdClaims()
    for (where, _, _), job in zip(entries, jobs):
        try:
            claims.claim(job.adapter_id, job.description, where or "description", job)
        except RuleError as error:
            raise ApiError(422, f"invalid request: {where or 'id'}: {error}") from None
    return jobs
