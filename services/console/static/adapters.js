// Adapters: every version of each of your adapters, its manifest, loss curve and eval metrics.
import { api, blobUrl } from "./api.js";
import { fmt, h, replace, table } from "./dom.js";

const METRIC_LABELS = {
  train_loss: "Train loss",
  eval_loss: "Eval loss",
  eval_perplexity: "Eval perplexity",
  label_tokens: "Label tokens",
  train_seconds: "Train seconds",
  restarts: "Restarts",
};

export async function render(main) {
  const urls = [];
  const res = await api("/v1/adapters");
  const detail = h("section", { class: "card", id: "adapter-detail", "aria-live": "polite" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Adapters"),
      h("p", { class: "muted" }, "LoRA / QLoRA adapters fine-tuned for you. Use one in the playground or as `model` in the API.")),
  );
  if (!res.data.length) {
    main.append(h("section", { class: "card" }, h("p", { class: "empty" },
      "No adapters yet. Fine-tune one on the Fine-tuning page (or through /v1/fine_tuning/jobs).")));
    return null;
  }
  const rows = [];
  for (const a of res.data) {
    for (const v of [...a.versions].reverse()) {
      const m = v.manifest;
      const serving = a.serving_version === v.version;
      rows.push([
        h("button", { type: "button", class: "link", onclick: () => show(a, v) }, `${a.name}@${v.version}`),
        serving ? h("span", { class: "badge ok" }, a.active_version ? "active (pinned)" : "serving") : "",
        m.method || "–",
        m.rank === null || m.rank === undefined ? "–" : String(m.rank),
        fmt.num(m.metrics && m.metrics.eval_loss, 3),
        fmt.date(m.created_at),
      ]);
    }
  }
  main.append(
    h("section", { class: "card" }, table(null, ["Version", "", "Method", "Rank", "Eval loss", "Created"], rows)),
    detail,
  );
  const first = res.data[0];
  await show(first, first.versions[first.versions.length - 1]);

  async function show(adapter, v) {
    const m = v.manifest;
    const img = h("div", { class: "chart" }, h("p", { class: "muted" }, v.has_loss_curve ? "Loading loss curve…" : "No loss curve was published with this version."));
    const metrics = Object.entries(m.metrics || {}).filter(([k]) => k !== "run_id");
    replace(
      detail,
      h("h2", {}, `${adapter.name}@${v.version}`),
      h(
        "div",
        { class: "grid-2" },
        h("div", {},
          h("h3", {}, "Manifest"),
          h("dl", { class: "kv" },
            kv("Id", v.id),
            kv("Base model", m.base_model),
            kv("Method", m.method),
            kv("LoRA rank / alpha", `${m.rank ?? "–"} / ${m.alpha ?? "–"}`),
            kv("Target modules", (m.target_modules || []).join(", ") || "–"),
            kv("Steps", fmt.int(m.steps)),
            kv("Tokens seen", fmt.int(m.tokens_seen)),
            kv("Training time", m.duration_s ? `${fmt.num(m.duration_s, 1)} s` : "–"),
            kv("Dataset", m.dataset_hash || "–"),
            kv("Created", fmt.date(m.created_at)),
            kv("Description", m.description || "–")),
          h("h3", {}, "Metrics"),
          metrics.length
            ? h("dl", { class: "kv" }, metrics.map(([k, val]) => kv(METRIC_LABELS[k] || k, typeof val === "number" ? fmt.num(val, 4) : String(val))))
            : h("p", { class: "muted" }, "No metrics recorded.")),
        h("div", {}, h("h3", {}, "Loss curve"), img),
      ),
    );
    if (v.has_loss_curve) {
      try {
        const url = await blobUrl(`/v1/adapters/${encodeURIComponent(adapter.name)}/${encodeURIComponent(v.version)}/loss_curve.png`);
        urls.push(url);
        replace(img, h("img", { src: url, alt: `Training and eval loss by step for ${adapter.name}@${v.version}` }));
      } catch (err) {
        replace(img, h("p", { class: "notice error" }, `Could not load the loss curve: ${err.message}`));
      }
    }
  }

  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}

function kv(key, value) {
  return [h("dt", {}, key), h("dd", {}, value === null || value === undefined ? "–" : value)];
}
