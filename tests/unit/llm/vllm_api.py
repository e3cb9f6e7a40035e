"""The part of vLLM's Python API the vLLM engine uses, read from vLLM's source with ``ast`` (no import).

``vllm_0_29_0_api.json`` beside this file was recorded from the vllm 0.29.0 wheel (the version
``ray[llm]==2.60.0`` pins) with::

    pip download vllm==0.29.0 --no-deps -d /tmp/w && unzip -q /tmp/w/vllm-*.whl 'vllm/*' -d /tmp/w
    python -m tests.unit.llm.vllm_api /tmp/w/vllm > tests/unit/llm/vllm_0_29_0_api.json

The contract tests compare the fake (``fake_vllm.py``) with that record, and the ``gpu`` tier
compares the record with the vllm actually installed, so drift on either side shows.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

# (file under the vllm package, class, members): methods give their signatures, fields their defaults.
WANTED: list[tuple[str, str, list[str]]] = [
    (
        "v1/engine/async_llm.py",
        "AsyncLLM",
        [
            "from_engine_args",
            "generate",
            "abort",
            "add_lora",
            "remove_lora",
            "list_loras",
            "check_health",
            "shutdown",
            "get_tokenizer",
            "errored",
            "dead_error",
        ],
    ),
    ("lora/request.py", "LoRARequest", ["lora_name", "lora_int_id", "lora_path", "base_model_name"]),
    (
        "sampling_params.py",
        "SamplingParams",
        [
            "n",
            "temperature",
            "top_p",
            "seed",
            "stop",
            "stop_token_ids",
            "ignore_eos",
            "max_tokens",
            "skip_special_tokens",
            "include_stop_str_in_output",
            "output_kind",
            "detokenize",
            "presence_penalty",
            "frequency_penalty",
            "logprobs",
            "logit_bias",
            "structured_outputs",
        ],
    ),
    ("sampling_params.py", "RequestOutputKind", ["CUMULATIVE", "DELTA", "FINAL_ONLY"]),
    ("outputs.py", "CompletionOutput", ["index", "text", "token_ids", "finish_reason", "stop_reason"]),
    ("outputs.py", "RequestOutput", ["__init__"]),
    (
        "engine/arg_utils.py",
        "EngineArgs",
        [
            "model",
            "dtype",
            "max_model_len",
            "gpu_memory_utilization",
            "kv_cache_memory_bytes",
            "max_num_seqs",
            "enable_lora",
            "max_loras",
            "max_lora_rank",
            "max_cpu_loras",
            "scheduling_policy",
        ],
    ),
    ("engine/arg_utils.py", "AsyncEngineArgs", []),
    ("v1/engine/exceptions.py", "EngineDeadError", []),
    ("v1/engine/exceptions.py", "EngineGenerateError", []),
    ("exceptions.py", "VLLMClientError", []),
    ("exceptions.py", "VLLMServerError", []),
    ("exceptions.py", "GracefulHTTPError", []),
    ("exceptions.py", "QueueOverflowError", []),
    ("exceptions.py", "VLLMValidationError", []),
    ("lora/peft_helper.py", "PEFTHelper", ["_validate_features", "validate_legal"]),
]


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    a = fn.args
    params = []
    positional = [*a.posonlyargs, *a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = "positional_only" if i < len(a.posonlyargs) else "positional_or_keyword"
        params.append([arg.arg, kind, None if default is None else ast.unparse(default)])
    if a.vararg:
        params.append([a.vararg.arg, "var_positional", None])
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append([arg.arg, "keyword_only", None if default is None else ast.unparse(default)])
    if a.kwarg:
        params.append([a.kwarg.arg, "var_keyword", None])
    decorators = sorted(ast.unparse(d) for d in fn.decorator_list)
    kind = "async" if isinstance(fn, ast.AsyncFunctionDef) else "sync"
    return {"kind": kind, "decorators": decorators, "params": params}


def describe_class(tree: ast.Module, name: str, members: list[str]) -> dict:
    """``{"bases": [...], "members": {member: signature | field default}}`` of class ``name`` in ``tree``."""
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        raise KeyError(f"class {name} not found")
    found: dict[str, object] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in members:
            found[node.name] = _signature(node)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id in members
        ):
            found[node.target.id] = {"field": None if node.value is None else ast.unparse(node.value)}
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in members:
                    found[target.id] = {"field": ast.unparse(node.value)}
    missing = [m for m in members if m not in found]
    if missing:
        raise KeyError(f"{name} has no {missing}")
    return {"bases": [ast.unparse(b) for b in cls.bases], "members": found}


def record(vllm_dir: Path) -> dict:
    """The API record of the vllm package at ``vllm_dir`` (a source tree or an installed package)."""
    out: dict[str, dict] = {}
    trees: dict[str, ast.Module] = {}
    for rel, cls, members in WANTED:
        if rel not in trees:
            trees[rel] = ast.parse((vllm_dir / rel).read_text())
        out[f"{rel}::{cls}"] = describe_class(trees[rel], cls, members)
    return out


if __name__ == "__main__":
    json.dump(record(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
