"""Eval sets: JSONL, one question per line, validated with every problem reported at once.

A line looks like::

    {"question": "What is the RS-1 basic charge?", "answer": "$11.40",
     "reference_documents": ["residential-tariff"], "tags": ["tariff"]}

``answer`` (a short gold answer), ``reference_documents`` (ids of the documents that contain
the answer, as the knowledge base names them; file stems work) and ``tags`` (for per-tag
metrics) are optional. ``expect`` states what fine-tuning is for, beyond the facts::

    "expect": {"format": "^.+ \\(Schedule R\\)\\.$", "required_terms": ["Schedule R"],
               "forbidden_terms": ["I'm sorry"]}

(``format`` is a regular expression the stripped answer must match — ``re.search``, so anchor it;
``json_schema`` instead asks for a JSON answer valid against the schema). Blank lines are
skipped. Lines are read by ``adept.jsonl``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from adept.config.base import StrictModel, format_validation_error
from adept.errors import ConfigError, NotFound
from adept.jsonl import LineProblem, iter_objects, read_bytes

MAX_QUESTIONS = 10_000


class Expectations(StrictModel):
    """What an answer must look like, whatever its facts: a format, terms it must or must not use."""

    format: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="Regular expression the stripped answer must match (`re.search`; anchor it with ^ and $).",
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the answer, parsed as JSON, must be valid against."
    )
    required_terms: list[str] = Field(
        default_factory=list, description="Terms the answer must contain (case-insensitive)."
    )
    forbidden_terms: list[str] = Field(
        default_factory=list, description="Terms the answer must not contain (case-insensitive)."
    )

    @field_validator("format")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"format is not a valid regular expression: {e}") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(v).check_schema(v)
            except jsonschema.SchemaError as e:
                raise ValueError(f"json_schema is not a valid JSON Schema: {e.message}") from None
        return v

    @field_validator("required_terms", "forbidden_terms")
    @classmethod
    def _terms(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("terms must not be blank")
        return list(dict.fromkeys(s.strip() for s in v))

    @model_validator(mode="after")
    def _one_format(self) -> Expectations:
        if self.format is not None and self.json_schema is not None:
            raise ValueError("give format or json_schema, not both")
        if not (self.format or self.json_schema or self.required_terms or self.forbidden_terms):
            raise ValueError("expect is empty: give format, json_schema, required_terms or forbidden_terms")
        return self


class EvalItem(StrictModel):
    """One question of an eval set."""

    question: str = Field(
        min_length=1, max_length=8000, description="The question, as a tenant's user asks it."
    )
    answer: str | None = Field(None, max_length=8000, description="Short gold answer for EM / F1 / ROUGE-L.")
    reference_documents: list[str] = Field(
        default_factory=list, description="Ids of the knowledge-base documents that contain the answer."
    )
    tags: list[str] = Field(
        default_factory=list, description="Labels for per-tag metrics (`tariff`, `safety`)."
    )
    id: str | None = Field(
        None, max_length=200, description="Optional question id (default: the line number)."
    )
    expect: Expectations | None = Field(
        None, description="Format and vocabulary the answer must show (what fine-tuning teaches)."
    )

    @field_validator("question")
    @classmethod
    def _question(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question must not be blank")
        return v.strip()

    @field_validator("answer")
    @classmethod
    def _answer(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("answer must not be blank (leave it out instead)")
        return v.strip() if v is not None else None

    @field_validator("reference_documents", "tags")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("entries must not be blank")
        return list(dict.fromkeys(s.strip() for s in v))


class EvalSet(StrictModel):
    """A validated eval set, with where it came from."""

    source: str = Field(description="File the set was read from.")
    items: list[EvalItem] = Field(description="The questions, in file order.")

    @property
    def has_answers(self) -> bool:
        return any(i.answer for i in self.items)

    @property
    def has_references(self) -> bool:
        return any(i.reference_documents for i in self.items)

    @property
    def has_expectations(self) -> bool:
        return any(i.expect for i in self.items)

    def with_tag(self, tag: str) -> EvalSet:
        """The questions tagged ``tag`` (a held-out split, a topic); an unknown tag is a ``ConfigError``."""
        items = [i for i in self.items if tag in i.tags]
        if not items:
            raise ConfigError(f"{self.source}: no question is tagged {tag!r} (tags: {', '.join(self.tags)})")
        return EvalSet(source=f"{self.source}#{tag}", items=items)

    @property
    def tags(self) -> list[str]:
        return sorted({t for i in self.items for t in i.tags})


def parse_eval_lines(text: str | bytes, source: str = "<eval set>") -> EvalSet:
    """Parse JSONL text; raise one ``ConfigError`` listing every bad line (``line N: ...``)."""
    items: list[EvalItem] = []
    problems: list[LineProblem] = []
    data = text.encode("utf-8") if isinstance(text, str) else text
    for lineno, obj in iter_objects(data, source=source, problems=problems):
        try:
            item = EvalItem.model_validate(obj)
        except ValidationError as e:
            problems.extend(LineProblem(lineno, msg) for msg in format_validation_error(e))
            continue
        items.append(item if item.id else item.model_copy(update={"id": str(lineno)}))
    errors = [str(p) for p in sorted(problems, key=lambda p: p.line)]
    if not items and not errors:
        errors.append("no questions: the file is empty")
    if len(items) > MAX_QUESTIONS:
        errors.append(f"too many questions: {len(items)} (limit {MAX_QUESTIONS})")
    if errors:
        n = len(errors)
        raise ConfigError(f"{source}: invalid eval set ({n} problem{'s' * (n != 1)}):", errors)
    return EvalSet(source=source, items=items)


def load_eval_set(path: str | Path) -> EvalSet:
    """Read and validate an eval set file (a local path or an fsspec URI)."""
    try:
        data = read_bytes(path)
    except NotFound:
        raise ConfigError(f"eval set not found: {path}") from None
    return parse_eval_lines(data, str(path))


# -- an evaluation file of a fine-tuning job (eval-gated promotion) --------------------------------
# The metrics a promotion can compare that need more than questions: gold answers, or `expect`.
ANSWER_METRICS = ("exact_match", "contains", "f1", "rouge_l")
EXPECT_METRICS = ("combined", "format", "terms")


def check_evaluation_file(
    data: str | bytes,
    source: str = "evaluation_file",
    *,
    metric: str | None = None,
    known_metrics: Iterable[str] | None = None,
) -> EvalSet:
    """The evaluation set in ``data``, or one ``InvalidRequest`` (``param="evaluation_file"``) naming every bad line.

    With ``metric``, the set must be able to measure it (``combined``/``format``/``terms`` need
    questions with ``expect``; answer metrics need gold answers); with ``known_metrics``, it must
    be one of them. The job owner (``adept.finetuning.service.FineTuning``) checks a job's
    evaluation file with this at create, before anything is stored.
    """
    from adept.errors import InvalidRequest

    try:
        eval_set = parse_eval_lines(data, source)
    except ConfigError as e:  # its message lists every bad line
        raise InvalidRequest(e.message, param="evaluation_file") from None
    if metric is None:
        return eval_set
    if known_metrics is not None and metric not in set(known_metrics):
        raise InvalidRequest(f"unknown promotion metric {metric!r}; choose from {', '.join(known_metrics)}")
    if metric in EXPECT_METRICS and not eval_set.has_expectations:
        raise InvalidRequest(
            f"{source}: promotion compares {metric!r}, but no question states `expect` (format, terms)",
            param="evaluation_file",
        )
    if metric in ANSWER_METRICS and not eval_set.has_answers:
        raise InvalidRequest(
            f"{source}: promotion compares {metric!r}, but no question has a gold `answer`",
            param="evaluation_file",
        )
    return eval_set
