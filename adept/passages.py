"""How a passage is shown to a model: its sentences, and the source line after its text.

One owner for both sides of the serving path and of what trains for it: the retrieval service
splits chunks into these sentences to rank them (``highlights``), the gateway and the demo's
fine-tuning examples render passages with ``with_source``, and the LLM replica strips the source
line again where an answer is copied from a passage (``services/llm/extractive.py``).
"""

from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by space (a decimal point is not), unless the word before
# it is an abbreviation or an initial.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ABBREVIATION_RE = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|vs|approx|incl|no|nos|fig|figs|sec|art|dr|mr|mrs|ms|st|inc|ltd|co|corp)\.|"
    r"\b[A-Z]\.)$",
    re.IGNORECASE,
)
# A list item's marker ("- ", "* ", "1. ", "2) "), left out of the sentence it introduces.
_MARKER_RE = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+")
_HEADING_RE = re.compile(r"[ \t]*#{1,6}[ \t]")

# How a passage names its document after its text (``with_source``): text first, since a small model
# copies the start of a passage.
SOURCE_MARK = "\n(Source: "


def with_source(text: str, title: str | None) -> str:
    """A passage as the model reads it: its text, then its document's title as its source."""
    return f"{text}{SOURCE_MARK}{title})" if title else text


def without_source(passage: str) -> str:
    """``passage`` without the source line ``with_source`` added."""
    cut = passage.rfind(SOURCE_MARK)
    return passage[:cut] if cut >= 0 and passage.endswith(")") else passage


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text``, in order.

    Paragraphs (blank-line separated) and list items are split first, then sentence ends within
    them; a sentence wrapped over several lines stays one span. Headings, list markers and
    surrounding whitespace are left out, so ``text[start:end]`` is the sentence itself.
    """
    items: list[list[int]] = []  # [start, end] of each paragraph or list item
    pos = 0
    new_item = True
    for line in text.split("\n"):
        start, pos = pos, pos + len(line) + 1
        if not line.strip():
            new_item = True
            continue
        if _HEADING_RE.match(line):
            new_item = True
            continue
        marker = _MARKER_RE.match(line)
        if marker or new_item or not items:
            items.append([start + (marker.end() if marker else 0), start + len(line)])
        else:
            items[-1][1] = start + len(line)  # a wrapped line continues the item
        new_item = False
    spans: list[tuple[int, int]] = []
    for a, b in items:
        body = text[a:b]
        cut = 0
        ends = [m for m in _SENTENCE_END_RE.finditer(body) if not _ABBREVIATION_RE.search(body[: m.start()])]
        for m in [*ends, None]:
            end = m.start() if m is not None else len(body)
            piece = body[cut:end]
            lead = len(piece) - len(piece.lstrip())
            if piece.strip():
                spans.append((a + cut + lead, a + cut + len(piece.rstrip())))
            if m is not None:
                cut = m.end()
    return spans


def sentence_text(text: str, span: tuple[int, int]) -> str:
    """The sentence at ``span`` on one line (a sentence wrapped in the source is joined with spaces)."""
    return " ".join(text[span[0] : span[1]].split())
