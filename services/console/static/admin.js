// Admin view: tenants (create, list, delete), adapters per tenant, replicas and fine-tuning jobs.
import { api } from "./api.js";
import { confirmDialog, fmt, h, notice, replace, table } from "./dom.js";

const NAME_PATTERN = "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?"; // valid in the v-flag syntax browsers use

export async function renderTenants(main) {
  const status = h("div", { class: "notice", role: "status", hidden: true });
  const keyBox = h("div", { id: "new-key", hidden: true });
  const listBox = h("div", { id: "tenant-list" });
  const adapterBox = h("div", { id: "tenant-adapters", "aria-live": "polite" });
  const tenantSelect = h("select", { id: "adapters-tenant" });
  tenantSelect.addEventListener("change", () => showAdapters(tenantSelect.value));

  const field = (id, label, attrs) => h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name: id, ...attrs }));
  const form = h(
    "form",
    { class: "form-grid", id: "create-tenant", onsubmit: (e) => { e.preventDefault(); create(); } },
    field("t-name", "Name", { required: true, pattern: NAME_PATTERN, placeholder: "acme", autocomplete: "off", maxlength: "63" }),
    field("t-display", "Display name", { placeholder: "Acme Corp.", maxlength: "200", autocomplete: "off" }),
    field("t-rpm", "Requests / min", { type: "number", min: "0", value: "600" }),
    field("t-tpm", "Tokens / min", { type: "number", min: "0", value: "200000" }),
    field("t-docs", "Max documents", { type: "number", min: "0", value: "10000" }),
    field("t-adapters", "Max adapters", { type: "number", min: "0", value: "10" }),
    h("div", { class: "field end" }, h("button", { type: "submit", class: "primary" }, "Create tenant")),
  );

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Tenants"),
      h("p", { class: "muted" }, "Each tenant has its own key, knowledge base, adapters and quotas (0 = unlimited).")),
    h("section", { class: "card", "aria-labelledby": "create-title" }, h("h2", { id: "create-title" }, "New tenant"), form, keyBox, status),
    h("section", { class: "card", "aria-labelledby": "list-title" }, h("h2", { id: "list-title" }, "All tenants"), listBox),
    h("section", { class: "card", "aria-labelledby": "ad-title" },
      h("div", { class: "section-head" }, h("h2", { id: "ad-title" }, "Adapters"),
        h("div", { class: "field inline" }, h("label", { for: "adapters-tenant" }, "Tenant"), tenantSelect)),
      adapterBox),
  );

  async function refresh() {
    const res = await api("/admin/tenants");
    const tenants = res.data;
    replace(
      listBox,
      table(
        null,
        ["Name", "Display name", "Key", "Requests / min", "Tokens / min", "Documents", "Adapters", "Created", ""],
        tenants.map((t) => [
          h("strong", {}, t.name),
          t.display_name || "–",
          h("code", {}, `${t.key_prefix}…`),
          quota(t.quotas.requests_per_minute),
          quota(t.quotas.tokens_per_minute),
          quota(t.quotas.max_documents),
          quota(t.quotas.max_adapters),
          fmt.date(t.created_at),
          h("button", { type: "button", class: "danger small", "aria-label": `Delete tenant ${t.name}`, onclick: () => remove(t) }, "Delete"),
        ]),
        "No tenants yet: create the first one above.",
      ),
    );
    const keep = tenantSelect.value;
    replace(tenantSelect, tenants.map((t) => h("option", { value: t.name }, t.name)));
    if (tenants.some((t) => t.name === keep)) tenantSelect.value = keep;
    if (tenants.length) await showAdapters(tenantSelect.value);
    else replace(adapterBox, h("p", { class: "empty" }, "No tenants."));
  }

  async function showAdapters(tenant) {
    try {
      const res = await api(`/admin/adapters/${encodeURIComponent(tenant)}`);
      replace(
        adapterBox,
        table(null, ["Adapter", "Version", "Base model", "Method", "Rank", "Created"],
          res.data.map((a) => [h("strong", {}, a.name), a.version, a.base_model, a.method, String(a.rank ?? "–"), fmt.date(a.created_at)]),
          `${tenant} has no adapters.`),
      );
    } catch (err) {
      replace(adapterBox, h("p", { class: "notice error", role: "alert" }, err.message));
    }
  }

  async function create() {
    if (!form.reportValidity()) return;
    const v = (id) => document.getElementById(id).value.trim();
    const spec = {
      name: v("t-name"),
      display_name: v("t-display"),
      quotas: {
        requests_per_minute: Number(v("t-rpm")),
        tokens_per_minute: Number(v("t-tpm")),
        max_documents: Number(v("t-docs")),
        max_adapters: Number(v("t-adapters")),
      },
    };
    notice(status, "");
    try {
      const t = await api("/admin/tenants", { method: "POST", body: spec });
      showKey(t);
      document.getElementById("t-name").value = "";
      document.getElementById("t-display").value = "";
      await refresh();
    } catch (err) {
      notice(status, `Could not create the tenant: ${err.message}`, "error");
    }
  }

  function showKey(t) {
    const key = h("input", { id: "new-key-value", type: "text", value: t.api_key, spellcheck: "false", autocomplete: "off", "aria-label": `API key of ${t.name}` });
    key.readOnly = true;
    const copy = h("button", { type: "button", class: "secondary", onclick: async () => {
      try {
        await navigator.clipboard.writeText(key.value);
        replace(copy, "Copied");
      } catch {
        key.select();
      }
    } }, "Copy");
    const done = h("button", { type: "button", class: "primary", onclick: () => { replace(keyBox); keyBox.hidden = true; } }, "I have stored it");
    keyBox.hidden = false;
    keyBox.className = "keybox";
    replace(
      keyBox,
      h("h3", {}, `Tenant ${t.name} created`),
      h("p", {}, "This is its API key. It is shown once — only a hash is stored. Give it to the tenant now."),
      h("div", { class: "key-row" }, key, copy, done),
    );
    key.focus();
    key.select();
  }

  async function remove(t) {
    const ok = await confirmDialog(
      `Delete tenant ${t.name}?`,
      `This deletes ${t.name}'s documents, adapters and API key. It cannot be undone.`,
      "Delete tenant",
    );
    if (!ok) return;
    try {
      const res = await api(`/admin/tenants/${encodeURIComponent(t.name)}`, { method: "DELETE" });
      notice(status, `Deleted tenant ${t.name} (${res.adapters_deleted} adapters).`, "ok");
    } catch (err) {
      notice(status, `Could not delete ${t.name}: ${err.message}`, "error");
    }
    await refresh();
  }

  await refresh();
}

