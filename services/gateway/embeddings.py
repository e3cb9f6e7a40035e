"""``/v1/embeddings``: texts or token arrays in, vectors from the retrieval deployment's embedding model out.

Token arrays follow vLLM: the ids are the embedding model's own tokenizer's (an OpenAI client's
tiktoken ids would mean other words), and the model reads them as given, so no text is decoded
and re-encoded. The replica checks them against its vocabulary and length limit.
"""

from __future__ import annotations

import base64
from typing import Protocol

import numpy as np

from adept.errors import InvalidRequest, NotFound
from services.gateway.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage

MAX_INPUTS = 2048


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]: ...
    async def embed_ids(self, ids: list[list[int]]) -> list[list[float]]: ...


def model_aliases(ref: str) -> tuple[str, ...]:
    """Names a client may use for the embedding model: the reference, its last part, and the bare name."""
    tail = ref.rstrip("/").rsplit("/", 1)[-1].removeprefix("bundled:")
    return tuple(dict.fromkeys((ref, tail, "embedding")))


class EmbeddingService:
    """Checks the model name, embeds, and shapes the OpenAI response (float lists or base64 float32)."""

    def __init__(self, embedder: Embedder, model_ref: str) -> None:
        self.embedder = embedder
        self.model_id = model_ref
        self._names = set(model_aliases(model_ref))

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        if req.model not in self._names:
            raise NotFound(
                f"The model '{req.model}' does not exist or is not an embedding model; use '{self.model_id}'.",
                code="model_not_found",
                param="model",
            )
        texts, arrays = req.texts, req.token_ids
        count = len(texts or arrays)
        if count > MAX_INPUTS:
            raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request (got {count})", param="input")
        found = await (self.embedder.embed_ids(arrays) if arrays else self.embedder.embed(texts))
        vectors = np.asarray(found, dtype="<f4")
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise InvalidRequest(
                f"dimensions must be {vectors.shape[1]} for {self.model_id} (got {req.dimensions})",
                param="dimensions",
            )
        data = [
            EmbeddingData(
                index=i,
                embedding=base64.b64encode(v.tobytes()).decode()
                if req.encoding_format == "base64"
                else v.tolist(),
            )
            for i, v in enumerate(vectors)
        ]
        # Token arrays are counted exactly; for texts, whitespace words approximate tokens (only quotas
        # read this, and they need no more precision).
        tokens = sum(len(ids) for ids in arrays) or sum(len(t.split()) or 1 for t in texts)
        return EmbeddingResponse(data=data, model=self.model_id, usage=Usage.of(tokens, 0))
