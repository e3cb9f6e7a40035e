"""Sentence-transformers embeddings: model loaded once, batched, L2-normalized (so IP = cosine)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from adept.errors import ConfigError, InvalidRequest


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
        # What the tokenizer puts around a text ([CLS] ... [SEP]): token arrays get the same frame.
        framed = self.tokenizer("x")["input_ids"]
        bare = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(framed)) if framed[i : i + len(bare)] == bare)
        self._head, self._tail = framed[:at], framed[at + len(bare) :]
        self.vocab_size = len(self.tokenizer)
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

    def embed_ids(self, arrays: list[list[int]]) -> Any:
        """Unit vectors of token arrays of this model's tokenizer, read as given (nothing re-tokenized).

        The tokenizer's special tokens ([CLS] ... [SEP]) frame each array unless it already carries
        them, so ``tokenizer(text)`` and ``tokenizer(text, add_special_tokens=False)`` ids both embed
        exactly as ``text`` does. An id outside the vocabulary or an array over the model's length
        limit is an ``InvalidRequest`` (never truncated: a vector of part of the input is a wrong answer).
        """
        import numpy as np
        import torch

        head, tail = self._head, self._tail
        framed = []
        for i, ids in enumerate(arrays):
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise InvalidRequest(
                    f"input[{i}] holds token id {bad}, outside this model's vocabulary "
                    f"(0..{self.vocab_size - 1}; ids are {self.ref}'s tokenizer's)",
                    param="input",
                )
            has_frame = len(ids) >= len(head) + len(tail) and ids[: len(head)] == head
            if has_frame and (not tail or ids[-len(tail) :] == tail):
                ids = ids[len(head) : len(ids) - len(tail)]
            if len(ids) > self.max_tokens:
                raise InvalidRequest(
                    f"input[{i}] has {len(ids)} tokens, more than this model's limit of {self.max_tokens}",
                    param="input",
                )
            framed.append([*head, *ids, *tail])
        if not framed:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(framed), self.batch_size):
                features = self._features(framed[start : start + self.batch_size])
                out.append(self.model(features)["sentence_embedding"])
        vectors = torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def _features(self, batch: list[list[int]]) -> dict[str, Any]:
        """The model's input dict for id arrays, shaped like its own preprocessing of texts."""
        import torch

        padded = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
        features: dict[str, Any] = {k: v.to(self.model.device) for k, v in padded.items()}
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        for key, value in preprocess(["x"]).items():  # e.g. token_type_ids, modality
            if key not in features:
                features[key] = torch.zeros_like(features["input_ids"]) if torch.is_tensor(value) else value
        return features
