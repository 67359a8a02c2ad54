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
