"""Request bodies of the OpenAI-compatible routes, as the `openai` client and others send them.

Fields other clients send and we have no use for (`user`, `presence_penalty`, ...) are ignored; what cannot be
honoured is refused with 422 naming the field: more than one choice (`n`), tools, log-probabilities, `echo`,
`suffix`, non-text message parts, tool and function turns.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

REFUSED = "is not supported by this server"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"] = Field(
        ..., description="`developer` is read as `system`. Tool and function turns are refused.")
    content: Union[StrictStr, list[TextPart]] = Field(..., description="Text, or a list of text parts (joined).")

    def as_turn(self) -> dict[str, str]:
        """`{"role", "content"}` as chat templates take it."""
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class Sampling(BaseModel):
    """Fields chat completions and completions share."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., description="An adapter id, BASE:ID, `t2l:<task description>`, or the base's name.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate; capped at max_tokens_limit (/v1/info).")
    temperature: Optional[float] = Field(None, ge=0, le=2, description="0 or absent: greedy (deterministic).")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    stop: Optional[Union[StrictStr, list[StrictStr]]] = Field(None, description="Up to 4 strings that end the answer.")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, description="Only 1.")
    logprobs: Any = Field(None, description="Not supported.")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"n={value} {REFUSED}: one choice per request")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError(f"logprobs {REFUSED}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError(f"at most 4 stop strings, not {len(stops)}")
        return stops

    def stop_strings(self) -> list[str]:
        return list(self.stop or [])


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Newer name of max_tokens; wins over it.")
    tools: Optional[list[Any]] = None
    functions: Optional[list[Any]] = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value):
        if value:
            raise ValueError(f"tool calling {REFUSED}")
        return value

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(Sampling):
    prompt: Union[StrictStr, list[StrictStr]] = Field(..., description="One prompt (a list must hold exactly one), "
                                                                        "used as is: no chat template.")
    echo: bool = False
    suffix: Optional[str] = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"give one prompt; a list of {len(value)} {REFUSED}")
            return value[0]
        return value

    @field_validator("echo", "suffix")
    @classmethod
    def _refused(cls, value, info):
        if value:
            raise ValueError(f"{info.field_name} {REFUSED}")
        return value

    def token_limit(self) -> Optional[int]:
        return self.max_tokens
