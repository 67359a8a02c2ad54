// The browser's side of the /v1 API: a client over a transport, three ways to authenticate.
//
//   bearer  (the headless server): "Authorization: Bearer <token>", the token kept in
//           sessionStorage; a 401 raises TokenNeeded, and the app asks for one.
//   jupyter (under Jupyter's server): the same-origin cookie, and X-XSRFToken from the _xsrf
//           cookie on writes, as JupyterLab's ServerConnection.makeRequest does.
//   kernel  (the notebook widget): none here; a transport hands each request to the kernel,
//           whose dkron_lab.Client makes it with its own URL and credentials.
//
// A transport is one function, `(method, path, {query, body, signal}) -> {status, body,
// total}`: `path` is relative to the API base ("jobs/x/run"), `query` holds strings only,
// `body` is the parsed JSON answer (null when empty) and `total` the X-Total-Count (or null).
// The default one is fetch(); only it can stream (`lines`). Nothing here touches the DOM, so
// the same client serves /ui, the notebook widget and the JupyterLab panel.

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

/** The query without its unset values, every value a string. */
function cleanQuery(query = {}) {
  const kept = {};
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") kept[key] = String(value);
  }
  return kept;
}

/** The answer of a transport that cannot stream: `lines()` needs fetch. */
export class StreamUnavailable extends Error {}

export class Client {
  /** `api`: the API base, relative to the page ("../v1"); `auth`: "bearer" | "jupyter" |
   * "kernel"; `transport`: how requests travel (default: fetch() to `api`). */
  constructor({ api = "../v1", auth = "bearer", transport = null } = {}) {
    this.base = new URL(api.endsWith("/") ? api : `${api}/`, document.baseURI);
    this.auth = auth;
    this.transport = transport || ((method, path, options) => this.fetched(method, path, options));
    this.streams = !transport;
  }

  url(path, query = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [key, value] of Object.entries(cleanQuery(query))) url.searchParams.set(key, value);
    return url;
  }

  headers(method) {
    const headers = { Accept: "application/json" };
    if (this.auth === "jupyter") {
      if (method !== "GET" && method !== "HEAD") headers["X-XSRFToken"] = cookie("_xsrf");
    } else if (this.auth === "bearer") {
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
    if (!response.ok) {
      const error = await response.json().catch(() => null);
      this.check(response.status, error);
    }
    return response;
  }

  /** The fetch() transport. */
  async fetched(method, path, { query, body, signal } = {}) {
    const response = await this.fetch(path, { method, query, body, signal });
    const total = response.headers.get("X-Total-Count");
    const data = response.status === 204 ? null : await response.json();
    return { status: response.status, body: data, total: total === null ? null : Number(total) };
  }

  /** Raise what a failed answer means: TokenNeeded for a 401 the user can fix with a token,
   * else ApiError. */
  check(status, body) {
    if (status === 401 && this.auth === "bearer") throw new TokenNeeded();
    if (status < 200 || status > 299) throw new ApiError(status, body);
  }

  /** The JSON answer, and `total` from X-Total-Count when the answer is a list. */
  async json(path, { method = "GET", query, body, signal } = {}) {
    const options = { query: cleanQuery(query), body, signal };
    const answer = await this.transport(method, path, options);
    this.check(answer.status, answer.body);
    return { data: answer.body ?? null, total: answer.total ?? null };
  }

  /** Read an NDJSON answer line by line: `onLine(object)` for each, until it ends. Over a
   * transport other than fetch(), StreamUnavailable (read by offset instead). */
  async lines(path, { query, signal, onLine }) {
    if (!this.streams) throw new StreamUnavailable(`this page cannot stream ${path}`);
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
