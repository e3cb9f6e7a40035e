"""A search never sees both versions of a document, nor neither, while it is being replaced."""

from __future__ import annotations

import re
import threading

import pytest

pytestmark = pytest.mark.integration


def test_concurrent_replace_and_search(kb, tenant) -> None:
    versions = [
        [
            {
                "id": "doc",
                "text": f"Version {v}. " + " ".join(f"Pump P-{i} runs at {v}00 rpm." for i in range(40)),
            }
        ]
        for v in (1, 2)
    ]
    kb.ingest_records(tenant, [{"id": "other", "text": "Unrelated note about fences."}])
    kb.ingest_records(tenant, versions[0])
    stop = threading.Event()
    flips = {"n": 0}
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set() and flips["n"] < 12:
                kb.ingest_records(tenant, versions[(flips["n"] + 1) % 2])
                flips["n"] += 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    try:
        while thread.is_alive() or seen < 5:
            hits = [h for h in kb.search(tenant, "pump rpm", top_k=50) if h.document_id == "doc"]
            found = {v for h in hits for v in re.findall(r"at (\d)00 rpm", h.text)}
            generations = {h.chunk_id for h in hits}
            assert hits, "neither version visible"
            assert len(found) <= 1, f"both versions visible: {found}"
            assert len(generations) == len(hits)
            seen += 1
    finally:
        stop.set()
        thread.join()
    assert not errors and flips["n"] >= 2
