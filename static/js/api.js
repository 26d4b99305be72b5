// REST calls for the browser: the session cookie authenticates them, the CSRF token
// (Django's `csrftoken` cookie) makes the writes acceptable (PROTOCOL.md section 4).

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(value.join("="));
  }
  return document.querySelector('meta[name="csrf-token"]')?.content || "";
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy error page, say)
  }
  const error = body?.error || {};
  return new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || response.statusText || "The request failed.",
    error.details || {},
  );
}

/** Call the API (`body`: JSON, or a FormData sent as multipart); answer the parsed JSON
 * (null for 204) or throw ApiError. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  const form = body instanceof FormData; // multipart: the browser writes its own type
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined || form ? body : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "You appear to be offline.");
  }
  if (response.redirected && new URL(response.url).pathname.startsWith("/accounts/login")) {
    throw new ApiError(401, "unauthenticated", "Your session has ended; log in again.");
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const query = (params) => new URLSearchParams(params).toString();

/** Fetch a file from the API (`GET`); answer `{blob, filename}` or throw ApiError. */
export async function download(path) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", "You appear to be offline.");
  }
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const filename = /filename="([^"]+)"/.exec(disposition)?.[1] || "download";
  return { blob: await response.blob(), filename };
}

/**
 * Upload a file to `POST /api/v1/attachments` with progress (XHR: fetch has no upload
 * progress). Answer `{promise, abort}`; `onProgress(fraction)` sees 0..1. `fields` go
 * with the file (a voice message: `{voice: "true", duration_ms}`).
 */
export function uploadAttachment(file, onProgress, fields = {}) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", "/api/v1/attachments");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        onProgress(1);
        resolve(xhr.response);
        return;
      }
      const error = xhr.response?.error || {};
      reject(
        new ApiError(xhr.status, error.code || `http_${xhr.status}`, error.message || "Upload failed.", error.details),
      );
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload failed: no connection.")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Upload cancelled.")));
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) form.append(key, String(value));
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
