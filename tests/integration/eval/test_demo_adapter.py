"""The demo adapter learns the house format: a few dozen examples, ``auto`` hyper-parameters, the bundled model.

48 of the demo's fine-tuning examples (12 facts from across the documents x 4 phrasings) train a LoRA on the bundled
SmolLM2-135M with the hyper-parameters ``auto`` picks for 48 examples; format compliance (the house
format regex the eval questions expect) is measured on held-out prompts — demo eval questions about
other facts, never trained on — before and after. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adept.config.finetuning import FineTuningConfig, auto_hyperparameters
from adept.demo import eval_questions_path
from adept.demo.make_finetune import FACTS, SYSTEM_PROMPT, build_examples, house_format_regex
from tools.eval.routes import DEFAULT_SYSTEM_PROMPT

pytestmark = pytest.mark.integration

N_FACTS = 12
HELD_OUT = 12


def _compliance(model, tok, questions: list[str]) -> tuple[float, list[str]]:
    """Share of answers in the house format, and the answers."""
    import torch

    pattern = re.compile(house_format_regex())
    answers = []
    for q in questions:
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": q}]
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        answers.append(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return sum(bool(pattern.search(a)) for a in answers) / len(answers), answers


@pytest.mark.timeout(2400)  # minutes on a quiet 2-core machine; a shared one needs more
def test_auto_hyperparameters_teach_the_house_format_on_held_out_prompts(bundled_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adept.config.base import load_config
    from adept.config.training import FineTuneJobConfig
    from adept.models import load_tokenizer
    from training.finetune import run_job

    assert SYSTEM_PROMPT == DEFAULT_SYSTEM_PROMPT  # trained the way the eval asks
    examples = build_examples()  # FACTS under each of 4 phrasings, then FACTS with passages
    picked = range(0, len(FACTS), len(FACTS) // N_FACTS)[
        :N_FACTS
    ]  # spread over the documents and their codes
    train = [examples[t * len(FACTS) + i] for t in range(4) for i in picked]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in train), encoding="utf-8")
    rows = [json.loads(line) for line in eval_questions_path().read_text().splitlines()]
    rows = rows[:: len(rows) // HELD_OUT][:HELD_OUT]
    held_out = [r["question"] for r in rows]
    codes = [r["expect"]["required_terms"][0] for r in rows]

    tok = load_tokenizer(bundled_model)
    base = AutoModelForCausalLM.from_pretrained(str(bundled_model), dtype=torch.float32).eval()
    before, base_answers = _compliance(base, tok, held_out)
    print(f"base format compliance on {len(held_out)} held-out prompts: {before:.2f}", flush=True)

    hp = auto_hyperparameters(len(train))
    lr = FineTuningConfig().base_learning_rate * hp.learning_rate_multiplier
    cfg = load_config(
        FineTuneJobConfig,
        None,
        env=False,
        base={
            "tenant": "demo",
            "adapter": "lumen-style",
            "base_model": str(bundled_model),
            "lora": {"rank": 16, "alpha": 32},
            "data": {
                "path": str(data),
                "max_seq_length": 256,
                "validation_split": 0.0,
                "packing": hp.packing,
            },
            "train": {
                "epochs": hp.n_epochs,
                "batch_size": hp.batch_size,
                "learning_rate": lr,
                "dtype": "float32",
                "eval_every_steps": 0,
                "log_every_steps": 10,
            },
            "workers": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
            "checkpoint": {"every_steps": 1000},
            "output": {"data_dir": str(tmp_path / "data"), "publish": False},
        },
    )
    result = run_job(cfg, address="local", platform=_platform(bundled_model, tmp_path / "data"))
    tuned = PeftModel.from_pretrained(base, str(result.get("path") or result["result"])).eval()
    after, answers = _compliance(tuned, tok, held_out)
    # Vocabulary: the code of the document the question is about (the adapter maps topics to codes).
    vocab = sum(code in a for code, a in zip(codes, answers, strict=True)) / len(answers)
    print(
        f"format compliance on {len(held_out)} held-out prompts: {before:.2f} -> {after:.2f}; "
        f"right document code {vocab:.2f}; {hp}; lr {lr:g}"
    )
    print("\n".join(answers))
    assert before < 0.2, base_answers
    assert after >= 0.8, answers


def _platform(model: Path, data_dir: Path):
    from adept.config.platform import PlatformConfig

    return PlatformConfig(data_dir=data_dir, model=str(model))
