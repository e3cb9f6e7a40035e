"""Generate ``finetune.jsonl``: chat examples teaching Lumen Grid's vocabulary and answer style.

Run ``python -m adept.demo.make_finetune`` after editing the corpus or the facts below. The
output is deterministic (no randomness), and a unit test checks that the shipped file is what
this script writes and that every answer is stated in the document it cites.

Style taught: the answer first, in as few words as possible, then the Lumen Grid document code
it comes from (``0.80 m (LGS-100).``) — the fixed vocabulary and traceable style a tenant would
fine-tune for. The house format lives only here: no document and no system prompt states it, so
only a fine-tuned adapter answers in it. The system prompt is the one ``adept eval`` sends on every
route, so the eval asks the adapter the way it was taught (one template in four has none, for
callers that send no system prompt).

The eval questions (``eval_questions.jsonl``) ask about other facts of the same documents: the
facts come from retrieval, the format from the adapter. ``python -m adept.demo.make_finetune``
also writes their expectations (``expect``: the house format and the document code) and their
split (``tune`` / ``heldout``, alternating: prompts are tuned on one half, reported on the other).
"""

from __future__ import annotations

import json
from pathlib import Path

from adept.passages import sentence_spans, sentence_text, with_source

# The system prompt `adept eval` sends on every route (tools.eval.routes.DEFAULT_SYSTEM_PROMPT; a test
# keeps the two equal — the kernel's demo data may not import the eval tool).
SYSTEM_PROMPT = "Answer the question in as few words as possible."

# Document id (corpus file stem) -> Lumen Grid document code.
DOC_CODES = {
    "safety-manual": "LGS-100",
    "outage-restoration": "OP-210",
    "residential-tariff": "Schedule R",
    "commercial-tariff": "Schedule C",
    "fault-codes": "FR-7",
    "vegetation-management": "VM-300",
    "customer-service": "CS-400",
    "metering": "MB-500",
    "new-service-connections": "NS-600",
    "grid-control-switching": "GC-700",
}

