"""The first five minutes of ``make run``: one demo question answered with its sources, the commands
to ask more, and the demo tenant's fine-tuning job started in the background.

Everything here goes through the demo tenant's public HTTP API (``/v1/chat/completions``,
``/v1/files``, ``/v1/fine_tuning/jobs``), exactly as a tenant's application would: the fine-tuning
internals may change, the API stays.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from adept.demo import finetune_path

# Asked when `make run` is up: its fact is only in the demo documents (RAG answers it, the bare model
# cannot), and the bundled model, greedy, answers it correctly from them (a question of the `tune`
# half of the demo set: the held-out half stays unseen).
DEMO_QUESTION = "How much is the Lumen Grid Outage Guarantee credit?"
DEMO_ANSWER = "$50"
# The adapter the demo's fine-tuning job produces (the job's `suffix`).
DEMO_ADAPTER_SUFFIX = "lumen-style"
# The longest demo example (a RAG question with its passage's answering sentence, after the RAG prompt's
# worked examples) is 288 tokens with the bundled model's template; the bound leaves room for a longer one.
DEMO_MAX_SEQ_LENGTH = 512


@dataclass
class DemoAnswer:
    question: str
    answer: str
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return DEMO_ANSWER.lower() in self.answer.lower()


def ask_demo_question(client: Any, model: str, question: str = DEMO_QUESTION) -> DemoAnswer:
    """Ask ``question`` with RAG, greedy (``client``: ``adept.admin_client.PlatformHTTP`` with the tenant key)."""
    reply = client.call(
        "POST",
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "rag": True,
            "temperature": 0,
            "max_tokens": 64,
        },
    )
    message = ((reply.get("choices") or [{}])[0]).get("message") or {}
    return DemoAnswer(question, (message.get("content") or "").strip(), list(reply.get("citations") or []))


def ask_more_commands(url: str, key: str, model: str, question: str = DEMO_QUESTION) -> list[tuple[str, str]]:
    """``(how, command)`` pairs: the same question with curl, the openai Python client and ``adept ask``."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}], "rag": True})
    curl = (
        f"curl -s {url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    openai = "\n".join(
        [
            "python - <<'EOF'",
            "from openai import OpenAI",
            f"client = OpenAI(base_url={url + '/v1'!r}, api_key={key!r})",
            f"reply = client.chat.completions.create(model={model!r}, extra_body={{'rag': True}},",
            f"    messages=[{{'role': 'user', 'content': {question!r}}}])",
            "print(reply.choices[0].message.content)",
            "EOF",
        ]
    )
    ask = f"adept ask {shlex.quote(question)}   # anywhere in this project; --no-rag to compare"
    return [("curl", curl), ("openai", openai), ("adept ask", ask)]


def start_demo_finetune(client: Any, model: str) -> dict[str, Any] | None:
    """Start the demo tenant's fine-tuning job on the demo examples, unless one ran or runs already.

    Returns the job (OpenAI's job object), or None when the tenant already has a job that did not
    fail (a restart of ``make run`` does not train the same adapter again).
    """
    jobs = client.call("GET", "/v1/fine_tuning/jobs", params={"limit": 100}).get("data", [])
    if any(j.get("status") not in ("failed", "cancelled") for j in jobs):
        return None
    data = finetune_path().read_bytes()
    uploaded = client.call(
        "POST",
        "/v1/files",
        files=[
            ("file", (finetune_path().name, data, "application/jsonl")),
            ("purpose", (None, b"fine-tune")),
        ],
    )
    return client.call(
        "POST",
        "/v1/fine_tuning/jobs",
        json={
            "model": model,
            "training_file": uploaded["id"],
            "suffix": DEMO_ADAPTER_SUFFIX,
            "seed": 0,
            "method": {
                "type": "supervised",
                # "auto": the job owner chooses from the dataset's size (auto_hyperparameters),
                # packing off for a set this small, as for any tenant's job.
                "supervised": {
                    "hyperparameters": {
                        "n_epochs": "auto",
                        "batch_size": "auto",
                        "learning_rate_multiplier": "auto",
                    }
                },
                # Room for the longest example, and no more.
                "adept": {"max_seq_length": DEMO_MAX_SEQ_LENGTH},
            },
        },
    )
