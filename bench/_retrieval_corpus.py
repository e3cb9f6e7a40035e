"""The generated retrieval corpus: equipment sheets with part codes, and questions that paraphrase them."""

from __future__ import annotations

import json
import random

EQUIPMENT = [
    "pump",
    "valve",
    "transformer",
    "breaker",
    "compressor",
    "relay",
    "boiler",
    "turbine",
    "chiller",
    "inverter",
]
SUPPLIERS = ["Norvik", "Halden", "Strand", "Ostera", "Kalmar", "Vesta", "Lumen", "Arden"]
SITES = ["north plant", "harbour depot", "east substation", "river station", "hill yard", "central works"]


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str]]]:
    """``(records, questions)``: Markdown equipment sheets and paraphrased questions ``(question, doc id)``."""
    rng = random.Random(seed)
    records, questions = [], []
    for i in range(n_docs):
        kind = rng.choice(EQUIPMENT)
        code = f"{kind[:2].upper()}-{1000 + i}"
        months, torque, temp = rng.randint(2, 36), rng.randint(10, 900), rng.randint(40, 180)
        supplier, site, spare = rng.choice(SUPPLIERS), rng.choice(SITES), f"SP-{rng.randint(10000, 99999)}"
        text = (
            f"# {kind.title()} {code} maintenance sheet\n\n"
            f"## Inspection\n\nThe {kind} {code} at the {site} must be inspected every {months} months by a "
            f"certified technician, who records the readings in the asset log.\n\n"
            f"Vibration above the alarm band on {code} means the inspection is brought forward.\n\n"
            f"## Limits\n\nThe {kind} {code} must not run above {temp} degrees Celsius; at that point the "
            f"controller trips it and the control room is alerted.\n\n"
            f"Flange bolts on {code} are tightened to {torque} newton metres in a star pattern.\n\n"
            f"## Parts\n\nThe seal kit for {code} is spare part {spare}, supplied by {supplier}, and two kits "
            f"are kept in stock at the {site}.\n\n"
            f"## Safety\n\nBefore opening {code}, isolate it, lock it out and prove it dead; a second person "
            f"checks the isolation.\n"
        )
        doc_id = f"sheet-{i}"
        records.append({"id": doc_id, "title": f"{kind.title()} {code}", "text": text})
        if i % max(1, n_docs // 40) == 0:  # ~160 questions, spread over the corpus
            questions += [
                (f"How frequently does {code} need an inspection?", doc_id),
                (f"What is the highest temperature {code} may operate at?", doc_id),
                (f"Which torque applies to the bolts of {code}?", doc_id),
                (f"Who supplies the seal kit of {code} and what is its part number?", doc_id),
            ]
    return records, questions


def demo_questions() -> tuple[list[dict], list[tuple[str, str]]]:
    """The demo corpus (``adept/demo``) and its questions ``(question, reference document id)``."""
    from adept.demo import corpus_dir, eval_questions_path

    records = [{"id": p.stem, "text": p.read_text()} for p in sorted(corpus_dir().glob("*.md"))]
    qs = []
    for line in eval_questions_path().read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            qs += [(q["question"], q["reference_documents"][0])] if q.get("reference_documents") else []
    return records, qs
