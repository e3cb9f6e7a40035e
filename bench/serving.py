"""Serving: mixed-adapter continuous batching vs a naive one-request-at-a-time server.

8 tenants, each with its own real LoRA adapter (random non-zero weights, PEFT format), send N
requests each; every fourth request asks for the base model instead. All requests arrive at
once. The same model (the bundled SmolLM2-135M-Instruct), prompts and token counts
(``ignore_eos``: every request generates exactly ``max_tokens``) go through:

(a) ``services.llm.engine.Engine``: one decode loop, rows of different adapters in one batch
    (LoRA slots: one gather + batched matmul per layer for every row's adapter), new requests
    merged into the running batch at step boundaries;
(b) the baseline: a PeftModel holding the same adapters that serves requests one by one with
    ``set_adapter`` (``disable_adapter`` for base) and ``generate``.

Reports throughput (generated tokens/s) and its ratio (goal >= 6x), p50/p99 latency and time to
first token (from arrival), and adapter cold-load time. More rows:

- distinct adapters: one batch of 16 rows using 1, 4, 8 or 16 different adapters, tokens/s each
  (vs 1 adapter: flat is the goal, the LoRA product does not loop over adapters);
- cold loads: ten different adapters load, one after another, while a stream runs: the model-thread
  time per load (the copy into a slot; p50, p95 vs the whole load) and the longest gap between two
  tokens of the stream while they load vs its median gap with none loading;
- fairness: one tenant floods the replica (4 x the batch size of requests); once the flood runs,
  three tenants send one request each: a lone tenant, a returning tenant (its previous request
  asked the largest ``max_tokens`` and stopped after one token) and a tenant with a long prompt (a
  third of the window, at most 1024 tokens). Each time to first token is compared with the same request on an idle
  replica (fair share by tokens served + preemption should keep them close);
- constrained decoding: the same batch generated free and with every row under a JSON schema
  (xgrammar masks), tokens/s each;
- memory: the KV cache's peak allocation during the throughput run vs the KV budget (and vs the
  dense worst case, batch size x context window, that a per-row cache of the full window needs).

    python bench/serving.py [--quick] [--requests-per-tenant N] [--max-tokens T] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._common import Figure, percentile, print_table, write_result

REPO = Path(__file__).resolve().parents[1]
TENANTS = 8
DISTINCT = (1, 4, 8, 16)  # adapters mixed in one batch (the distinct-adapters row)
COLD_LOADS = 10
QUESTIONS = [
    "What should a line crew check before restoring power after a storm?",
    "Explain what a transformer does on the distribution grid.",
    "How is a residential electricity tariff usually structured?",
    "Which protective equipment does a lineworker wear near energized lines?",
    "Why do utilities trim trees near power lines?",
    "What does a circuit breaker do when a fault occurs?",
    "How can a customer read their electricity meter?",
    "What is the difference between voltage and current?",
]


def make_adapters(model, dest: Path, n: int) -> dict[str, Path]:
    """``n`` real LoRA adapters for ``model`` (random, non-zero B so they change outputs), saved as PEFT dirs."""
    import torch
    from peft import LoraConfig, get_peft_model

    out = {}
    for i in range(n):
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=16,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
        )
        peft_model = get_peft_model(copy.deepcopy(model), config)
        # Small random B: outputs change, yet the model still writes text.
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.002)
        peft_model.save_pretrained(dest / f"t{i}")
        out[f"tenant{i}/expert@v1"] = dest / f"t{i}"
    return out


def workload(adapter_ids: list[str], per_tenant: int) -> list[tuple[str, str]]:
    """(adapter id or "" for base, question) in arrival order: tenants interleaved, every 4th request base."""
    jobs = []
    for r in range(per_tenant):
        for t, adapter_id in enumerate(adapter_ids):
            k = r * len(adapter_ids) + t
            jobs.append(("" if k % 4 == 3 else adapter_id, QUESTIONS[(t + r) % len(QUESTIONS)]))
    return jobs


async def run_engine(engine, jobs, max_tokens: int) -> tuple[float, list[float], list[float], int]:
    from services.llm.protocol import GenerateRequest

    t0 = time.perf_counter()

    async def one(adapter_id: str, question: str) -> tuple[float, float, int]:
        req = GenerateRequest(
            messages=[{"role": "user", "content": question}],
            max_tokens=max_tokens,
            temperature=0,
            ignore_eos=True,
        )
        first, tokens = None, 0
        async for chunk in engine.generate(req, adapter_id):
            first = first or time.perf_counter() - t0
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return time.perf_counter() - t0, first, tokens

    results = await asyncio.gather(*(one(a, q) for a, q in jobs))
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results)


async def run_fairness(
    engine, adapter_ids: list[str], max_tokens: int, flood_size: int
) -> dict[str, tuple[float, float]]:
    """TTFT (alone, under another tenant's flood) of: a lone tenant, a returning tenant, a long prompt.

    The returning tenant's previous request asked the largest ``max_tokens`` and stopped after
    one token (fair share must charge the token served, not the reservation); the long-prompt
    tenant's prompt is a third of the context window (at most 1024 tokens).
    """
    from services.llm.protocol import GenerateRequest

    long_question = " ".join(QUESTIONS * 200)
    long_question = engine.tokenizer.decode(
        engine.prompts.encode(long_question)[: min(1024, engine.max_model_len // 3)]
    )

    def req(tenant: str, question: str, tokens: int = max_tokens) -> GenerateRequest:
        return GenerateRequest(
            messages=[{"role": "user", "content": question}],
            max_tokens=tokens,
            temperature=0,
            ignore_eos=True,
            tenant=tenant,
        )

    async def ttft(request: GenerateRequest, adapter_id: str) -> float:
        t0 = time.perf_counter()
        stream = engine.generate(request, adapter_id)
        await stream.__anext__()
        first = time.perf_counter() - t0
        await stream.aclose()
        return first

    lone_adapter, flood_adapter = adapter_ids[0], adapter_ids[1]
    cases = {
        "lone": (req("lone", QUESTIONS[0]), lone_adapter),
        "returning": (req("returning", QUESTIONS[1]), adapter_ids[2]),
        "long prompt": (req("long", long_question), adapter_ids[3]),
    }
    alone = {name: min([await ttft(r, a) for _ in range(3)]) for name, (r, a) in cases.items()}
    # The returning tenant was served one token of a request that reserved the most it could.
    await ttft(req("returning", QUESTIONS[1], engine.max_tokens_limit), adapter_ids[2])
    flooding = [
        engine.generate(req("flood", QUESTIONS[i % len(QUESTIONS)]), flood_adapter) for i in range(flood_size)
    ]
    firsts = [asyncio.ensure_future(s.__anext__()) for s in flooding]
    await asyncio.wait(firsts, return_when=asyncio.FIRST_COMPLETED)  # the flood is running and queued
    await asyncio.sleep(0.2)
    under = {name: await ttft(r, a) for name, (r, a) in cases.items()}
    for f in firsts:
        f.cancel()
    await asyncio.gather(*firsts, return_exceptions=True)
    for s in flooding:
        await s.aclose()
    return {name: (alone[name], under[name]) for name in cases}


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 400},
        "confidence": {"enum": ["low", "medium", "high"]},
        "steps": {"type": "array", "items": {"type": "string", "maxLength": 80}, "maxItems": 6},
    },
    "required": ["answer", "confidence", "steps"],
    "additionalProperties": False,
}


async def run_constrained(engine, adapter_ids: list[str], n: int, max_tokens: int) -> tuple[float, float]:
    """Generated tokens/s of the same batch of ``n`` requests: free text, then every row under a JSON schema."""
    from services.llm.protocol import GenerateRequest, Guided

    async def batch(guided: Guided | None) -> float:
        async def one(i: int) -> int:
            r = GenerateRequest(
                messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                max_tokens=max_tokens,
                temperature=0,
                ignore_eos=guided is None,
                guided=guided,
            )
            last = None
            async for chunk in engine.generate(r, adapter_ids[i % len(adapter_ids)] if i % 4 else ""):
                last = chunk
            return last.usage.completion_tokens

        await one(0)  # warm-up (and, constrained, the grammar's compilation: cached per schema after)
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(n))))
        return tokens / (time.perf_counter() - t0)

    return await batch(None), await batch(Guided(json_schema=SCHEMA))


async def run_distinct(engine, adapter_ids: list[str], rows: int, max_tokens: int) -> dict[int, float]:
    """Generated tokens/s of one batch of ``rows`` requests whose rows use ``k`` distinct adapters, per ``k``."""
    from services.llm.protocol import GenerateRequest

    async def one(i: int, adapter_id: str) -> int:
        req = GenerateRequest(
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=max_tokens,
            temperature=0,
            ignore_eos=True,
        )
        last = None
        async for chunk in engine.generate(req, adapter_id):
            last = chunk
        return last.usage.completion_tokens

    # Warm-up at the measured shape: the first batch of this many rows grows the KV cache.
    await asyncio.gather(*(one(i, adapter_ids[i % max(DISTINCT)]) for i in range(rows)))
    out = {}
    for k in DISTINCT:
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i, adapter_ids[i % k]) for i in range(rows))))
        out[k] = tokens / (time.perf_counter() - t0)
    return out


async def run_cold_loads(engine, dirs: list[Path], warm_tokens: int) -> dict[str, list[float]]:
    """A stream runs; after ``warm_tokens`` tokens, ``len(dirs)`` adapters load one after another.

    Returns the stream's inter-token gaps before the loads began (``idle``) and while they ran
    (``loading``), and per load its whole time (``load``) and its model-thread time (``stall``).
    Should the stream end before the loads do, another starts (gaps never span two streams).
    """
    from services.llm.protocol import GenerateRequest

    req = GenerateRequest(
        messages=[{"role": "user", "content": QUESTIONS[0]}],
        max_tokens=engine.max_tokens_limit,
        temperature=0,
        ignore_eos=True,
        logprobs=0,  # one chunk per token, even one that adds no text yet
    )
    idle: list[float] = []
    loading: list[float] = []
    phase = {"loading": False, "done": False}

    async def stream() -> None:
        while not phase["done"]:
            last = None
            gen = engine.generate(req, "")
            async for _chunk in gen:
                now = time.perf_counter()
                if last is not None:
                    (loading if phase["loading"] else idle).append(now - last)
                last = now
                if phase["done"]:
                    break
                if not phase["loading"] and len(idle) >= warm_tokens:
                    phase["loading"] = True
            await gen.aclose()

    async def loads() -> list[tuple[float, float]]:
        while not phase["loading"]:
            await asyncio.sleep(0.01)
        before = len(engine.load_timings)
        for i, d in enumerate(dirs):
            await engine.load_adapter(f"cold{i}/expert@v1", d)
        phase["done"] = True
        return list(engine.load_timings)[before:]

    _, timings = await asyncio.gather(stream(), loads())
    return {
        "idle": idle,
        "loading": loading,
        "load": [t for t, _ in timings],
        "stall": [m for _, m in timings],
    }


def run_naive(peft_model, tokenizer, jobs, max_tokens: int) -> tuple[float, list[float], list[float], int]:
    """One request at a time, ``set_adapter`` per request; all requests arrived at t0."""
    import contextlib

    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, None

        def put(self, value) -> None:
            self.calls += 1
            if self.calls == 2:  # the first put is the prompt
                self.at = time.perf_counter()

        def end(self) -> None: ...

    device = next(peft_model.parameters()).device
    latencies, ttfts, tokens = [], [], 0
    t0 = time.perf_counter()
    for adapter_id, question in jobs:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
        streamer = FirstToken()
        ctx = peft_model.disable_adapter() if not adapter_id else contextlib.nullcontext()
        if adapter_id:
            peft_model.set_adapter(adapter_id.replace("/", "_").replace("@", "_"))
        with ctx, torch.inference_mode():
            out = peft_model.generate(
                **ids,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens += out.shape[1] - ids["input_ids"].shape[1]
        latencies.append(time.perf_counter() - t0)
        ttfts.append((streamer.at or time.perf_counter()) - t0)
    return time.perf_counter() - t0, latencies, ttfts, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 requests per tenant, 16 tokens (smoke test)")
    ap.add_argument("--requests-per-tenant", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-lora-rank", type=int, default=64, help="slot rank (platform.max_lora_rank)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where supported), float32, bfloat16")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct", help="model reference (adept.models)")
    ap.add_argument(
        "--models-dir", type=Path, default=REPO / ".adept" / "models", help="where bundled models are cached"
    )
    args = ap.parse_args()
    per_tenant, max_tokens = (2, 16) if args.quick else (args.requests_per_tenant, args.max_tokens)

    import torch
    from peft import PeftModel

    from adept.models import load_causal_lm, load_tokenizer, resolve_dtype, resolve_model
    from services.llm.engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def stage(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {what}", flush=True)

    path = resolve_model(args.model, args.models_dir)
    tokenizer = load_tokenizer(path)
    with tempfile.TemporaryDirectory(prefix="adept-bench-serving-") as tmp:
        every = make_adapters(load_causal_lm(path, device="cpu", dtype="float32"), Path(tmp), max(DISTINCT))
        adapters = dict(list(every.items())[:TENANTS])
        jobs = workload(list(adapters), per_tenant)
        stage(f"{len(every)} adapters written; running our engine on {len(jobs)} requests")

        # (a) our engine: cold-load every adapter (timed), then the whole workload at once.
        engine = Engine(
            load_causal_lm(path, device=args.device, dtype=args.dtype),
            tokenizer,
            max_batch_size=args.max_batch_size,
            batch_wait_ms=0,
            max_tokens_limit=max(max_tokens, 64),
            default_max_tokens=max_tokens,
            max_queued_requests=4096,  # the fairness flood must queue, not be refused
            max_queued_per_tenant=4096,
            max_loras=max(DISTINCT),
            max_lora_rank=args.max_lora_rank,
        )

        async def ours():
            loads, stalls = [], []
            for adapter_id, adapter_dir in every.items():
                started = time.perf_counter()
                await engine.load_adapter(adapter_id, adapter_dir)
                loads.append(time.perf_counter() - started)
                stalls.append(engine.last_inject_s)  # the part that holds up the batch
            await run_engine(engine, jobs[:2], 4)  # warm-up (first forward pass allocations)
            result = await run_engine(engine, jobs, max_tokens)
            kv = engine.kv_cache_bytes
            stage(
                f"distinct adapters: one batch of {DISTINCT[-1]} rows using {', '.join(map(str, DISTINCT))} adapters"
            )
            distinct = await run_distinct(engine, list(every), max(DISTINCT), max_tokens)
            stage(
                "fairness: lone, returning and long-prompt tenants' first token under another tenant's flood"
            )
            fair = await run_fairness(engine, list(adapters), max_tokens, 4 * args.max_batch_size)
            constrained: tuple[float | None, float | None] = (None, None)
            if importlib.util.find_spec("xgrammar") is None:
                stage("constrained decoding: NOT MEASURED, xgrammar is not installed here")
            else:
                stage("constrained decoding: the same batch free and under a JSON schema")
                constrained = await run_constrained(
                    engine, list(adapters), min(len(jobs), args.max_batch_size), max_tokens
                )
            await engine.close()
            return (loads, stalls), result, kv, fair, constrained, distinct

        load_before = os.getloadavg()
        (loads, stalls), (a_wall, a_lat, a_ttft, a_tokens), kv, fair, (free_tps, json_tps), distinct = (
            asyncio.run(ours())
        )
        stage(f"cold loads: {COLD_LOADS} adapters load while a stream runs (a fresh engine)")
        cold_engine = Engine(
            load_causal_lm(path, device=args.device, dtype=args.dtype),
            tokenizer,
            batch_wait_ms=0,
            max_tokens_limit=4000,
            max_loras=COLD_LOADS,
            max_lora_rank=args.max_lora_rank,
        )

        async def cold():
            try:
                return await run_cold_loads(
                    cold_engine, list(every.values())[:COLD_LOADS], 10 if args.quick else 30
                )
            finally:
                await cold_engine.close()

        cold_run = asyncio.run(cold())
        _kv_now, kv_peak, kv_budget = kv

        stage(f"ours: {a_tokens} tokens in {a_wall:.1f}s; running the naive baseline")
        # (b) naive: same weights, one request at a time, set_adapter per request.
        base = load_causal_lm(path, device=args.device, dtype=args.dtype)
        names = iter(adapters.items())
        first_id, first_dir = next(names)
        naive = PeftModel.from_pretrained(
            base, first_dir, adapter_name=first_id.replace("/", "_").replace("@", "_")
        )
        for adapter_id, adapter_dir in names:
            naive.load_adapter(adapter_dir, adapter_name=adapter_id.replace("/", "_").replace("@", "_"))
        naive.eval()
        run_naive(naive, tokenizer, jobs[:1], 4)  # warm-up
        b_wall, b_lat, b_ttft, b_tokens = run_naive(naive, tokenizer, jobs, max_tokens)

    stage("done")
    load_after = os.getloadavg()
    dense = args.max_batch_size * engine.max_model_len * engine.kv_bytes_per_token
    assert a_tokens == b_tokens == len(jobs) * max_tokens, (a_tokens, b_tokens)
    a_tps, b_tps = a_tokens / a_wall, b_tokens / b_wall
    ratio = a_tps / b_tps
    dtype = str(resolve_dtype(args.device, args.dtype)).removeprefix("torch.")
    rows = [
        ("continuous mixed-adapter batching", a_tps, percentile(a_lat, 50), percentile(a_lat, 99),
         percentile(a_ttft, 50), percentile(a_ttft, 99), a_wall),
        ("naive: one at a time + set_adapter", b_tps, percentile(b_lat, 50), percentile(b_lat, 99),
         percentile(b_ttft, 50), percentile(b_ttft, 99), b_wall),
    ]  # fmt: skip
    print_table(
        f"{len(jobs)} requests ({TENANTS} tenants x {per_tenant}, 1/4 base), {max_tokens} tokens each, "
        f"{args.model} {dtype} on {args.device}",
        ["server", "tokens/s", "p50 latency s", "p99 latency s", "p50 TTFT s", "p99 TTFT s", "wall s"],
        rows,
    )
    print(f"throughput ratio: {ratio:.2f}x (goal >= 6x)")
    print(f"adapter cold load: mean {sum(loads) / len(loads) * 1000:.0f} ms, max {max(loads) * 1000:.0f} ms")
    print(
        f"  of which on the model thread (holding up the batch): mean {sum(stalls) / len(stalls) * 1000:.0f} ms, "
        f"max {max(stalls) * 1000:.0f} ms"
    )
    gap_idle = percentile(cold_run["idle"], 50)
    gap_max = max(cold_run["loading"])
    stall_p50, stall_p95 = percentile(cold_run["stall"], 50) * 1000, percentile(cold_run["stall"], 95) * 1000
    load_p50, load_p95 = percentile(cold_run["load"], 50) * 1000, percentile(cold_run["load"], 95) * 1000
    print_table(
        f"LoRA slots: one batch of {max(DISTINCT)} rows, {max_tokens} tokens each; {COLD_LOADS} cold loads "
        f"under a running stream (max_lora_rank {args.max_lora_rank})",
        ["figure", "value", "baseline", "baseline value", "ratio"],
        [
            *[(f"tokens/s, {k} distinct adapters in the batch", tps, "tokens/s, 1 adapter", distinct[1],
               f"{tps / distinct[1]:.2f}x") for k, tps in distinct.items()],
            ("cold load on the model thread, p50 (ms)", stall_p50, "whole cold load, p50 (ms)", load_p50,
             f"{stall_p50 / load_p50:.3f}"),
            ("cold load on the model thread, p95 (ms)", stall_p95, "whole cold load, p95 (ms)", load_p95,
             f"{stall_p95 / load_p95:.3f}"),
            (f"longest inter-token gap while {COLD_LOADS} adapters load (ms)", gap_max * 1000,
             "median inter-token gap, none loading (ms)", gap_idle * 1000, f"{gap_max / gap_idle:.2f}x"),
        ],
    )  # fmt: skip
    memory_ratio = kv_peak / kv_budget
    flood = f"{4 * args.max_batch_size}-request flood"
    print_table(
        "fairness, constrained decoding and memory",
        ["figure", "value", "baseline", "baseline value", "ratio"],
        [
            *[(f"{name} tenant TTFT under a {flood} (s)", under, f"{name} tenant TTFT, idle replica (s)", alone,
               f"{under / alone:.2f}x") for name, (alone, under) in fair.items()],
            *([("tokens/s, every row under a JSON schema", json_tps, "tokens/s, the same batch free", free_tps,
                f"{json_tps / free_tps:.2f}x")] if json_tps else []),
            ("peak KV cache (MiB)", kv_peak / 2**20, "KV budget (MiB)", kv_budget / 2**20, f"{memory_ratio:.4f}"),
            ("peak KV cache (MiB)", kv_peak / 2**20,
             f"dense per-row cache of the full window ({args.max_batch_size} x {engine.max_model_len}) (MiB)",
             dense / 2**20, f"{kv_peak / dense:.4f}"),
        ],
    )  # fmt: skip
    print(f"machine load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    where = (
        f"{len(jobs)} requests, {TENANTS} adapters + base, {max_tokens} tokens, {args.model.split(':')[-1]}"
    )
    naive_name = "one request at a time + set_adapter"
    figures = [
        Figure(f"generated tokens/s, mixed-adapter batching ({where})", a_tps, "tokens/s", naive_name, b_tps),
        Figure(f"p50 latency ({where})", percentile(a_lat, 50), "s", naive_name, percentile(b_lat, 50),
               higher_is_better=False, note=f"p99 {percentile(a_lat, 99):.2f} s vs {percentile(b_lat, 99):.2f} s"),
        Figure(f"p50 time to first token ({where})", percentile(a_ttft, 50), "s", naive_name,
               percentile(b_ttft, 50), higher_is_better=False),
        *[Figure(f"{name} tenant TTFT under a {flood} of another tenant", under, "s",
                 f"{name} tenant TTFT, idle replica", alone, higher_is_better=False)
          for name, (alone, under) in fair.items()],
        *([Figure("generated tokens/s with json_schema (same batch)", json_tps, "tokens/s", "free text", free_tps,
                  note="xgrammar logits masking per row")] if json_tps else []),
        *[Figure(f"generated tokens/s, {k} distinct adapters in one batch of {max(DISTINCT)}", tps, "tokens/s",
                 "1 adapter, same batch", distinct[1], note="LoRA slots: gather + batched matmul")
          for k, tps in distinct.items() if k != 1],
        Figure("adapter cold load on the model thread, p50", stall_p50, "ms", "whole cold load, p50", load_p50,
               higher_is_better=False, note=f"p95 {stall_p95:.1f} ms vs {load_p95:.0f} ms; goal p50 < 20 ms"),
        Figure(f"longest inter-token gap of a stream while {COLD_LOADS} adapters load", gap_max * 1000, "ms",
               "median inter-token gap, none loading", gap_idle * 1000, higher_is_better=False),
        Figure("peak KV cache vs the budget", kv_peak / 2**20, "MiB", "KV budget", kv_budget / 2**20, higher_is_better=False),
        Figure("peak KV cache vs a dense cache", kv_peak / 2**20, "MiB",
               f"dense per-row cache of the full window ({args.max_batch_size} x {engine.max_model_len})",
               dense / 2**20, higher_is_better=False),
    ]  # fmt: skip
    write_result(
        "serving",
        {
            "model": args.model,
            "device": args.device,
            "dtype": dtype,
            "tenants": TENANTS,
            "requests": len(jobs),
            "max_tokens": max_tokens,
            "max_batch_size": args.max_batch_size,
            "quick": args.quick,
            "ours": {"tokens_per_s": a_tps, "wall_s": a_wall, "latency_p50_s": percentile(a_lat, 50),
                     "latency_p99_s": percentile(a_lat, 99), "ttft_p50_s": percentile(a_ttft, 50),
                     "ttft_p99_s": percentile(a_ttft, 99)},
            "naive": {"tokens_per_s": b_tps, "wall_s": b_wall, "latency_p50_s": percentile(b_lat, 50),
                      "latency_p99_s": percentile(b_lat, 99), "ttft_p50_s": percentile(b_ttft, 50),
                      "ttft_p99_s": percentile(b_ttft, 99)},
            "throughput_ratio": ratio,
            "fairness_ttft_s": {name: {"idle": alone, "under_flood": under} for name, (alone, under) in fair.items()},
            "constrained_tokens_per_s": {"free": free_tps, "json_schema": json_tps},
            "adapter_cold_load_ms": {"mean": sum(loads) / len(loads) * 1000, "max": max(loads) * 1000},
            "adapter_model_thread_ms": {"mean": sum(stalls) / len(stalls) * 1000, "max": max(stalls) * 1000},
            "max_lora_rank": args.max_lora_rank,
            "distinct_adapters_tokens_per_s": {str(k): v for k, v in distinct.items()},
            "cold_loads": {"count": COLD_LOADS, "model_thread_ms": {"p50": stall_p50, "p95": stall_p95},
                           "whole_load_ms": {"p50": load_p50, "p95": load_p95},
                           "gap_ms": {"idle_median": gap_idle * 1000, "loading_max": gap_max * 1000,
                                      "idle_samples": len(cold_run["idle"]),
                                      "loading_samples": len(cold_run["loading"])}},
            "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        },
        figures=figures,
        dtype=dtype,
    )  # fmt: skip


if __name__ == "__main__":
    main()
