"""The HTTP API's request and response bodies (pydantic), as `/openapi.json` and `/docs` show them."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator


class AdapterItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: StrictStr = Field(..., description="Plain-text task description (non-empty; length limit in /v1/info).")
    id: Optional[StrictStr] = Field(None, description="Adapter id matching [a-z0-9][a-z0-9_-]{0,127}; default: a content hash.")


class CreateAdaptersRequest(BaseModel):
    """One adapter (`description`, optional `id`) or many (`items`); `return` picks store or inline."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [
            {"description": "Classify the sentiment of product reviews as positive or negative.", "id": "sentiment"},
            {"items": [{"description": "Summarise news articles in one sentence."},
                       {"description": "Translate English questions into SQL.", "id": "text-to-sql"}]},
            {"description": "Answer trivia questions briefly.", "return": "inline"},
        ]},
    )

    description: Optional[StrictStr] = Field(None, description="One description (use `items` for several).")
    id: Optional[StrictStr] = Field(None, description="Id for the single `description`.")
    items: Optional[list[AdapterItem]] = Field(None, description="Several descriptions, each with an optional id.")
    return_: Literal["uri", "inline"] = Field(
        "uri", alias="return",
        description="`uri`: write each adapter to the store and return its URI; `inline`: return the files "
                    "(base64) and write nothing.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> "CreateAdaptersRequest":
        if (self.description is None) == (self.items is None):
            raise ValueError("give either 'description' (one adapter) or 'items' (a list of {description, id}), not both or neither")
        if self.items is not None and self.id is not None:
            raise ValueError("with 'items', put each 'id' inside its item")
        return self


class AdapterResult(BaseModel):
    id: str
    status: Literal["written", "exists", "inline"] = Field(
        ..., description="`written`: generated and committed now; `exists`: already in the store from the same "
                         "description and checkpoint (not regenerated); `inline`: returned in `files`, not written.")
    uri: Optional[str] = Field(None, description="The adapter folder (`written` and `exists`).")
    description: str
    weights_bytes: Optional[int] = Field(None, description="Size of adapter_model.safetensors (generated now).")
    sha256: Optional[str] = Field(None, description="sha256 of adapter_model.safetensors (generated now).")
    batch_size: Optional[int] = Field(None, description="Descriptions in the hypernet forward that made it.")
    files: Optional[dict[str, str]] = Field(None, description="`inline`: file name -> base64 bytes.")


class CreateAdaptersResponse(BaseModel):
    adapters: list[AdapterResult] = Field(..., description="One per requested description, in request order.")
    checkpoint_sha256: str


class AdapterInfo(BaseModel):
    id: str
    uri: str
    meta: dict[str, Any] = Field(..., description="t2l_meta.json: description, checkpoint, encoder, scale, dtype, time.")
    config: dict[str, Any] = Field(..., description="The main fields of adapter_config.json.")


class ServiceStats(BaseModel):
    """What this replica has done since it started (each replica counts its own)."""

    batches: int = Field(..., description="Batches run: one encoder pass and one hypernet forward each.")
    descriptions: int = Field(..., description="Descriptions generated in those batches (`exists` answers are not).")
    mean_batch_size: float = Field(..., description="descriptions / batches (0 before the first): how full batches "
                                                    "are under load; 1 means every description ran alone.")
    largest_batch: int = Field(..., description="Most descriptions in one batch (at most max_batch_size).")
    written: int = Field(..., description="Adapters written to the store.")


class ServiceInfo(BaseModel):
    checkpoint: str
    checkpoint_sha256: str
    encoder: str
    base_model: str
    rank: int
    target_modules: list[str]
    device: str
    out: str
    limits: dict[str, int | float]
    stats: ServiceStats = Field(..., description="Batching and write counters of the replica that answered.")
    chat: Optional[dict[str, Any]] = Field(None, description="The chat routes' base and adapter cache (when served).")


class Health(BaseModel):
    status: Literal["ok"]


class ErrorBody(BaseModel):
    detail: str
    errors: Optional[list[dict[str, Any]]] = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON or an invalid id in the path."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when T2L_API_TOKEN is set)."},
    413: {"model": ErrorBody, "description": "Body larger than max_body_bytes."},
    422: {"model": ErrorBody, "description": "The body does not fit the schema or the limits."},
}
