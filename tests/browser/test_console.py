"""The console as a new user meets it, in headless Chromium against the real embedded platform.

Sign in, ask a RAG question and open a citation, upload a document and find it, never see
another tenant's data, render a ``<script>`` document as text, and (admin) create and delete
a tenant. Screenshots of every page land in tests/browser/artifacts/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OTHER_MARKER, OTHER_TENANT, shot, sign_in, why_skip

pytestmark = [pytest.mark.browser, pytest.mark.skipif(why_skip() is not None, reason=f"{why_skip()}")]

QUESTION = "What arc rating must clothing have for Lumen Grid work on secondary circuits below 600 V?"


def _no_page_errors(page) -> None:
    # CSP violations and script errors show up as console errors.
    assert not page.errors, page.errors


def test_sign_in_keeps_the_key_in_session_storage_only(page, platform) -> None:
    page.goto(platform.url + "/ui")
    shot(page, "01-sign-in")
    page.get_by_label("API key").fill("adept-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not accepted").wait_for()
    sign_in(page, platform, platform.demo_key)
    assert platform.demo_key not in page.url
    assert page.evaluate("sessionStorage.getItem('adept.key')") == platform.demo_key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.locator("#who").filter(has_text="Lumen Grid").wait_for()
    page.errors.clear()  # the bad key's 401 was expected
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('adept.key')") is None


def test_rag_answer_streams_with_citations(page, platform, demo_adapter) -> None:
    sign_in(page, platform, platform.demo_key)
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send").click()
    citation = page.get_by_test_id("citation").first
    citation.wait_for()
    assert page.get_by_test_id("answer").first.text_content().strip()
    titles = page.locator("#citations").text_content()
    assert "Safety" in titles or "safety" in titles, titles
    citation.click()
    passage = page.get_by_test_id("passage-text")
    passage.wait_for()
    assert len(passage.text_content()) > 40
    shot(page, "02-playground-rag")
    # The adapter is offered as a model.
    options = page.locator("#chat-model option").all_text_contents()
    assert any(demo_adapter in o for o in options), options
    _no_page_errors(page)


def test_upload_find_and_script_renders_as_text(page, platform, tmp_path) -> None:
    doc = tmp_path / "crew-notes.md"
    doc.write_text(
        "# Crew notes <script>window.__pwned = 1</script>\n\n"
        'Crews check the Pelican-7 recloser <img src=x onerror="window.__pwned=2"> every Tuesday.\n',
        encoding="utf-8",
    )
    sign_in(page, platform, platform.demo_key)
    page.get_by_role("link", name="Knowledge base").click()
    page.locator("#kb-documents table").wait_for()
    page.set_input_files("#kb-files", str(doc))
    page.get_by_role("status").filter(has_text="Ingested 1").wait_for()
    row = page.locator("#kb-documents tr", has_text="crew-notes")
    row.wait_for()
    page.get_by_label("Search query").fill("When do crews check the Pelican-7 recloser?")
    page.get_by_role("button", name="Search", exact=True).click()
    hit = page.get_by_test_id("hit").filter(has_text="Pelican-7").first
    hit.wait_for()
    text = hit.text_content()
    assert "<img src=x" in text or "<script>" in text or "Pelican-7" in text
    page.wait_for_timeout(300)  # give an injected handler (there must be none) the chance to run
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script").count() == 1  # only the console's own module
    shot(page, "03-knowledge-base")
    _no_page_errors(page)


def test_another_tenants_data_is_nowhere(page, platform) -> None:
    sign_in(page, platform, platform.demo_key)
    page.get_by_role("link", name="Knowledge base").click()
    page.locator("#kb-documents table").wait_for()
    page.get_by_label("Search query").fill(OTHER_MARKER)
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("#kb-results .hits, #kb-results .empty").first.wait_for()
    for link in ("Knowledge base", "Adapters", "Usage", "Playground"):
        page.get_by_role("link", name=link).click()
        page.locator("#main h1").wait_for()
        page.wait_for_load_state("networkidle")
        body = page.locator("body").text_content()
        assert OTHER_MARKER not in body and "Globex" not in body and OTHER_TENANT not in body, link
    # The tenant's key cannot open the admin views either.
    status = page.evaluate(
        "fetch('/admin/tenants', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('adept.key')}})"
        ".then(r => r.status)"
    )
    assert status == 403


def test_adapters_and_usage_pages(page, platform, demo_adapter) -> None:
    sign_in(page, platform, platform.demo_key)
    page.get_by_role("link", name="Adapters").click()
    page.locator("#adapter-detail img").wait_for()
    assert page.locator("#adapter-detail img").evaluate("img => img.naturalWidth") > 100
    assert "1.3500" in page.locator("#adapter-detail").text_content()  # eval loss from the manifest
    shot(page, "04-adapters")
    page.get_by_role("link", name="Usage").click()
    page.get_by_role("meter").first.wait_for()
    assert page.get_by_role("meter").count() == 8  # requests, tokens, documents, adapters + fine-tuning
    shot(page, "05-usage")
    _no_page_errors(page)


def test_admin_creates_and_deletes_a_tenant(page, platform, demo_adapter) -> None:
    sign_in(page, platform, platform.admin_key)
    page.locator("#tenant-list table").wait_for()
    page.get_by_label("Name", exact=True).fill("initech")
    page.get_by_label("Display name").fill("Initech <b>bold</b>")
    page.get_by_role("button", name="Create tenant").click()
    key = page.locator("#new-key-value")
    key.wait_for()
    assert re.fullmatch(r"adept-\S{20,}", key.input_value())
    row = page.locator("#tenant-list tr", has_text="initech")
    row.wait_for()
    assert "Initech <b>bold</b>" in row.text_content()  # shown as typed, not as markup
    shot(page, "06-admin-tenants-created")
    page.get_by_role("button", name="I have stored it").click()
    assert page.locator("#new-key-value").count() == 0  # the key is gone from the page

    page.get_by_label("Tenant", exact=True).select_option("demo")
    page.locator("#tenant-adapters", has_text="lumen-style").wait_for()

    page.get_by_role("button", name="Delete tenant initech").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    shot(page, "07-admin-delete-confirm")
    dialog.get_by_role("button", name="Delete tenant").click()
    page.get_by_role("status").filter(has_text="Deleted tenant initech").wait_for()
    # The list re-renders after the status line: wait for it instead of sampling once.
    expect(page.locator("#tenant-list tr", has_text="initech")).to_have_count(0)

    page.get_by_role("link", name="Replicas & jobs").click()
    page.locator("#main table").first.wait_for()
    page.locator("text=answered").wait_for()
    shot(page, "08-admin-replicas-jobs")
    _no_page_errors(page)


TRAINING = [
    {
        "messages": [
            {"role": "user", "content": q},
            {"role": "assistant", "content": "Feeder seven is isolated."},
        ]
    }
    for q in (
        "Status of feeder seven?",
        "Is feeder seven isolated?",
        "Feeder 7 state?",
        "What about feeder seven?",
    )
]


def test_finetuning_page_upload_start_live_curve_cancel_and_chat(page, platform, tmp_path) -> None:
    import json

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(TRAINING[0]) + "\n{broken\n", encoding="utf-8")
    good = tmp_path / "feeder.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in TRAINING * 3), encoding="utf-8")
    sign_in(page, platform, platform.demo_key)
    page.get_by_role("link", name="Fine-tuning").click()
    page.locator("#ft-files").wait_for()

    page.set_input_files("#ft-file", str(bad))  # refused, naming the line
    page.get_by_test_id("line-error").filter(has_text="line 2: not valid JSON").wait_for()
    page.errors.clear()  # the refused upload's 400 was expected
    page.set_input_files("#ft-file", str(good))
    page.get_by_role("status").filter(has_text="every line valid").wait_for()
    page.locator("#ft-files tr", has_text="feeder.jsonl").wait_for()

    # A long job: its loss curve grows live, then it is cancelled.
    page.get_by_label("Epochs").fill("50")
    page.get_by_role("button", name="Start fine-tuning").click()
    curve = page.get_by_test_id("loss-curve")
    expect(curve).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=240_000)
    first = int(curve.get_attribute("data-points"))
    expect(curve).not_to_have_attribute("data-points", str(first), timeout=120_000)  # more steps arrived
    shot(page, "09-finetuning-live-curve")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
    expect(page.locator("#ft-status")).to_have_text("cancelled", timeout=30_000)

    # A short one: it succeeds and the page offers a chat with the model it made.
    page.get_by_label("Epochs").fill("3")
    page.get_by_label("LR multiplier").fill("20")
    page.get_by_label("Model name suffix").fill("feeder")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator("#ft-status")).to_have_text("succeeded", timeout=300_000)
    page.get_by_label(re.compile(r"Message to ft:[^:]+:[^:]+:feeder:")).fill("Status of feeder seven?")
    page.locator("#ft-try-send").click()
    expect(page.get_by_test_id("ft-answer")).not_to_be_empty(timeout=60_000)
    shot(page, "10-finetuning-succeeded")
    assert page.locator("#ft-jobs tr", has_text="cancelled").count() == 1
    _no_page_errors(page)