function quota(n) {
  return n ? fmt.int(n) : "unlimited";
}

export async function renderPlatform(main) {
  const deployBox = h("div", {});
  const replicaBox = h("div", {});
  const jobBox = h("div", {});
  const stamp = h("span", { class: "muted" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Replicas & jobs"),
      h("div", { class: "row" }, stamp, h("button", { type: "button", class: "secondary", onclick: () => refresh() }, "Refresh"))),
    h("div", { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": "dep-title" }, h("h2", { id: "dep-title" }, "Deployments"), deployBox),
      h("section", { class: "card", "aria-labelledby": "rep-title" }, h("h2", { id: "rep-title" }, "LLM replicas"), replicaBox)),
    h("section", { class: "card", "aria-labelledby": "job-title" }, h("h2", { id: "job-title" }, "Recent fine-tuning jobs"), jobBox),
  );

  async function refresh() {
    const [rep, jobs] = await Promise.all([api("/admin/replicas"), api("/admin/jobs")]);
    replace(
      deployBox,
      table(null, ["Deployment", "Status", "Replicas"],
        rep.deployments.map((d) => [
          h("strong", {}, d.name),
          h("span", { class: `badge ${d.status === "HEALTHY" ? "ok" : "warn"}` }, d.status),
          Object.entries(d.replicas).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ") || "–",
        ]),
        "Serve status is not available from here."),
    );
    replace(
      replicaBox,
      h("p", { class: "muted" }, `${rep.llm_replicas_running} running; ${rep.llm_replicas.length} answered.`),
      table(null, ["Replica", "Base model", "Context", "Loaded adapters"],
        rep.llm_replicas.map((r) => [
          h("code", {}, r.replica_id),
          r.base_model,
          fmt.int(r.max_model_len),
          r.loaded_adapters.length ? h("ul", { class: "plain" }, r.loaded_adapters.map((a) => h("li", {}, h("code", {}, a)))) : h("span", { class: "muted" }, "none (base only)"),
        ]),
        "No LLM replica answered."),
    );
    replace(
      jobBox,
      table(null, ["Job", "Tenant / adapter", "State", "Progress", "Step", "Train loss", "Eval loss", "Published", "Updated"],
        jobs.data.map((j) => [
          h("code", {}, j.run),
          j.tenant ? `${j.tenant}/${j.adapter || "?"}` : "–",
          h("span", { class: `badge ${j.state === "succeeded" ? "ok" : j.state === "running" ? "info" : "warn"}` }, j.state),
          progressCell(j.progress),
          j.total_steps ? `${j.step} / ${j.total_steps}` : String(j.step),
          fmt.num(j.train_loss, 3),
          fmt.num(j.eval_loss, 3),
          j.published ? h("code", {}, j.published) : "–",
          fmt.date(j.updated_at),
        ]),
        "No fine-tuning jobs yet."),
    );
    replace(stamp, `Updated ${new Date().toLocaleTimeString()}`);
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 10000);
  return () => clearInterval(timer);
}

function progressCell(p) {
  if (p === null || p === undefined) return h("span", { class: "muted" }, "–");
  return h("span", { class: "progress-cell" },
    h("progress", { max: "100", value: String(Math.round(p * 100)), "aria-label": "job progress" }), ` ${fmt.pct(p)}`);
}
