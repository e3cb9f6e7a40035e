// Talking to the gateway. The key lives in sessionStorage only (gone when the tab closes); it
// travels in the Authorization header, never in a URL, and is never written to the console log.

const KEY = "adept.key";
const ROLE = "adept.role";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  get role() { return sessionStorage.getItem(ROLE); },
  set(key, role) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, role);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
  },
};

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(key = session.key, extra = {}) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

/** JSON request; throws ApiError with the server's OpenAI-style message. */
export async function api(path, { method = "GET", body, key } = {}) {
  const headers = authHeaders(key);
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

/** An authenticated image (or any blob) as an object URL for <img src>. */
export async function blobUrl(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store", credentials: "omit" });
  if (!response.ok) throw await errorFrom(response);
  return URL.createObjectURL(await response.blob());
}

/** Which kind of key this is: "tenant", "admin", or an ApiError. */
export async function identify(key) {
  // Admin keys usually carry their prefix: ask the admin API first then, sparing a 401.
  if (key.startsWith("adept-admin-")) {
    try {
      await api("/admin/tenants", { key });
      return "admin";
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
    }
  }
  try {
    await api("/v1/models", { key });
    return "tenant";
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
  }
  await api("/admin/tenants", { key }); // throws 401/403 for anything but the admin key
  return "admin";
}

/**
 * Stream a chat completion: calls onDelta(text) per token chunk, resolves with
 * {citations, finish_reason, usage}. Server-Sent Events are parsed from the fetch body.
 */
export async function streamChat(request, { onDelta, signal }) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: authHeaders(undefined, { "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    cache: "no-store",
    credentials: "omit",
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const result = { citations: [], finish_reason: null, usage: null };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return result;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message, chunk.error.code);
        if (chunk.citations) result.citations = chunk.citations;
        if (chunk.usage) result.usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
          if (choice.finish_reason) result.finish_reason = choice.finish_reason;
        }
      }
    }
  }
  return result;
}

/** Upload files as multipart with progress (fetch cannot report upload progress; XHR can). */
export function uploadFiles(files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/kb/documents");
    xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.upload.addEventListener("load", () => onProgress(1, 1, true));
    xhr.addEventListener("load", () => {
      const body = xhr.response || {};
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        const err = new ApiError(xhr.status, (body.error && body.error.message) || `HTTP ${xhr.status}`);
        err.errors = body.errors || [];
        reject(err);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network error during upload")));
    xhr.send(form);
  });
}

/** Upload one training file to /v1/files (purpose fine-tune); a refused file's ApiError lists its bad lines in `errors`. */
export async function uploadTrainingFile(file) {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  const response = await fetch("/v1/files", {
    method: "POST", headers: authHeaders(), body: form, cache: "no-store", credentials: "omit",
  });
  if (response.ok) return response.json();
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: keep the status line
  }
  const err = new ApiError(response.status, (body.error && body.error.message) || `HTTP ${response.status}`, body.error && body.error.code);
  err.errors = body.errors || [];
  throw err;
}
