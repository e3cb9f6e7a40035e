// Knowledge base: upload files (with progress), list documents with chunk counts, delete, search.
import { api, uploadFiles } from "./api.js";
import { confirmDialog, fmt, h, notice, replace, table } from "./dom.js";

const ACCEPT = ".md,.markdown,.txt,.html,.htm,.pdf,.docx,.json,.jsonl";

export async function render(main) {
  const listBox = h("div", { id: "kb-documents" });
  const status = h("div", { class: "notice", role: "status", hidden: true });
  const progress = h("progress", { id: "kb-progress", max: "100", value: "0", hidden: true, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "muted", "aria-live": "polite" });
  const fileInput = h("input", { id: "kb-files", type: "file", multiple: true, accept: ACCEPT, class: "sr-only" });
  const drop = h(
    "label",
    { for: "kb-files", class: "dropzone", tabindex: "0", "data-testid": "dropzone" },
    h("strong", {}, "Choose files"),
    " or drop them here",
    h("span", { class: "muted block" }, "Markdown, text, HTML, PDF, Word, JSON/JSONL records"),
  );
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      fileInput.click();
    }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload([...e.dataTransfer.files]);
  });
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) upload([...fileInput.files]);
    fileInput.value = "";
  });

  const query = h("input", { id: "kb-query", type: "search", placeholder: "Search your documents…", autocomplete: "off" });
  const results = h("div", { id: "kb-results", "aria-live": "polite" });
  const searchForm = h(
    "form",
    { class: "search-row", role: "search", onsubmit: (e) => { e.preventDefault(); search(); } },
    h("label", { for: "kb-query", class: "sr-only" }, "Search query"),
    query,
    h("button", { type: "submit", class: "primary" }, "Search"),
  );

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Knowledge base"),
      h("p", { class: "muted" }, "Documents the playground and the API retrieve from when RAG is on.")),
    h(
      "div",
      { class: "grid-2" },
      h(
        "section",
        { class: "card", "aria-labelledby": "kb-upload-title" },
        h("h2", { id: "kb-upload-title" }, "Upload"),
        fileInput,
        drop,
        h("div", { class: "progress-row" }, progress, progressText),
        status,
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "kb-search-title" },
        h("h2", { id: "kb-search-title" }, "Search"),
        searchForm,
        results,
      ),
    ),
    h("section", { class: "card", "aria-labelledby": "kb-docs-title" }, h("h2", { id: "kb-docs-title" }, "Documents"), listBox),
  );

  async function refresh() {
    const res = await api("/v1/kb/documents");
    const docs = res.documents;
    const total = docs.reduce((n, d) => n + d.chunks, 0);
    replace(
      listBox,
      h("p", { class: "muted" }, `${fmt.int(docs.length)} documents · ${fmt.int(total)} chunks`),
      table(
        null,
        ["Title", "Document id", "Chunks", ""],
        docs.map((d) => [
          h("span", { class: "doc-title" }, d.title),
          h("code", {}, d.id),
          fmt.int(d.chunks),
          h("button", {
            type: "button", class: "danger small", "aria-label": `Delete ${d.title}`,
            onclick: () => remove(d),
          }, "Delete"),
        ]),
        "No documents yet: upload some to ground the playground's answers.",
      ),
    );
  }

  async function upload(files) {
    const size = files.reduce((n, f) => n + f.size, 0);
    progress.hidden = false;
    progress.value = 0;
    replace(progressText, `Uploading ${files.length} file${files.length > 1 ? "s" : ""} (${fmt.bytes(size)})…`);
    notice(status, "");
    try {
      const res = await uploadFiles(files, (loaded, total, sent) => {
        progress.value = Math.round((loaded / total) * 100);
        if (sent) replace(progressText, "Uploaded; chunking and embedding…");
      });
      progress.value = 100;
      const created = res.documents.map((d) => `${d.title} (${d.status || "ok"}, ${d.chunks} chunks)`);
      const skipped = (res.errors || []).map((e) => `${e.source}: ${e.reason}`);
      notice(status, [`Ingested ${res.documents.length}: ${created.join("; ")}`, ...skipped.map((s) => `Skipped ${s}`)].join(" — "),
        skipped.length ? "warn" : "ok");
      replace(progressText, "Done.");
    } catch (err) {
      const details = (err.errors || []).map((e) => `${e.source}: ${e.reason}`).join("; ");
      notice(status, details ? `${err.message}` : `Upload failed: ${err.message}`, "error");
      replace(progressText, "");
    } finally {
      setTimeout(() => { progress.hidden = true; }, 1500);
      await refresh().catch(() => {});
    }
  }

  async function remove(doc) {
    const ok = await confirmDialog("Delete document?", `“${doc.title}” (${doc.id}) and its ${doc.chunks} chunks will be removed from the knowledge base.`);
    if (!ok) return;
    try {
      await api(`/v1/kb/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
      notice(status, `Deleted ${doc.title}.`, "ok");
    } catch (err) {
      notice(status, `Could not delete: ${err.message}`, "error");
    }
    await refresh();
  }

  async function search() {
    const q = query.value.trim();
    if (!q) return;
    replace(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const res = await api("/v1/kb/search", { method: "POST", body: { query: q, top_k: 8 } });
      if (!res.results.length) {
        replace(results, h("p", { class: "empty" }, "No passages found."));
        return;
      }
      replace(
        results,
        h("ol", { class: "hits" }, res.results.map((r) =>
          h(
            "li",
            { class: "hit", "data-testid": "hit" },
            h("div", { class: "hit-head" },
              h("span", { class: "hit-title" }, r.title || r.document_id),
              h("span", { class: "score", title: "relevance score" }, fmt.num(r.score, 3))),
            h("p", { class: "meta" }, r.document_id, r.heading_path ? ` · ${r.heading_path}` : ""),
            h("p", { class: "hit-text" }, r.text),
          ))),
      );
    } catch (err) {
      replace(results, h("p", { class: "notice error", role: "alert" }, err.message));
    }
  }

  await refresh();
}
