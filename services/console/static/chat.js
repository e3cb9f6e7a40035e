// Playground: ask the base model or one of your adapters, with or without your knowledge base;
// tokens stream in as they are generated and the answer's sources are listed beside it.
import { api, streamChat } from "./api.js";
import { fmt, h, notice, replace } from "./dom.js";

const MAX_TURNS = 6; // earlier turns are dropped: small models have small context windows

export async function render(main) {
  const models = await api("/v1/models");
  const state = { history: [], controller: null, selected: null };

  const modelSelect = h(
    "select",
    { id: "chat-model", name: "model" },
    models.data.map((m, i) =>
      h("option", { value: m.id }, i === 0 ? `Base model — ${m.id}` : `Adapter ${m.id}${m.version ? ` (${m.version})` : ""}`),
    ),
  );
  const rag = h("input", { id: "chat-rag", type: "checkbox", checked: true });
  const topK = h("input", { id: "chat-topk", type: "number", min: "1", max: "20", value: "4", inputmode: "numeric" });
  const maxTokens = h("input", { id: "chat-max", type: "number", min: "1", max: "2048", value: "200", inputmode: "numeric" });
  const log = h("div", { id: "chat-log", class: "messages", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const empty = h(
    "div",
    { class: "chat-empty" },
    h("h2", {}, "Ask your expert"),
    h("p", { class: "muted" }, "With “Use knowledge base” on, the answer is grounded in your documents and lists its sources on the right."),
  );
  log.append(empty);
  const input = h("textarea", {
    id: "chat-input", name: "message", rows: "2", placeholder: "Ask a question… (Enter to send, Shift+Enter for a new line)",
  });
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", hidden: true }, "Stop");
  const errorBox = h("div", { class: "notice", role: "alert", hidden: true });
  const sourcesList = h("ol", { class: "citations", id: "citations" });
  const passage = h("div", { class: "passage", id: "passage", "aria-live": "polite" });
  const sourcesHint = h("p", { class: "muted" }, "Sources of the latest answer appear here.");

  const form = h(
    "form",
    { class: "composer", onsubmit: (e) => { e.preventDefault(); ask(); } },
    h("label", { for: "chat-input", class: "sr-only" }, "Message"),
    input,
    h("div", { class: "composer-actions" }, stop, send),
  );
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => state.controller && state.controller.abort());

  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("div", { class: "field" }, h("label", { for: "chat-model" }, "Model"), modelSelect),
    h("div", { class: "field check" }, rag, h("label", { for: "chat-rag" }, "Use knowledge base")),
    h("div", { class: "field narrow" }, h("label", { for: "chat-topk" }, "Passages"), topK),
    h("div", { class: "field narrow" }, h("label", { for: "chat-max" }, "Max tokens"), maxTokens),
    h("button", {
      type: "button", class: "secondary", onclick: () => {
        state.history = [];
        replace(log, empty);
        replace(sourcesList);
        replace(passage);
        sourcesHint.hidden = false;
        input.focus();
      },
    }, "New chat"),
  );
  rag.addEventListener("change", () => { topK.disabled = !rag.checked; });

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Playground")),
    h(
      "div",
      { class: "playground" },
      h("section", { class: "card chat-card", "aria-label": "Chat" }, toolbar, log, errorBox, form),
      h(
        "aside",
        { class: "card sources", "aria-labelledby": "sources-title" },
        h("h2", { id: "sources-title" }, "Sources"),
        sourcesHint,
        sourcesList,
        passage,
      ),
    ),
  );
  input.focus();

  function showSources(question, citations) {
    sourcesHint.hidden = citations.length > 0;
    replace(passage);
    replace(
      sourcesList,
      citations.map((c, i) =>
        h(
          "li",
          {},
          h(
            "button",
            {
              type: "button", class: "citation", "data-testid": "citation",
              onclick: (e) => openPassage(question, c, i + 1, e.currentTarget),
            },
            h("span", { class: "cite-n" }, `[${i + 1}]`),
            h("span", { class: "cite-title" }, c.title || c.document_id),
            h("span", { class: "cite-score" }, `score ${fmt.num(c.score, 3)}`),
          ),
        ),
      ),
    );
    if (!citations.length) sourcesList.append(h("li", { class: "muted" }, "No passages were used."));
  }

  async function openPassage(question, c, n, button) {
    for (const b of sourcesList.querySelectorAll("button")) b.removeAttribute("aria-pressed");
    button.setAttribute("aria-pressed", "true");
    replace(passage, h("p", { class: "muted" }, "Loading passage…"));
    try {
      // The citation names the chunk; the search API returns its text (own tenant only).
      const res = await api("/v1/kb/search", {
        method: "POST",
        body: { query: question, top_k: 50, filter: { document_id: c.document_id } },
      });
      const hit = res.results.find((r) => r.chunk_id === c.chunk_id) || res.results[0];
      if (!hit) throw new Error("the passage is no longer in the knowledge base");
      replace(
        passage,
        h("h3", {}, `[${n}] ${hit.title || hit.document_id}`),
        h("p", { class: "meta" }, `document ${hit.document_id}`, hit.heading_path ? ` · ${hit.heading_path}` : "", ` · score ${fmt.num(c.score, 3)}`),
        h("blockquote", { class: "passage-text", "data-testid": "passage-text" }, hit.text),
      );
    } catch (err) {
      replace(passage, h("p", { class: "notice error", role: "alert" }, `Could not load the passage: ${err.message}`));
    }
  }

  async function ask() {
    const question = input.value.trim();
    if (!question || state.controller) return;
    notice(errorBox, "");
    if (empty.isConnected) empty.remove();
    input.value = "";
    log.append(h("div", { class: "msg user" }, h("div", { class: "who" }, "You"), h("div", { class: "bubble" }, question)));
    const text = h("div", { class: "bubble streaming", "data-testid": "answer" });
    const meta = h("div", { class: "msg-meta" });
    const answer = h("div", { class: "msg assistant" }, h("div", { class: "who" }, modelSelect.value), text, meta);
    log.append(answer);
    log.scrollTop = log.scrollHeight;

    state.controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    const messages = [...state.history.slice(-2 * MAX_TURNS), { role: "user", content: question }];
    const request = {
      model: modelSelect.value,
      messages,
      max_tokens: Number(maxTokens.value) || 200,
      rag: rag.checked ? { top_k: Number(topK.value) || 4 } : false,
    };
    let content = "";
    const started = performance.now();
    try {
      const result = await streamChat(request, {
        signal: state.controller.signal,
        onDelta: (delta) => {
          content += delta;
          text.textContent = content; // text only: model output is never parsed as HTML
          log.scrollTop = log.scrollHeight;
        },
      });
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      const usage = result.usage ? ` · ${result.usage.completion_tokens} tokens` : "";
      replace(meta, `${secs} s${usage}`, result.finish_reason === "length" ? " · stopped at max tokens" : "");
      if (rag.checked) {
        const chips = result.citations.map((c, i) =>
          h("button", {
            type: "button", class: "chip", title: c.title || c.document_id,
            onclick: () => {
              showSources(question, result.citations);
              sourcesList.querySelectorAll("button")[i].click();
            },
          }, `[${i + 1}] ${c.title || c.document_id}`),
        );
        if (chips.length) answer.append(h("div", { class: "chips", "aria-label": "Sources" }, chips));
        showSources(question, result.citations);
      }
      state.history.push({ role: "user", content: question }, { role: "assistant", content });
    } catch (err) {
      if (err.name === "AbortError") replace(meta, "stopped");
      else {
        answer.remove();
        notice(errorBox, err.message, "error");
        input.value = question;
      }
    } finally {
      text.classList.remove("streaming");
      if (!content && text.isConnected) text.textContent = "(no text)";
      state.controller = null;
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
  }

  return () => state.controller && state.controller.abort();
}
