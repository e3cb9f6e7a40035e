// Building DOM from text nodes only (no HTML parsing): every piece of data becomes a text node, so a document or a
// model answer containing "<script>" is shown as those characters and never parsed as markup.

const ATTRS = new Set([
  "id", "class", "type", "name", "value", "placeholder", "title", "role", "for", "href",
  "min", "max", "step", "accept", "autocomplete", "spellcheck", "tabindex", "colspan",
  "disabled", "checked", "multiple", "required", "hidden", "open", "src", "alt", "rows",
  "maxlength", "pattern", "scope", "datetime", "download", "inputmode",
]);

/** h("button", {class: "primary", onclick: fn, "aria-label": "x"}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key.startsWith("aria-") || key.startsWith("data-") || ATTRS.has(key)) {
      if (key === "href" && !String(value).startsWith("#")) throw new Error("only in-page links");
      if (key === "src" && !/^(blob:|\/ui\/static\/)/.test(String(value))) throw new Error("bad src");
      el.setAttribute(key, value === true ? "" : String(value));
    } else {
      throw new Error(`attribute not allowed: ${key}`);
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

export const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US")),
  num: (n, d = 3) => (n === null || n === undefined || Number.isNaN(Number(n)) ? "–" : Number(n).toFixed(d)),
  pct: (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)} %`),
  date: (iso) => {
    if (!iso) return "–";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  },
  bytes: (n) => {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  },
};

/** A status line region: announces errors and results to screen readers. */
export function notice(el, message, kind = "info") {
  el.className = `notice ${kind}`;
  el.hidden = !message;
  replace(el, message || "");
}

/** A table from column titles and rows of cells (strings or nodes). */
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((cell) => h("td", {}, cell))))),
  );
}

/** A modal confirmation (native <dialog>: focus trapped, Esc cancels). Resolves true on confirm. */
export function confirmDialog(title, message, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const ok = h("button", { type: "button", class: "danger" }, confirmLabel);
    const dialog = h(
      "dialog",
      { class: "modal", "aria-labelledby": "dialog-title" },
      h("h2", { id: "dialog-title" }, title),
      h("p", {}, message),
      h("div", { class: "actions" }, cancel, ok),
    );
    const done = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    cancel.addEventListener("click", () => done(false));
    ok.addEventListener("click", () => done(true));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A labelled meter row: label, bar, "used / limit". */
export function meter(label, used, limit, unit = "") {
  const unlimited = !limit;
  const known = used !== null && used !== undefined;
  const ratio = unlimited || !known ? 0 : Math.min(1, used / limit);
  const level = ratio >= 0.9 ? "high" : ratio >= 0.7 ? "mid" : "low";
  const id = `m-${label.replace(/\W+/g, "-").toLowerCase()}`;
  const fill = h("span", { class: "fill" });
  fill.style.width = `${Math.round(ratio * 100)}%`; // CSSOM, which the CSP allows (no style attribute)
  return h(
    "div",
    { class: "meter-row" },
    h("span", { class: "meter-label", id }, label),
    h(
      "div",
      {
        class: `bar ${level}`,
        role: "meter",
        "aria-labelledby": id,
        "aria-valuemin": "0",
        "aria-valuemax": unlimited ? "0" : String(limit),
        "aria-valuenow": known ? String(used) : "0",
      },
      fill,
    ),
    h(
      "span",
      { class: "meter-value" },
      `${known ? fmt.int(used) : "unknown"} / ${unlimited ? "unlimited" : fmt.int(limit)}${unit}`,
    ),
  );
}
