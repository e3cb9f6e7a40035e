"""OpenAI wire models for the gateway, both ways, plus Adept's ``rag`` extension and ``citations``.

Requests are strict (unknown fields are 400s naming the field) because a silently ignored
parameter is a silent wrong answer. Fields that OpenAI defines but Adept cannot honour are
accepted only at their neutral value (``suffix=null``, ``best_of=1``) and refused otherwise.
Responses are models too (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``,
``EmbeddingResponse``, ``ModelList``, ``ErrorResponse``): the logic layer builds them, the
routes serialize them, and their field names and order follow the ``openai`` package's types.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

# The error envelope is the kernel's (every service answers errors the same way); re-exported here.
from adept.errors import ErrorInfo as ErrorInfo
from adept.errors import ErrorResponse as ErrorResponse
from adept.errors import InvalidRequest
from services.jsonbody import decode_json_body

MAX_STOP_SEQUENCES = 4


class WireModel(BaseModel):
    """Request bodies: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class TextPart(WireModel):
    """One ``{"type": "text", "text": ...}`` content part (the only kind a text model can read)."""

    type: Literal["text"] = Field(description="Content part type; only `text` is supported.")
    text: str = Field(description="The text.")


class FunctionCallIn(WireModel):
    name: str = Field(max_length=64, description="The function called.")
    arguments: str = Field(description="Its arguments: a JSON object, as text.")


class ToolCallIn(WireModel):
    """A tool call of an earlier assistant turn, sent back in the conversation."""

    id: str = Field(max_length=128, description="Call id; the `tool` turn answering it names it.")
    type: Literal["function"] = Field("function", description="Only `function` tools exist.")
    function: FunctionCallIn

    @field_validator("function")
    @classmethod
    def _json_arguments(cls, v: FunctionCallIn) -> FunctionCallIn:
        try:
            json.loads(v.arguments)
        except ValueError:
            raise ValueError("tool call arguments must be JSON") from None
        return v


class ChatMessage(WireModel):
    """One chat turn. ``developer`` is OpenAI's newer name for ``system``; ``tool`` carries a tool's result."""

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str | list[TextPart] | None = Field(
        None, description="Text, or a list of text parts (may be null on an assistant turn with tool_calls)."
    )
    name: str | None = Field(None, max_length=64, description="Optional participant name.")
    tool_calls: list[ToolCallIn] | None = Field(None, description="Assistant turns: the tools it called.")
    tool_call_id: str | None = Field(None, max_length=128, description="Tool turns: the call answered.")

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only on an assistant turn with tool_calls)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def as_llm_message(self) -> dict[str, Any]:
        """The message the LLM deployment's chat template expects (``role``, ``content``, tool fields)."""
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text,
        }
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
            if self.name:
                out["name"] = self.name
        return out


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDef(WireModel):
    name: str = Field(pattern=FUNCTION_NAME, description="Function name (letters, digits, _ and -).")
    description: str | None = Field(None, description="What it does (shown to the model).")
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of its arguments.")
    strict: StrictBool | None = Field(None, description="Arguments always match `parameters` (they do here).")


class Tool(WireModel):
    type: Literal["function"] = Field(description="Only `function` tools exist.")
    function: FunctionDef


class ToolChoiceFunction(WireModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: ToolChoiceFunction


class JsonSchemaFormat(WireModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=FUNCTION_NAME, description="Name of the schema.")
    description: str | None = Field(None, description="What the output is for.")
    schema_: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"}, alias="schema", description="The JSON schema."
    )
    strict: StrictBool | None = Field(None, description="Output always matches the schema (it does here).")


class ResponseFormat(WireModel):
    """``text``, any JSON object (``json_object``), or JSON matching a schema (``json_schema``)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(None, description="With type `json_schema`.")

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


class RagOptions(WireModel):
    """Adept extension: answer from the caller's knowledge base and cite the passages used."""

    top_k: int | None = Field(
        None, ge=1, le=100, description="Passages to retrieve (default: server setting)."
    )


class StreamOptions(WireModel):
    include_usage: StrictBool = Field(
        False, description="Send a last chunk carrying `usage` before `[DONE]`."
    )