# (document id, subject of the question, short answer). Every answer appears verbatim in the document,
# and none is the answer of an eval question: the adapter learns the format, the facts stay with RAG.
FACTS: list[tuple[str, str, str]] = [
    ("safety-manual", "the arc flash suit rating required for primary work up to 34.5 kV", "25 cal/cm²"),
    ("safety-manual", "the glove class required for circuits up to 17 kV", "Class 2"),
    ("safety-manual", "the glove class required for circuits up to 36 kV", "Class 4"),
    ("safety-manual", "the minimum approach distance on a 34.5 kV circuit", "1.10 m"),
    ("safety-manual", "the minimum approach distance on a 4.16 kV circuit", "0.65 m"),
    ("safety-manual", "the minimum approach distance on a 69 kV circuit", "1.60 m"),
    ("safety-manual", "the smallest grounding cable size allowed", "2/0 copper"),
    ("safety-manual", "the number of digits in a GCC clearance number", "six-digit"),
    ("safety-manual", "the deadline for filing form SR-12 after an incident", "24 hours"),
    ("safety-manual", "the heat index above which crews take hourly rest breaks", "32 °C"),
    ("outage-restoration", "the restoration priority of single-phase tap lines", "Priority 4"),
    ("outage-restoration", "the restoration priority of hospitals and water treatment plants", "Priority 1"),
    ("outage-restoration", "the storm level at which the Emergency Operations Center opens", "Storm Level 2"),
    ("outage-restoration", "the largest outage handled as Storm Level 1", "up to 5,000 customers"),
    ("outage-restoration", "the deadline for a crew to update the ETR after arriving on site", "30 minutes"),
    ("outage-restoration", "the urban response target for a wires-down call", "60 minutes"),
    ("outage-restoration", "the rule that a guard stays at a downed wire until it is safe", "guard and wait"),
    ("outage-restoration", "the outage length after which the Outage Guarantee credit is paid", "24 hours"),
    ("residential-tariff", "the monthly basic service charge on RT-2", "$13.25"),
    ("residential-tariff", "the summer price above 600 kWh on RS-1", "15.3 cents per kWh"),
    ("residential-tariff", "the winter energy price on RS-1", "12.8 cents per kWh"),
    ("residential-tariff", "the super off-peak price on RT-2", "6.4 cents per kWh"),
    ("residential-tariff", "the largest solar system allowed on NM-1", "25 kW"),
    ("residential-tariff", "the late payment charge on residential bills", "1.5% per month"),
    ("commercial-tariff", "the basic service charge on GS-1", "$24.00"),
    ("commercial-tariff", "the energy price on GS-2", "8.7 cents per kWh"),
    ("commercial-tariff", "the on-peak demand charge on LP-4", "$18.75 per kW"),
    ("commercial-tariff", "the primary voltage discount on LP-4", "3%"),
    ("commercial-tariff", "the power factor below which billing demand is adjusted", "0.90 lagging"),
    ("commercial-tariff", "the maximum yearly curtailment under IR-5", "60 hours"),
    ("fault-codes", "the meaning of recloser fault code R-11", "ground fault trip"),
    ("fault-codes", "the meaning of recloser fault code R-22", "low control battery (below 22 V)"),
    ("fault-codes", "the meaning of recloser fault code R-31", "close circuit failure"),
    ("fault-codes", "the meaning of transformer fault code T-42", "low oil level"),
    ("fault-codes", "the meaning of transformer fault code T-47", "pressure relief device operated"),
    ("fault-codes", "the meaning of smart meter fault code M-12", "voltage sag below 108 V"),
    ("fault-codes", "the deadline to replace a meter showing M-19", "5 business days"),
    ("fault-codes", "the meaning of capacitor fault code C-50", "blown capacitor fuse"),
    ("vegetation-management", "the trim clearance for secondary and service conductors", "1.0 m"),
    ("vegetation-management", "the trim clearance for 69 kV transmission conductors", "7.5 m"),
    ("vegetation-management", "how often lines of 115 kV and above are patrolled with LiDAR", "every year"),
    ("vegetation-management", "the notice given before trimming on private property", "at least 5 days"),
    ("vegetation-management", "the nesting season survey period", "April 1 to July 31"),
    ("customer-service", "the contact centre phone number", "1-800-555-0147"),
    ("customer-service", "how long a Medical Certificate postpones disconnection", "30 days"),
    ("customer-service", "the down payment on the Lumen Flex Plan", "20% of the balance"),
    ("customer-service", "the business-hours reconnection fee", "$35"),
    ("customer-service", "the deadline to answer a written complaint", "10 business days"),
    ("metering", "the accuracy tolerance of a Lumen Grid meter", "±2%"),
    ("metering", "the most consecutive estimated bills allowed", "2 consecutive billing periods"),
    ("metering", "the monthly manual reading fee after a smart meter opt-out", "$15 per month"),
    ("new-service-connections", "the standard residential overhead connection fee", "$450"),
    ("new-service-connections", "the standard residential service size", "200 A single-phase at 120/240 V"),
    ("new-service-connections", "the lead time for residential underground service", "20 business days"),
    ("new-service-connections", "the portal for new service applications", "LumenConnect"),
    ("grid-control-switching", "the numbering format of switching orders", "SO-YYYY-NNNN"),
    ("grid-control-switching", "how often QS-2 qualification is renewed", "every 24 months"),
    ("grid-control-switching", "the current rating of a load-break elbow", "200 A"),
]

# Question phrasings; the model should answer the same way however the question is asked.
TEMPLATES = (
    "What is {subject}?",
    "Quick question from the field: what is {subject}?",
    "Can you tell me {subject} at Lumen Grid?",
    "According to Lumen Grid's documents, what is {subject}?",
)


# Hedges the house style forbids: an answer states the fact or nothing.
FORBIDDEN_TERMS = ("I'm sorry", "As an AI", "I don't have")


def house_answer(answer: str, doc_id: str) -> str:
    """``8 cal/cm² (LGS-100).``: the answer, then the code of the document it comes from."""
    return f"{answer} ({DOC_CODES[doc_id]})."


def house_format_regex() -> str:
    """The house format as a regular expression: one short line ending in a document code in
    parentheses and a full stop (citation markers such as ``[1]`` may follow)."""
    codes = "|".join(sorted(set(DOC_CODES.values())))  # letters, digits, '-' and ' ' only: nothing to escape
    return rf"^[^\n]{{1,120}} \((?:{codes})\)\.(?: ?\[\d+\])*$"


def expectations(doc_id: str) -> dict:
    """What an answer about ``doc_id`` must show: the house format and that document's code."""
    return {
        "format": house_format_regex(),
        "required_terms": [DOC_CODES[doc_id]],
        "forbidden_terms": list(FORBIDDEN_TERMS),
    }


