"""Sentence-transformers embeddings: model loaded once, batched, L2-normalized (so IP = cosine)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from adept.errors import ConfigError


def resolve_embedding_path(ref: str) -> Path:
    """Path of a local sentence-transformers model for ``ref`` (``bundled:...``, a directory or a cached id)."""
    from adept.models import resolve_embedding_model

    return Path(resolve_embedding_model(ref))


class Embedder:
    """One sentence-transformers model per process.

    Args:
        model: Model reference (see ``resolve_embedding_path``).
        device: ``cpu`` or ``cuda``.
        batch_size: Texts per forward pass.
    """

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_embedding_path(model)
        try:
            self.model = SentenceTransformer(str(path), device=device)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load embedding model {model!r} from {path}: {e}") from None
        self.ref = model
        self.batch_size = batch_size
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.tokenizer = self.model.tokenizer
        # Special tokens ([CLS]/[SEP]) count against max_seq_length but are not chunk text.
        specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        self.max_tokens = int(self.model.max_seq_length) - specials
        # torch modules are not safe to call from several threads at once (Serve runs sync methods in threads).
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> Any:
        """``float32`` array ``(len(texts), dim)`` of unit vectors."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype(np.float32, copy=False)
