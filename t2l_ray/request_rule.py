"""The one rule for adapter requests, shared by the factory (JSONL lines) and Serve (HTTP bodies).

A request is a description and an optional id. The description must be non-blank, at most `max_chars`
characters and valid Unicode (no lone surrogates, which JSON's `\\ud800` escapes can carry). A given id must
match `ID_PATTERN`, so it never holds `:`, `/` or `..`; without one, the id is the content id, a hash of
(checkpoint sha256, description). Within one input (a file set, a request), an id asked for twice must
come with the same description both times. Both report the written weights by bytes and sha256.

Every refusal is a `RuleError` (a ValueError) whose `kind` names the broken rule; callers add where it
happened (`file:line`, `items[2].description`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Generic, Literal, TypeVar

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")

Kind = Literal["empty", "too_long", "unicode", "adapter_id", "id_conflict"]
Owner = TypeVar("Owner")


class RuleError(ValueError):
    """A request that breaks the rule; `kind` says which part."""

    def __init__(self, kind: Kind, message: str):
        super().__init__(message)
        self.kind = kind


def check_description(text: str, max_chars: int) -> str:
    """`text` when it is a usable description: non-blank, at most `max_chars` characters, valid Unicode."""
    if not text.strip():
        raise RuleError("empty", "description is empty")
    if len(text) > max_chars:
        raise RuleError("too_long", f"description has {len(text)} characters; the limit is {max_chars} (max_chars)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleError("unicode", "description is not valid Unicode (lone surrogate)") from None
    return text


def check_adapter_id(adapter_id: str) -> str:
    """Ids become folder names in shared stores: a strict pattern, so never `:`, `/` or `..`."""
    if not isinstance(adapter_id, str) or not ID_PATTERN.match(adapter_id):
        raise RuleError("adapter_id", f"invalid adapter id {adapter_id!r}: must match {ID_PATTERN.pattern}")
    return adapter_id


def check_request(description: str, given_id: str | None, max_chars: int) -> list[tuple[str, RuleError]]:
    """Every rule one request breaks, as (field, error), `description` before `id`; empty for a good request."""
    problems = []
    try:
        check_description(description, max_chars)
    except RuleError as error:
        problems.append(("description", error))
    if given_id is not None:
        try:
            check_adapter_id(given_id)
        except RuleError as error:
            problems.append(("id", error))
    return problems


def content_id(description: str, checkpoint_sha256: str) -> str:
    """The id of an adapter given no id: a hash of what determines its weights."""
    digest = hashlib.sha256(f"{checkpoint_sha256}\0{description}".encode()).hexdigest()
    return f"t2l-{digest[:24]}"


def resolve_id(description: str, given: str | None, checkpoint_sha256: str) -> str:
    """The given id (checked), else the content id."""
    return check_adapter_id(given) if given is not None else content_id(description, checkpoint_sha256)


class IdClaims(Generic[Owner]):
    """Which part of one input first asked for each id, so a repeat is recognised and a clash refused."""

    def __init__(self):
        self._first: dict[str, tuple[str, str, Owner]] = {}

    def claim(self, adapter_id: str, description: str, where: str, owner: Owner) -> Owner:
        """The owner of the first claim on `adapter_id` (`owner` itself when this is the first).

        A later claim with another description raises RuleError naming where the first one was.
        """
        first_description, first_where, first_owner = self._first.setdefault(adapter_id, (description, where, owner))
        if first_description != description:
            raise RuleError("id_conflict", f"id {adapter_id!r} is given twice: first at {first_where} with a "
                                           "different description")
        return first_owner


def weights_digest(weights: bytes) -> tuple[int, str]:
    """(bytes, sha256) of an adapter's weights file, as manifests and responses report them."""
    return len(weights), hashlib.sha256(weights).hexdigest()
