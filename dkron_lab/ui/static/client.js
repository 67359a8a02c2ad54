// The browser's side of the /v1 API: one fetch wrapper, two ways to authenticate.
//
//   bearer  (the headless server): "Authorization: Bearer <token>", the token kept in
//           sessionStorage; a 401 raises TokenNeeded, and the app asks for one.
//   jupyter (under Jupyter's server): the same-origin cookie, and X-XSRFToken from the _xsrf
//           cookie on writes, as JupyterLab's ServerConnection.makeRequest does.
//
// Nothing here touches the DOM, so the same client serves /ui, the notebook widget and the
// JupyterLab panel.

const TOKEN_KEY = "dkron-lab.token";

/** The API answered 401: no token, or a wrong one. */
export class TokenNeeded extends Error {}

/** Any other answer that is not 2xx: `status`, and the server's `type` and message. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.type = body?.type || "";
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Take a `#token=...` the start-up log's link carried into sessionStorage, and drop it from
 * the address bar (and the history) so it is not shared with the URL. */
export function adoptTokenFromHash(location, history) {
  const match = /^#token=([^&]*)(?:&(.*))?$/.exec(location.hash);
  if (!match) return false;
  storeToken(decodeURIComponent(match[1]));
  const rest = match[2] ? `#${decodeURIComponent(match[2])}` : "#/";
  history.replaceState(null, "", `${location.pathname}${location.search}${rest}`);
  return true;
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

/** Settings from the page's <meta> tags: the API base (relative to the page) and auth mode. */
export function pageSettings(doc) {
  const meta = (name) => doc.querySelector(`meta[name="${name}"]`)?.content;
  return { api: meta("dkron-api") || "../v1", auth: meta("dkron-auth") || "bearer" };
}

export class Client {
  /** `api`: the API base, relative to the page ("../v1"); `auth`: "bearer" | "jupyter". */
  constructor({ api = "../v1", auth = "bearer" } = {}) {
    this.base = new URL(api.endsWith("/") ? api : `${api}/`, document.baseURI);
    this.auth = auth;
  }

  url(path, query = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    return url;
  }

  headers(method) {
    const headers = { Accept: "application/json" };
    if (this.auth === "jupyter") {
      if (method !== "GET" && method !== "HEAD") headers["X-XSRFToken"] = cookie("_xsrf");
    } else {
      const token = storedToken();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    return headers;
  }

  /** fetch() with the credentials; raises TokenNeeded on 401, ApiError on other failures. */
  async fetch(path, { method = "GET", query, body, signal } = {}) {
    const init = {
      method,
      headers: this.headers(method),
      signal,
      cache: "no-store",
      credentials: this.auth === "jupyter" ? "same-origin" : "omit",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.url(path, query), init);
    if (response.status === 401 && this.auth !== "jupyter") throw new TokenNeeded();
    if (!response.ok) {
      const error = await response.json().catch(() => null);
      throw new ApiError(response.status, error);
    }
    return response;
  }

  /** The JSON answer, and `total` from X-Total-Count when the answer is a list. */
  async json(path, options = {}) {
    const response = await this.fetch(path, options);
    const total = response.headers.get("X-Total-Count");
    const data = response.status === 204 ? null : await response.json();
    return { data, total: total === null ? null : Number(total) };
  }

  /** Read an NDJSON answer line by line: `onLine(object)` for each, until it ends. */
  async lines(path, { query, signal, onLine }) {
    const response = await this.fetch(path, { query, signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const parts = pending.split("\n");
      pending = parts.pop();
      for (const part of parts) if (part.trim()) onLine(JSON.parse(part));
    }
    if (pending.trim()) onLine(JSON.parse(pending));
  }
}
