"""Prompts rendered and tokenized off the event loop, after a size check that needs no tokenizer.

The replica's event loop streams every tenant's tokens; tokenizing a 4 MiB prompt on it held
every stream for seconds before the prompt was refused. So a request's text is first measured
in characters: no token of the vocabulary decodes to more characters than its longest piece, so
a prompt longer than ``window x longest piece`` characters cannot fit, and is refused at once.
What may fit is rendered and tokenized on one worker thread (one, because a fast tokenizer must
not be entered by two threads at once), while the loop keeps streaming.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adept.errors import InvalidRequest
from services.llm.prompting import Prompt, PromptBuilder
from services.llm.protocol import GenerateRequest


def longest_piece_chars(tokenizer: Any) -> int:
    """Most characters one token can decode to (its vocabulary string bounds it: bytes >= characters)."""
    return max((len(piece) for piece in tokenizer.get_vocab()), default=1) or 1


class PromptWorker:
    """Builds ``Prompt``s for an engine without blocking its event loop.

    Args:
        prompts: the engine's prompt builder (template, passages, token budget).
        tokenizer: the same tokenizer (for the longest piece).
    """

    def __init__(self, prompts: PromptBuilder, tokenizer: Any) -> None:
        self.prompts = prompts
        self.max_piece_chars = longest_piece_chars(tokenizer)
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="adept-tokenize")

    def check_size(self, req: GenerateRequest, max_tokens: int) -> None:
        """Refuse, without tokenizing, a prompt that cannot fit the window with ``max_tokens``.

        Raises:
            InvalidRequest: ``context_length_exceeded``.
        """
        room = self.prompts.max_model_len - max_tokens
        chars = req.text_chars
        if chars > room * self.max_piece_chars:
            raise InvalidRequest(
                f"the prompt is {chars} characters, at least {chars // self.max_piece_chars} tokens; with "
                f"max_tokens={max_tokens} it exceeds the model's context window of "
                f"{self.prompts.max_model_len} tokens: shorten it or lower max_tokens",
                code="context_length_exceeded",
                param="messages" if req.messages is not None else "prompt",
            )

    async def build(self, req: GenerateRequest, max_tokens: int) -> Prompt:
        """``PromptBuilder.build`` on the worker thread, after ``check_size``."""
        self.check_size(req, max_tokens)
        return await asyncio.get_running_loop().run_in_executor(
            self._exec, self.prompts.build, req, max_tokens
        )

    async def count(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` (no special tokens added), on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._exec, lambda: [len(self.prompts.encode(t)) for t in texts]
        )

    async def run(self, fn: Any, *args: Any) -> Any:
        """Any other tokenizer-bound work (compiling an output grammar) on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def close(self) -> None:
        self._exec.shutdown(wait=False, cancel_futures=True)
