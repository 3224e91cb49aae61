"""Request bodies of the OpenAI-compatible routes (the fields vLLM's OpenAI server accepts).

Unknown fields are allowed and passed through to the engine, as vLLM does for its extensions.
Checks that pydantic cannot express (n, JSON schemas, named tool choice) live in ``check_*``.
"""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from concierge.gateway.errors import GatewayError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class FunctionDef(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(_Open):
    name: str = "response"
    description: str | None = None
    # "schema" would shadow a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class ChatCompletionRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=1, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    user: str | None = None


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data``; the first problem becomes a 400 naming the field (``param``)."""
    if not isinstance(data, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Drop pydantic's union branch names ("str", "list[...]") so param is the JSON path.
        loc = [str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES))]
        param = ".".join(loc) or None
        message = first["msg"].removeprefix("Value error, ")
        raise GatewayError(400, f"{param}: {message}" if param else message, param=param) from None


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "NamedToolChoice"}


def _check_schema(schema: dict[str, Any], param: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise GatewayError(400, f"Invalid JSON schema at {where}: {exc.message}", param=param) from None


def check_chat(req: ChatCompletionRequest) -> None:
    """The checks beyond field types: one choice, valid schemas, a named tool that exists."""
    if req.n not in (None, 1):
        raise GatewayError(400, "Only n=1 is supported.", param="n")
    if req.response_format is not None and req.response_format.type == "json_schema":
        assert req.response_format.json_schema is not None  # guaranteed by the model validator
        _check_schema(req.response_format.json_schema.schema_ or {}, "response_format.json_schema.schema")
    names = []
    for i, tool in enumerate(req.tools or []):
        names.append(tool.function.name)
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools.{i}.function.parameters")
    if isinstance(req.tool_choice, NamedToolChoice) and req.tool_choice.function.name not in names:
        raise GatewayError(
            400,
            f"tool_choice names function {req.tool_choice.function.name!r}, which is not in tools.",
            param="tool_choice",
        )
    if req.tool_choice == "required" and not names:
        raise GatewayError(400, "tool_choice 'required' needs tools.", param="tool_choice")


def embedding_inputs(req: EmbeddingRequest) -> list[str]:
    """The texts to embed; token-id arrays are not supported (400)."""
    items = [req.input] if isinstance(req.input, str) else req.input
    if not items:
        raise GatewayError(400, "input must not be empty.", param="input")
    if not all(isinstance(item, str) for item in items):
        raise GatewayError(
            400,
            "Token-id arrays are not supported as input; send strings.",
            param="input",
            code="unsupported_input",
        )
    return items
