// The hash routes of the UI, as data: which view an address asks for (see app.js for the list).

/** The view a hash asks for: `{view, ...its arguments}`, or null for an unknown address. */
export function parseRoute(hash) {
  const [path, search = ""] = hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: "dashboard", query };
  if (parts[0] === "busy" && parts.length === 1) return { view: "busy", query };
  if (parts[0] === "runs" && parts.length === 1) return { view: "runs", query };
  if (parts[0] === "cluster" && parts.length === 1) return { view: "cluster", query };
  if (parts[0] === "sql" && parts.length === 1) return { view: "sql", query };
  if (parts[0] === "graph" && parts.length === 1) return { view: "graph", query };
  if (parts[0] === "timeline" && parts.length === 1) return { view: "timeline", query };
  if (parts[0] !== "jobs") return null;
  if (parts.length === 1) return { view: "dashboard", query };
  const [, name, section, id, extra] = parts;
  if (parts.length === 2 && name === "new") return { view: "form", query };
  if (parts.length === 3 && section === "edit") return { view: "form", name, query };
  if (parts.length === 2) return { view: "job", name, query };
  if (section === "show" && (id === undefined || (id === "executions" && extra === undefined))) {
    return id ? { view: "job", name, focus: id, query } : { view: "job", name, query };
  }
  if (section === "executions" && id !== undefined && extra === undefined) {
    return { view: "execution", name, id, query };
  }
  return null;
}

// Where the app's address lives. A location has `hash` (the current address, "#/..."),
// `go(hash, {replace})` and `listen(onChange, signal)`: `go` without `replace` announces the
// change to the listeners; with `replace` it does not (the caller shows the page itself).

/** The page's own address bar: `location.hash`, its history and `hashchange` (/ui, the Lab tab). */
export function pageLocation(win = window) {
  return {
    get hash() {
      return win.location.hash || "#/";
    },
    go(hash, { replace = false } = {}) {
      if (replace) win.history.replaceState(null, "", hash);
      else win.location.hash = hash;
    },
    listen(onChange, signal) {
      win.addEventListener("hashchange", onChange, { signal });
    },
  };
}

/** An address kept in memory, for an app hosted inside another page (the notebook widget): the
 * page's own `location.hash` is never read or written. `capture(root)` makes the hash links
 * under `root` navigate here rather than in the page. */
export function memoryLocation(start = "#/") {
  let hash = start;
  const listeners = new Set();
  return {
    get hash() {
      return hash;
    },
    go(next, { replace = false } = {}) {
      hash = next.startsWith("#") ? next : `#${next}`;
      if (!replace) for (const onChange of listeners) onChange();
    },
    listen(onChange, signal) {
      listeners.add(onChange);
      signal?.addEventListener("abort", () => listeners.delete(onChange));
    },
    capture(root) {
      root.addEventListener("click", (event) => {
        if (event.defaultPrevented || event.button !== 0) return;
        if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        const link = event.composedPath().find((node) => node.tagName === "A");
        const href = link?.getAttribute("href");
        if (!href?.startsWith("#") || link.hasAttribute("download")) return;
        event.preventDefault();
        this.go(href);
      });
    },
  };
}
