// Usage against quotas, and eval reports (`adept eval` output opened from this computer).
import { api } from "./api.js";
import { fmt, h, meter, notice, replace, table } from "./dom.js";

export async function renderUsage(main) {
  const box = h("section", { class: "card", "aria-labelledby": "usage-title" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Usage"),
      h("p", { class: "muted" }, "Your use against your quotas. Rates are counted over the last minute.")),
    box,
  );
  async function refresh() {
    const u = await api("/v1/usage");
    const q = u.quotas;
    replace(
      box,
      h("h2", { id: "usage-title" }, u.display_name || u.tenant),
      h("p", { class: "muted" }, `Tenant ${u.tenant}`, u.enforced ? "" : " · rate quotas are not enforced on this server"),
      h("div", { class: "meters" },
        meter("Requests per minute", q.requests_per_minute.used, q.requests_per_minute.limit),
        meter("Tokens per minute", q.tokens_per_minute.used, q.tokens_per_minute.limit),
        meter("Documents", q.documents.used, q.documents.limit),
        meter("Adapters", q.adapters.used, q.adapters.limit),
        q.files ? meter("Fine-tuning files", q.files.used, q.files.limit) : null,
        q.file_storage_bytes ? meter("File storage (bytes)", q.file_storage_bytes.used, q.file_storage_bytes.limit) : null,
        q.finetune_jobs ? meter("Unfinished fine-tuning jobs", q.finetune_jobs.used, q.finetune_jobs.limit) : null,
        q.trained_tokens_per_day ? meter("Tokens trained (24 h)", q.trained_tokens_per_day.used, q.trained_tokens_per_day.limit) : null),
      h("button", { type: "button", class: "secondary", onclick: () => refresh() }, "Refresh"),
    );
  }
  await refresh();
}

export async function renderEvals(main) {
  const urls = [];
  const status = h("div", { class: "notice", role: "status", hidden: true });
  const out = h("div", { id: "eval-report" });
  const input = h("input", { id: "eval-files", type: "file", multiple: true, accept: ".json,.png", class: "sr-only" });
  input.addEventListener("change", () => open([...input.files]));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Eval reports"),
      h("p", { class: "muted" }, "`adept eval` compares base, RAG, fine-tuned and RAG + fine-tuned on your questions and recommends a route. Open its report here: the files are read in this browser and are not uploaded.")),
    h("section", { class: "card" },
      input,
      h("label", { for: "eval-files", class: "dropzone", tabindex: "0" },
        h("strong", {}, "Open report.json"), " (and its metrics.png / latency.png)",
        h("span", { class: "muted block" }, "From the --out directory of adept eval (default eval-report/)")),
      status),
    out,
  );

  async function open(files) {
    notice(status, "");
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    const json = files.find((f) => f.name.endsWith(".json"));
    const charts = files.filter((f) => f.type === "image/png");
    if (!json) {
      notice(status, "Choose the report.json file (charts are optional).", "error");
      return;
    }
    let report;
    try {
      report = JSON.parse(await json.text());
      if (!report.routes || !report.recommendation) throw new Error("not an adept eval report");
    } catch (err) {
      notice(status, `${json.name}: ${err.message}`, "error");
      return;
    }
    const rec = report.recommendation;
    const metricNames = [...new Set(report.routes.flatMap((r) => Object.keys((r.summary && r.summary.metrics) || {})))];
    const rows = report.routes.map((r) =>
      r.skipped
        ? [r.label, h("span", { class: "muted" }, `skipped: ${r.skipped}`), ...metricNames.slice(1).map(() => ""), "", ""]
        : [
            r.label,
            ...metricNames.map((k) => fmt.num(r.summary.metrics[k] && r.summary.metrics[k].mean, 3)),
            fmt.num(r.summary.latency_s && r.summary.latency_s.p50, 2),
            String(r.summary.errors ?? 0),
          ]);
    const chartNodes = charts.map((f) => {
      const url = URL.createObjectURL(f);
      urls.push(url);
      return h("figure", { class: "chart" }, h("img", { src: url, alt: `Eval chart ${f.name}` }), h("figcaption", {}, f.name));
    });
    replace(
      out,
      h("section", { class: "card recommendation", "aria-labelledby": "rec-title" },
        h("h2", { id: "rec-title" }, rec.label ? `Recommended: ${rec.label}` : "No recommendation"),
        h("p", { class: "muted" }, `${report.questions} questions from ${report.source} · headline metric ${report.headline || "none"}`),
        h("ul", {}, (rec.reasons || []).map((r) => h("li", {}, r)))),
      h("section", { class: "card" }, h("h2", {}, "Routes"),
        table(null, ["Route", ...metricNames, "p50 s", "Errors"], rows)),
      chartNodes.length ? h("section", { class: "card charts" }, h("h2", {}, "Charts"), chartNodes) : null,
    );
  }
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
