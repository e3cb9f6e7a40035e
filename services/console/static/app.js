// Console entry point: sign-in, navigation between views, sign-out.
import { ApiError, api, identify, session } from "./api.js";
import { h, notice, replace } from "./dom.js";
import * as chat from "./chat.js";
import * as knowledge from "./knowledge.js";
import * as adapters from "./adapters.js";
import * as finetuning from "./finetuning.js";
import * as overview from "./overview.js";
import * as admin from "./admin.js";

const VIEWS = {
  tenant: [
    { id: "chat", label: "Playground", render: chat.render },
    { id: "knowledge", label: "Knowledge base", render: knowledge.render },
    { id: "finetuning", label: "Fine-tuning", render: finetuning.render },
    { id: "adapters", label: "Adapters", render: adapters.render },
    { id: "evals", label: "Eval reports", render: overview.renderEvals },
    { id: "usage", label: "Usage", render: overview.renderUsage },
  ],
  admin: [
    { id: "tenants", label: "Tenants", render: admin.renderTenants },
    { id: "platform", label: "Replicas & jobs", render: admin.renderPlatform },
  ],
};

const $ = (id) => document.getElementById(id);
let cleanup = null;
let navigation = 0;

function views() {
  return VIEWS[session.role] || [];
}

function current() {
  const id = location.hash.replace(/^#/, "");
  return views().find((v) => v.id === id) || views()[0];
}

async function show() {
  const view = current();
  if (!view) return;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  for (const button of $("nav").querySelectorAll("a")) {
    if (button.dataset.view === view.id) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  // Each navigation renders into its own pane: a slower, earlier render that finishes late
  // lands in a pane that is no longer on the page, never beside the current one.
  const token = ++navigation;
  const pane = h("div", { class: "pane" });
  replace($("main"), pane);
  document.title = `${view.label} · Adept console`;
  try {
    const done = (await view.render(pane)) || null;
    if (token === navigation) cleanup = done;
    else if (done) done();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut("Your key is no longer valid; sign in again.");
    const box = h("div", { role: "alert" });
    notice(box, err.message || String(err), "error");
    pane.append(box);
  }
}

async function enter() {
  $("signin").hidden = true;
  $("shell").hidden = false;
  replace(
    $("nav"),
    views().map((v) => h("a", { href: `#${v.id}`, "data-view": v.id }, v.label)),
  );
  const who = $("who");
  if (session.role === "admin") {
    replace(who, "Platform admin");
    who.className = "badge admin";
  } else {
    who.className = "badge";
    replace(who, "Tenant");
    api("/v1/usage")
      .then((u) => replace(who, `Tenant · ${u.display_name || u.tenant}`))
      .catch(() => {});
  }
  await show();
}

function signOut(message) {
  session.clear();
  if (cleanup) cleanup();
  cleanup = null;
  replace($("main"));
  replace($("nav"));
  $("shell").hidden = true;
  $("signin").hidden = false;
  notice($("signin-notice"), message || "", message ? "info" : "info");
  history.replaceState(null, "", location.pathname);
  $("signin-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("signin-key");
  const button = $("signin-submit");
  const key = input.value.trim();
  if (!key) {
    notice($("signin-notice"), "Enter an API key.", "error");
    return;
  }
  button.disabled = true;
  notice($("signin-notice"), "");
  try {
    const role = await identify(key);
    session.set(key, role);
    input.value = "";
    await enter();
  } catch (err) {
    const msg = err instanceof ApiError && (err.status === 401 || err.status === 403)
      ? "That key was not accepted: check it and try again."
      : `Could not sign in: ${err.message}`;
    notice($("signin-notice"), msg, "error");
  } finally {
    button.disabled = false;
  }
}

function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => session.key && show());
  if (session.key && session.role) enter();
  else signOut();
}

start();