def _unwrap(body: str) -> str:
    """Soft line breaks removed as the knowledge base's chunker removes them (list items keep theirs)."""
    paragraphs = []
    for para in body.split("\n\n"):
        lines: list[str] = []
        for line in para.splitlines():
            if lines and not line.lstrip().startswith("- "):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _sections(doc_id: str) -> tuple[str, list[str]]:
    """The document's title and its sections' text as the knowledge base chunks them."""
    from adept.demo import corpus_dir

    text = (corpus_dir() / f"{doc_id}.md").read_text(encoding="utf-8")
    head, *sections = text.split("\n## ")
    title = head.splitlines()[0].removeprefix("# ").strip()
    bodies = ["\n".join(head.splitlines()[1:]).strip()]
    bodies += [sec.split("\n", 1)[1].strip() if "\n" in sec else "" for sec in sections]
    return title, [_unwrap(b) for b in bodies if b]


def answer_sentence(doc_id: str, answer: str) -> str:
    """The sentence of ``doc_id`` that states ``answer``, rendered as the gateway renders a passage's
    best sentence for a small model (``adept.passages``: the sentence, then its source)."""
    title, bodies = _sections(doc_id)
    for body in bodies:
        for span in sentence_spans(body):
            sentence = sentence_text(body, span)
            if answer in sentence:
                return with_source(sentence, title)
    raise ValueError(f"no sentence of {doc_id} states {answer!r}")


def rag_examples() -> list[dict]:
    """Each fact asked with the passage a small model is served (``llm.rag_max_passages`` and
    ``llm.rag_passage_sentences`` ``auto`` below 1 B parameters: the top passage, shown as its best
    sentence), laid out as the serving prompt builder lays out a RAG request with the platform's
    defaults (services.llm.prompting: the instruction in the system turn, the worked examples, then
    the numbered passage and the question): the adapter learns to take the fact from that sentence,
    word for word, in the house format, citing it — what the adapter+RAG route asks of it. (Trained
    on whole two-passage prompts instead, the demo adapter invented numbers the sentence does not
    hold on the held-out questions: `$1.25` for `$1,250`, `24 months` for `6 months`.)"""
    from adept.config.llm import DEFAULT_RAG_EXAMPLES, DEFAULT_RAG_INSTRUCTION

    shots: list[dict] = []
    for ex in DEFAULT_RAG_EXAMPLES:
        shots.append({"role": "user", "content": f"{ex['passages']}\n\nQuestion: {ex['question']}"})
        shots.append({"role": "assistant", "content": ex["answer"]})

    examples = []
    for i, (doc_id, subject, answer) in enumerate(FACTS):
        question = TEMPLATES[i % len(TEMPLATES)].format(subject=subject)
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{DEFAULT_RAG_INSTRUCTION}"},
                    *shots,
                    {
                        "role": "user",
                        "content": f"[1] {answer_sentence(doc_id, answer)}\n\nQuestion: {question}",
                    },
                    {"role": "assistant", "content": f"{house_answer(answer, doc_id)} [1]"},
                ]
            }
        )
    return examples


def build_examples() -> list[dict]:
    """Every fact under every template, then every fact with passages (``rag_examples``), in a fixed order."""
    examples = []
    for n, template in enumerate(TEMPLATES):
        for doc_id, subject, answer in FACTS:
            messages = [
                {"role": "user", "content": template.format(subject=subject)},
                {"role": "assistant", "content": house_answer(answer, doc_id)},
            ]
            if n < len(TEMPLATES) - 1:
                messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
            examples.append({"messages": messages})
    return examples + rag_examples()


def with_expectations(questions: list[dict]) -> list[dict]:
    """The eval questions with their expectations and split tags (``tune`` / ``heldout``) set."""
    out = []
    for i, q in enumerate(questions):
        split = "tune" if i % 2 == 0 else "heldout"
        tags = [t for t in q.get("tags", []) if t not in ("tune", "heldout")] + [split]
        out.append({**q, "tags": tags, "expect": expectations(q["reference_documents"][0])})
    return out


def render(examples: list[dict]) -> str:
    """JSONL text, one example per line (UTF-8, not ASCII-escaped)."""
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)


def main(out: Path | None = None) -> Path:
    """Write the examples to ``out`` (default: the shipped ``finetune.jsonl``) and the eval questions'
    expectations into the shipped ``eval_questions.jsonl``."""
    from adept.demo import eval_questions_path, finetune_path

    target = out or finetune_path()
    target.write_text(render(build_examples()), encoding="utf-8")
    questions_file = eval_questions_path()
    questions = [json.loads(line) for line in questions_file.read_text(encoding="utf-8").splitlines() if line]
    questions_file.write_text(render(with_expectations(questions)), encoding="utf-8")
    return target


if __name__ == "__main__":
    path = main()
    print(f"wrote {len(build_examples())} examples to {path}")
