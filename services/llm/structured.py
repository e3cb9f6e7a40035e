"""Grammar-constrained decoding on the HF engine: JSON output and tool calls that always parse.

A request's ``guided`` (built by the gateway from ``response_format``, or from ``tools`` with
``tool_choice`` ``required`` or a named function) becomes an xgrammar grammar, compiled once per
schema for the replica's tokenizer (compilation runs on the tokenizing thread, not the event
loop) and matched per row: before sampling, a constrained row's logits are masked to the tokens
the grammar allows next, so free rows and constrained rows of any adapters share one batch. The
grammar ends only at an end-of-turn token, so a finished answer is complete JSON; an answer cut by
``max_tokens`` ends with ``finish_reason: length``, as OpenAI's does.

Tools are shown to the model through its chat template when the template renders ``tools``;
otherwise as a system turn listing them. Role ``tool`` turns and assistant ``tool_calls`` are
rendered the same way: natively where the template knows them, as plain text otherwise.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from services.llm.protocol import GenerateRequest, Guided


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template has a tool-call format (it renders ``tools``)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and "tools" in template and "tool_call" in template


def chat_messages(req: GenerateRequest, tokenizer: Any) -> list[dict[str, Any]]:
    """``req``'s messages as the chat template takes them (tools and tool turns as text where it cannot)."""
    native = template_renders_tools(tokenizer)
    messages: list[dict[str, Any]] = []
    for m in req.messages or []:
        if native:
            messages.append(m.model_dump(exclude_none=True))
        elif m.role == "tool":
            name = f" {m.name}" if m.name else ""
            messages.append(
                {"role": "user", "content": f"Result of tool call{name} ({m.tool_call_id}):\n{m.content}"}
            )
        elif m.tool_calls:
            calls = [
                {"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in m.tool_calls
            ]
            text = (m.content + "\n" if m.content else "") + json.dumps(calls if len(calls) > 1 else calls[0])
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": m.role, "content": m.content})
    if req.tools and not native:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in req.tools)
        intro = (
            "You can call these functions. To call one, answer with only a JSON object "
            '{"name": <function name>, "arguments": <arguments object>}.\n' + listing
        )
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{intro}"}
        else:
            messages.insert(0, {"role": "system", "content": intro})
    return messages


def template_kwargs(req: GenerateRequest, tokenizer: Any) -> dict[str, Any]:
    return {"tools": req.tools} if req.tools and template_renders_tools(tokenizer) else {}


class GrammarBook:
    """Compiles grammars for one tokenizer and vocabulary (cached per schema); hands out per-row matchers.

    Args:
        tokenizer: the replica's tokenizer.
        vocab_size: the model's logits width (may exceed the tokenizer's vocabulary).
        stop_ids: tokens that end a turn; the grammar accepts them only where the JSON is complete.
    """

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_ids: set[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._compile = functools.lru_cache(maxsize=256)(self._compile_uncached)
        # Extractive grammars (one per set of shown passages) get their own cache, so they never evict
        # the JSON schemas, which repeat far more.
        self._compile_ebnf = functools.lru_cache(maxsize=256)(self.compiler.compile_grammar)

    def _compile_uncached(self, key: str) -> Any:
        # Compact JSON (no free whitespace): a small model cannot wander into endless blanks.
        schema = key or json.dumps({"type": "object"})
        return self.compiler.compile_json_schema(schema, strict_mode=True, any_whitespace=False)

    def compile_ebnf(self, grammar: str) -> Any:
        """The compiled EBNF ``grammar`` (an extractive answer's: ``services/llm/extractive.py``)."""
        return self._compile_ebnf(grammar)

    def compile(self, guided: Guided) -> Any:
        """The compiled grammar of ``guided`` (thread-safe; call it off the event loop).

        Raises:
            ValueError: the schema is not one xgrammar can compile.
        """
        return self._compile(
            "" if guided.json_schema is None else json.dumps(guided.json_schema, sort_keys=True)
        )

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled)

    def mask(self, logits: torch.Tensor, rows: list[int], matchers: list[Any]) -> torch.Tensor:
        """``logits`` (float32) with each of ``rows`` masked to what its matcher allows next."""
        xgr = self._xgr
        logits = logits.float()
        bitmask = xgr.allocate_token_bitmask(len(rows), self.vocab_size)
        for k, matcher in enumerate(matchers):
            matcher.fill_next_token_bitmask(bitmask, k)
        sub = logits[rows].cpu()
        xgr.apply_token_bitmask_inplace(sub, bitmask, vocab_size=self.vocab_size)
        logits[rows] = sub.to(logits.device)
        return logits