class SamplingFields(WireModel):
    """Fields shared by chat and text completions."""

    model: str = Field(
        min_length=1, max_length=256, description="Base model id, or one of your adapters: `name[@vN]`."
    )
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (server limit applies).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(
        None,
        ge=-(2**63),
        le=2**63 - 1,
        description="Seed for reproducible sampling (a signed 64-bit integer).",
    )
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences where generation stops.")
    stream: StrictBool = Field(False, description="Stream Server-Sent Events ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    n: int = Field(1, ge=1, le=16, description="Choices to generate (up to the server's `llm.max_choices`).")
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Lowers the logit of every token already generated."
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Lowers a token's logit once per time it was generated."
    )
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) -> bias from -100 (ban) to 100 (force), at most 300."
    )
    user: str | None = Field(None, max_length=256, description="End-user id (accepted, not stored).")

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if len(v) > 300:
            raise ValueError("at most 300 logit_bias entries are allowed")
        for key, bias in v.items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values are between -100 and 100, got {bias}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # type: ignore[arg-type]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer alias of `max_tokens`.")
    rag: RagOptions | StrictBool | None = Field(
        None, description='Adept extension: `true` or `{"top_k": 4}`.'
    )
    logprobs: StrictBool = Field(False, description="Return each output token's log-probability.")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With logprobs: this many most likely tokens at each position."
    )
    response_format: ResponseFormat | None = Field(
        None, description="`text`, `json_object`, or `json_schema` (output constrained by a grammar)."
    )
    tools: list[Tool] | None = Field(None, max_length=128, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None,
        description="`none`, `auto` (models whose template has a tool-call format), `required`, or a named "
        "function; default `auto` with tools.",
    )
    parallel_tool_calls: StrictBool | None = Field(
        None, description="Accepted; a turn makes at most one tool call."
    )

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        choice = self.tool_choice
        if choice is not None and choice != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in {
            t.function.name for t in self.tools or []
        }:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        fmt = self.response_format
        if fmt is not None and fmt.type != "text" and self.tool_mode in ("required", "named"):
            raise ValueError("response_format json and a required tool call cannot both hold")
        return self

    @property
    def tool_mode(self) -> Literal["none", "auto", "required", "named"]:
        if not self.tools:
            return "none"
        if self.tool_choice is None:
            return "auto"
        return "named" if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice

    @model_validator(mode="after")
    def _one_max(self) -> ChatCompletionRequest:
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def rag_top_k(self) -> int | Literal[False] | None:
        """``False`` when RAG is off, ``None`` for the default top_k, else the asked top_k."""
        if self.rag is None or self.rag is False:
            return False
        if self.rag is True:
            return None
        return self.rag.top_k


