// Fine-tuning: upload training data, start a job, watch its loss fall live, cancel it, chat with the result.
// Everything goes through the same OpenAI-compatible routes an SDK uses (/v1/files, /v1/fine_tuning/jobs).
import { ApiError, api, streamChat, uploadTrainingFile } from "./api.js";
import { confirmDialog, fmt, h, notice, replace, table } from "./dom.js";

const ACTIVE = new Set(["validating_files", "queued", "running"]);
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const STATUS_BADGE = { succeeded: "ok", failed: "warn", cancelled: "warn" };

export async function render(main) {
  const state = { files: [], jobs: [], selected: null, timer: null, controller: null, gone: false };

  const fileInput = h("input", { id: "ft-file", type: "file", accept: ".jsonl,.json,.txt", class: "sr-only" });
  const uploadStatus = h("div", { class: "notice", role: "status", hidden: true });
  const lineErrors = h("ol", { class: "line-errors", id: "ft-line-errors", "aria-label": "Invalid lines" });
  const filesBox = h("div", { id: "ft-files" });
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) upload(fileInput.files[0]);
    fileInput.value = "";
  });

  const training = h("select", { id: "ft-training", name: "training_file", required: true });
  const validation = h("select", { id: "ft-validation", name: "validation_file" });
  const suffix = h("input", { id: "ft-suffix", name: "suffix", placeholder: "e.g. support", maxlength: "40", autocomplete: "off" });
  const epochs = h("input", { id: "ft-epochs", type: "number", min: "1", max: "1000", placeholder: "auto", inputmode: "numeric" });
  const lrMult = h("input", { id: "ft-lr", type: "number", min: "0.01", max: "100", step: "any", placeholder: "auto", inputmode: "decimal" });
  const rank = h("input", { id: "ft-rank", type: "number", min: "1", max: "1024", placeholder: "default", inputmode: "numeric" });
  const qlora = h("input", { id: "ft-qlora", type: "checkbox" });
  const start = h("button", { type: "submit", class: "primary", id: "ft-start" }, "Start fine-tuning");
  const startStatus = h("div", { class: "notice", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "ft-form", onsubmit: (e) => { e.preventDefault(); create(); } },
    h("div", { class: "field" }, h("label", { for: "ft-training" }, "Training file"), training),
    h("div", { class: "field" }, h("label", { for: "ft-validation" }, "Validation file (optional)"), validation),
    h("div", { class: "field" }, h("label", { for: "ft-suffix" }, "Model name suffix"), suffix),
    h("div", { class: "row wrap" },
      h("div", { class: "field narrow" }, h("label", { for: "ft-epochs" }, "Epochs"), epochs),
      h("div", { class: "field narrow" }, h("label", { for: "ft-lr" }, "LR multiplier"), lrMult),
      h("div", { class: "field narrow" }, h("label", { for: "ft-rank" }, "LoRA rank"), rank),
      h("div", { class: "field check" }, qlora, h("label", { for: "ft-qlora" }, "QLoRA (4-bit base)"))),
    start,
    startStatus,
  );

  const jobsBox = h("div", { id: "ft-jobs" });
  const detail = h("section", { class: "card", id: "ft-detail", "aria-live": "polite", hidden: true });

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Fine-tuning"),
      h("p", { class: "muted" }, "Teach the model your domain from examples. Each job trains a LoRA adapter on your data; the result is a model you can chat with here and in the API.")),
    h(
      "div",
      { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": "ft-data-title" },
        h("h2", { id: "ft-data-title" }, "Training data"),
        h("p", { class: "muted" }, "JSONL, one example per line: OpenAI chat format {\"messages\": [...]}, ShareGPT, or {\"prompt\", \"completion\"}. Every line is checked before the file is kept."),
        fileInput,
        h("label", { for: "ft-file", class: "dropzone", tabindex: "0" }, h("strong", {}, "Choose a JSONL file"), " to upload"),
        uploadStatus,
        lineErrors,
        filesBox),
      h("section", { class: "card", "aria-labelledby": "ft-new-title" }, h("h2", { id: "ft-new-title" }, "New job"), form),
    ),
    h("section", { class: "card", "aria-labelledby": "ft-jobs-title" }, h("h2", { id: "ft-jobs-title" }, "Jobs"), jobsBox),
    detail,
  );

  async function refreshFiles() {
    const res = await api("/v1/files?purpose=fine-tune");
    state.files = res.data;
    replace(filesBox, table(null, ["File", "Size", "Uploaded", "Id"], res.data.map((f) => [
      f.filename, fmt.bytes(f.bytes), fmt.date(f.created_at * 1000), h("code", {}, f.id),
    ]), "No training files yet."));
    const options = (withNone) => [
      withNone ? h("option", { value: "" }, "— none —") : null,
      ...res.data.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`)),
    ];
    const keep = training.value;
    replace(training, options(false));
    replace(validation, options(true));
    if (keep) training.value = keep;
    start.disabled = !res.data.length;
  }

  async function upload(file) {
    replace(lineErrors);
    notice(uploadStatus, `Checking and uploading ${file.name}…`, "info");
    try {
      const f = await uploadTrainingFile(file);
      notice(uploadStatus, `Uploaded ${f.filename}: ${fmt.bytes(f.bytes)}, every line valid.`, "ok");
      await refreshFiles();
      training.value = f.id;
    } catch (err) {
      notice(uploadStatus, err.message, "error");
      replace(lineErrors, (err.errors || []).slice(0, 50).map((e) => h("li", { "data-testid": "line-error" }, `line ${e.line}: ${e.reason}`)));
    }
  }

  async function create() {
    notice(startStatus, "");
    const hyper = {};
    if (epochs.value) hyper.n_epochs = Number(epochs.value);
    if (lrMult.value) hyper.learning_rate_multiplier = Number(lrMult.value);
    const adept = { qlora: qlora.checked };
    if (rank.value) adept.lora_rank = Number(rank.value);
    const models = await api("/v1/models");
    const body = {
      model: models.data[0].id,
      training_file: training.value,
      method: { type: "supervised", supervised: { hyperparameters: hyper }, adept },
    };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    start.disabled = true;
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", body });
      await refreshJobs();
      await select(job.id);
    } catch (err) {
      notice(startStatus, err.message, "error");
    } finally {
      start.disabled = !state.files.length;
    }
  }

  async function refreshJobs() {
    const res = await api("/v1/fine_tuning/jobs?limit=50");
    state.jobs = res.data;
    replace(jobsBox, table(null, ["Job", "Status", "Model", "Created", "Epochs"], res.data.map((j) => [
      h("button", { type: "button", class: "link", onclick: () => select(j.id) }, j.id),
      statusBadge(j.status),
      j.fine_tuned_model ? h("code", {}, j.fine_tuned_model) : "–",
      fmt.date(j.created_at * 1000),
      String(j.hyperparameters.n_epochs),
    ]), "No jobs yet. Upload a file and start one."));
  }

  async function select(jobId) {
    state.selected = jobId;
    if (state.controller) state.controller.abort();
    await showDetail(true);
  }

  async function showDetail(fresh) {
    const jobId = state.selected;
    if (!jobId || state.gone) return;
    clearTimeout(state.timer);
    let job;
    let events;
    try {
      [job, events] = await Promise.all([
        api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`),
        api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?limit=1000`),
      ]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      replace(detail, h("p", { class: "notice error" }, `Could not load the job: ${err.message}`));
      detail.hidden = false;
      return;
    }
    if (state.selected !== jobId || state.gone) return;
    const points = events.data.filter((e) => e.type === "metrics").reverse().map((e) => e.data);
    if (fresh || !detail.dataset.job || detail.dataset.job !== jobId) {
      renderDetail(job, points, events.data);
    } else {
      updateDetail(job, points, events.data);
    }
    await refreshJobs();
    if (ACTIVE.has(job.status)) state.timer = setTimeout(() => showDetail(false).catch(() => {}), POLL_MS);
  }

  function renderDetail(job, points, events) {
    detail.dataset.job = job.id;
    detail.hidden = false;
    const cancel = h("button", { type: "button", class: "danger", id: "ft-cancel", onclick: () => cancelJob(job.id) }, "Cancel job");
    replace(
      detail,
      h("div", { class: "detail-head" }, h("h2", {}, job.id), h("span", { id: "ft-status" }, statusBadge(job.status)), cancel),
      h("div", { class: "grid-2" },
        h("div", {},
          h("h3", {}, "Loss"),
          h("div", { id: "ft-curve", class: "curve" }),
          h("dl", { class: "kv", id: "ft-facts" })),
        h("div", {},
          h("h3", {}, "Events"),
          h("ol", { id: "ft-events", class: "events" }))),
      h("div", { id: "ft-try" }),
    );
    updateDetail(job, points, events);
  }

  function updateDetail(job, points, events) {
    const status = detail.querySelector("#ft-status");
    replace(status, statusBadge(job.status));
    detail.querySelector("#ft-cancel").hidden = !ACTIVE.has(job.status);
    replace(detail.querySelector("#ft-curve"), lossCurve(points));
    const hp = job.hyperparameters;
    replace(
      detail.querySelector("#ft-facts"),
      kv("Base model", job.model),
      kv("Training file", job.training_file),
      kv("Epochs · batch · LR ×", `${hp.n_epochs} · ${hp.batch_size} · ${hp.learning_rate_multiplier}`),
      kv("LoRA", job.method && job.method.adept ? `rank ${job.method.adept.lora_rank}${job.method.adept.qlora ? " · QLoRA" : ""}` : "–"),
      kv("Trained tokens", fmt.int(job.trained_tokens)),
      kv("Fine-tuned model", job.fine_tuned_model || "–"),
      job.error ? kv("Error", `${job.error.code}: ${job.error.message}`) : null,
    );
    replace(
      detail.querySelector("#ft-events"),
      events.filter((e) => e.type !== "metrics").slice(0, 12).map((e) =>
        h("li", { class: `event ${e.level}` }, h("time", {}, fmt.date(e.created_at * 1000)), " ", e.message)),
    );
    const tryBox = detail.querySelector("#ft-try");
    if (job.status === "succeeded" && job.fine_tuned_model && !tryBox.dataset.model) tryIt(tryBox, job.fine_tuned_model);
  }

  async function cancelJob(jobId) {
    const ok = await confirmDialog("Cancel this job?", "Training stops now; no model is published.", "Cancel job");
    if (!ok) return;
    try {
      await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
    } catch (err) {
      notice(startStatus, err.message, "error");
    }
    await refreshJobs();
    await showDetail(false);
  }

  function tryIt(box, model) {
    box.dataset.model = model;
    const input = h("input", { id: "ft-try-input", type: "text", placeholder: "Ask your fine-tuned model…", autocomplete: "off" });
    const answer = h("div", { class: "bubble", "data-testid": "ft-answer", "aria-live": "polite" });
    const send = h("button", { type: "submit", class: "primary", id: "ft-try-send" }, "Send");
    const form = h(
      "form",
      { class: "search-row", onsubmit: (e) => { e.preventDefault(); ask(); } },
      h("label", { for: "ft-try-input", class: "sr-only" }, `Message to ${model}`),
      input,
      send,
    );
    replace(box, h("h3", {}, "Chat with ", h("code", {}, model)), form, answer);

    async function ask() {
      const question = input.value.trim();
      if (!question || state.controller) return;
      state.controller = new AbortController();
      send.disabled = true;
      answer.textContent = "";
      let content = "";
      try {
        await streamChat(
          { model, messages: [{ role: "user", content: question }], max_tokens: 64, temperature: 0 },
          { signal: state.controller.signal, onDelta: (d) => { content += d; answer.textContent = content; } },
        );
        if (!content) answer.textContent = "(no text)";
      } catch (err) {
        if (err.name !== "AbortError") answer.textContent = `Error: ${err.message}`;
      } finally {
        state.controller = null;
        send.disabled = false;
      }
    }
  }

  await Promise.all([refreshFiles(), refreshJobs()]);
  const running = state.jobs.find((j) => ACTIVE.has(j.status)) || state.jobs[0];
  if (running) await select(running.id);

  return () => {
    state.gone = true;
    clearTimeout(state.timer);
    if (state.controller) state.controller.abort();
  };
}

function statusBadge(status) {
  return h("span", { class: `badge ${STATUS_BADGE[status] || "info"}`, "data-testid": "ft-status" }, status.replace("_", " "));
}

function kv(key, value) {
  return [h("dt", {}, key), h("dd", {}, value === null || value === undefined ? "–" : value)];
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Train (and validation) loss by step as an SVG line chart; updated in place as steps arrive. */
function lossCurve(points) {
  const train = points.filter((p) => Number.isFinite(p.train_loss));
  if (!train.length) return h("p", { class: "muted" }, "The curve appears with the first training step.");
  const W = 520, H = 220, L = 48, R = 12, T = 12, B = 32;
  const steps = train.map((p) => p.step);
  const valid = points.filter((p) => Number.isFinite(p.valid_loss));
  const losses = [...train.map((p) => p.train_loss), ...valid.map((p) => p.valid_loss)];
  const [x0, x1] = [Math.min(...steps), Math.max(...steps, Math.min(...steps) + 1)];
  const [lo, hi] = [Math.min(...losses), Math.max(...losses)];
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 0.5;  // a flat curve still gets a visible band
  const [y0, y1] = [lo - pad, hi + pad];
  const x = (s) => L + ((s - x0) / (x1 - x0)) * (W - L - R);
  const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const line = (pts, key) => pts.map((p) => `${x(p.step).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  const last = train[train.length - 1];
  const chart = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "loss-chart", role: "img", "data-testid": "loss-curve", "data-points": train.length,
      "aria-label": `Training loss over ${train.length} steps; latest ${last.train_loss.toFixed(4)} at step ${last.step}` },
    svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
    svg("text", { x: L - 6, y: T + 4, class: "tick", "text-anchor": "end" }, y1.toFixed(2)),
    svg("text", { x: L - 6, y: H - B, class: "tick", "text-anchor": "end" }, y0.toFixed(2)),
    svg("text", { x: L, y: H - 10, class: "tick" }, `step ${x0}`),
    svg("text", { x: W - R, y: H - 10, class: "tick", "text-anchor": "end" }, `step ${x1}`),
    svg("polyline", { points: line(train, "train_loss"), class: "train" }),
    valid.length ? svg("polyline", { points: line(valid, "valid_loss"), class: "valid" }) : null,
  );
  for (const p of train.length <= 60 ? train : []) chart.append(svg("circle", { cx: x(p.step), cy: y(p.train_loss), r: 2.5, class: "train-dot" }));
  const legend = h("p", { class: "muted legend" }, `training loss ${fmt.num(last.train_loss, 4)} at step ${last.step}${last.total_steps ? ` of ${last.total_steps}` : ""}`,
    valid.length ? ` · validation loss ${fmt.num(valid[valid.length - 1].valid_loss, 4)}` : "");
  return [chart, legend];
}