class CompletionRequest(SamplingFields):
    """``POST /v1/completions`` (legacy text completions; one prompt per request)."""

    prompt: str | list[str] = Field(description="The prompt (one string, or a list holding one string).")
    max_tokens: int | None = Field(16, ge=1, description="Most tokens to generate (OpenAI's default is 16).")
    echo: StrictBool = Field(False, description="Put the prompt before the completion in `text`.")
    suffix: str | None = Field(None, description="Not supported; only null is accepted.")
    logprobs: StrictInt | None = Field(
        None,
        ge=0,
        le=5,
        description="Return each generated token's log-probability and this many most likely tokens (0..5).",
    )
    best_of: int = Field(1, ge=1, le=1, description="Only 1 is supported.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("exactly one prompt per request is supported")
            v = v[0]
        if not v:
            raise ValueError("prompt must not be empty")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.suffix is not None:
            raise ValueError("suffix (insertion) is not supported")
        if self.echo and self.logprobs is not None:
            # The prompt's own log-probabilities would need every prompt position's logits kept.
            raise ValueError("echo with logprobs is not supported (the prompt's logprobs are not computed)")
        return self


class EmbeddingRequest(WireModel):
    """``POST /v1/embeddings``: texts, or token ids of the embedding model's own tokenizer, in; vectors out."""

    model: str = Field(min_length=1, max_length=256, description="The embedding model id (see the README).")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, one array of token ids, or a list of token-id arrays. Token ids "
        "are the embedding model's own tokenizer's (as vLLM reads them), not tiktoken's."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float` lists or base64 float32."
    )
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's dimension when given.")
    user: str | None = Field(None, max_length=256, description="End-user id (accepted, not stored).")

    @field_validator("input", mode="before")
    @classmethod
    def _inputs(cls, v: Any) -> list[str] | list[list[int]]:
        """Texts or token arrays, never a mix; each a non-empty string or a non-empty list of ids >= 0."""
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise ValueError("input must be a non-empty string, list of strings, or token-id array(s)")
        if all(isinstance(x, str) for x in v):
            if any(not x for x in v):
                raise ValueError("input texts must not be empty strings")
            return v
        arrays = v if all(isinstance(x, list) for x in v) else [v]
        for i, ids in enumerate(arrays):
            if not ids:
                raise ValueError(f"token array input[{i}] is empty")
            # bool is an int in Python, and JSON true is not a token id.
            bad = [t for t in ids if type(t) is not int or t < 0]
            if bad:
                raise ValueError(
                    f"input is a mix of types or holds {bad[0]!r}: send texts, or token ids (integers >= 0), "
                    "not both"
                )
        return arrays

    @property
    def texts(self) -> list[str]:
        """The texts (empty when the input is token arrays)."""
        return [] if self.token_ids else list(self.input)  # type: ignore[arg-type]

    @property
    def token_ids(self) -> list[list[int]]:
        """The token arrays (empty when the input is texts)."""
        inputs: list[Any] = self.input  # type: ignore[assignment]
        return inputs if isinstance(inputs[0], list) else []


# -- responses -------------------------------------------------------------------------------------
# Field order is the wire order. Fields OpenAI omits when absent (a delta's role, the Adept
# extensions) are left out of the JSON when unset rather than sent as null.
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


def _absent_if_none(value: object) -> bool:
    return value is None


def omitted(description: str) -> Any:
    """An optional response field that is left out of the JSON when it is ``None``."""
    return Field(None, description=description, exclude_if=_absent_if_none)


class Citation(BaseModel):
    """A passage an answer drew on (Adept extension)."""

    document_id: str = Field(description="The knowledge-base document the passage comes from.")
    chunk_id: str = Field(description="The passage's chunk id within the document.")
    title: str = Field(description="The document's title.")
    score: float = Field(description="Retrieval score; higher is more relevant.")
    quote: str | None = omitted("The passage's sentence that answers the question best.")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="A JSON object, as text.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; null when the turn is tool calls.")
    tool_calls: list[ToolCall] | None = omitted("The tools the model called.")


class DeltaToolCall(BaseModel):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = Field(None, description="With `logprobs: true`: per output token.")
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    """``POST /v1/chat/completions`` without ``stream``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="The model that answered: the base id, or `adapter@vN`.")
    choices: list[ChatCompletionChoice]
    usage: Usage
    citations: list[Citation] | None = omitted("Adept extension: the passages a RAG answer drew on.")


class ChoiceDelta(BaseModel):
    """What a stream event adds: the role (first event only) and a piece of the content."""

    role: Literal["assistant"] | None = omitted("`assistant`, in the first event only.")
    content: str | None = omitted("The next piece of the answer.")
    tool_calls: list[DeltaToolCall] | None = omitted("Tool calls (each whole, in one event).")


class ChatCompletionChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = Field(None, description="Set in the last content event only.")


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed chat completion (``data: {...}``, then ``data: [DONE]``).

    The last content event carries ``citations`` (RAG); with ``stream_options.include_usage``
    a final event with empty ``choices`` carries ``usage``.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    citations: list[Citation] | None = omitted("Adept extension: in the last content event of a RAG answer.")
    usage: Usage | None = omitted("Only in the usage event (`stream_options.include_usage`).")


class CompletionLogprobs(BaseModel):
    """Legacy ``/v1/completions`` log-probabilities: one entry per generated token in each list."""

    tokens: list[str] = Field(default_factory=list, description="Each token's text.")
    token_logprobs: list[float] = Field(default_factory=list, description="Each token's log-probability.")
    top_logprobs: list[dict[str, float]] = Field(
        default_factory=list, description="At each position, the `logprobs` most likely tokens -> logprob."
    )
    text_offset: list[int] = Field(
        default_factory=list, description="Where each token starts in the choice's `text`."
    )


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = Field(None, description="With `logprobs`: per output token.")
    finish_reason: FinishReason | None = Field(None, description="Null in stream events before the last.")


class CompletionChunk(BaseModel):
    """One stream event of ``POST /v1/completions`` (OpenAI uses the ``Completion`` shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = omitted("Only in the usage event (`stream_options.include_usage`).")


class Completion(CompletionChunk):
    """``POST /v1/completions`` without ``stream``."""

    usage: Usage


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 little-endian float32.")


class EmbeddingResponse(BaseModel):
    """``POST /v1/embeddings``."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = omitted("Adapters: the base model they extend.")
    version: str | None = omitted("Adapters: the version that answers (`vN`).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    """``GET /healthz``: 200 when every deployment is ready, else 503 with the same body."""

    status: Literal["ok", "unavailable"]
    deployments: dict[str, str] = Field(description="Deployment -> `ready` or why it is not.")


def sse_event(event: BaseModel) -> bytes:
    """One Server-Sent Event ``data:`` line carrying ``event`` as JSON."""
    return b"data: " + json.dumps(event.model_dump(mode="json"), ensure_ascii=False).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


T = TypeVar("T", bound=BaseModel)


_TYPE_NAMES = frozenset({"str", "bool", "int", "float", "list", "dict", "none"})


def _is_union_branch(part: object) -> bool:
    """Pydantic puts union branch names (``str``, ``list[TextPart]``, ``RagOptions``) in error paths."""
    return isinstance(part, str) and (part in _TYPE_NAMES or "[" in part or part[:1].isupper())


def describe_errors(err: ValidationError) -> tuple[str, str | None]:
    """One readable message for a request validation failure, and the first bad field."""
    parts, param = [], None
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"] if not _is_union_branch(p))
        param = param or loc or None
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts)), param


def parse_body(cls: type[T], body: bytes | str | dict[str, Any]) -> T:
    """Decode and validate a request body; every failure is an ``InvalidRequest`` (HTTP 400)."""
    data: Any = body
    if isinstance(body, bytes | str):
        if not body:
            raise InvalidRequest("request body is empty; expected a JSON object")
        data = decode_json_body(body)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        message, param = describe_errors(e)
        raise InvalidRequest(f"invalid request: {message}", param=param) from None
