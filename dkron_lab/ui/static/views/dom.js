// Small DOM helpers the views share: no framework, no build step.

/** Create an element: h("td", {class: "x", onclick: f}, child, "text", ...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  put(element, ...children);
  return element;
}

/** Replace an element's children; null, undefined and false are left out, arrays flattened. */
export function put(element, ...children) {
  const kept = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  element.replaceChildren(...kept.map((c) => (c instanceof Node ? c : String(c))));
}

/** Re-render `element` with `build()` and give focus back to the control that had it (found
 * by its data-key), or to `focusKey`'s, so a refresh does not lose the keyboard user's place. */
export function rerender(element, build, focusKey = null) {
  // The root node is the document, or the notebook widget's shadow root (whose focused
  // control document.activeElement does not name).
  const active = element.getRootNode().activeElement;
  const key = focusKey || active?.closest?.("[data-key]")?.dataset.key;
  put(element, build());
  if (key) element.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

const NEVER = /^0001-01-01/;

/** Is this time unset ("0001-01-01T00:00:00Z", Go's zero time, or null)? */
export function unset(text) {
  return !text || NEVER.test(text);
}

/** "2026-11-27T15:13:00.000042+01:00" -> "2026-11-27 15:13:00": the wall time in the zone the
 * server wrote it in (the job's), without parsing it into the browser's. */
export function wallTime(text) {
  if (unset(text)) return "";
  return String(text)
    .replace("T", " ")
    .replace(/\.\d+/, "")
    .replace(/(Z|[+-]\d\d:\d\d)$/, "");
}

/** The same instant in the browser's zone, for a title on hover. */
export function browserTime(text) {
  if (unset(text)) return "";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return `${new Date(text).toLocaleString()} (${zone}, your browser)`;
}

/** A <time> in the job's zone (`null`: unknown, the offset is shown), with the browser's on
 * hover. */
export function timeIn(text, zone) {
  if (unset(text)) return h("span", { class: "dk-muted" }, "—");
  const offset = /(Z|[+-]\d\d:\d\d)$/.exec(text)?.[1];
  const label = zone === null ? (offset === "Z" ? "UTC" : offset || "") : zone || "UTC";
  return h(
    "time",
    { datetime: text, title: browserTime(text) },
    wallTime(text),
    " ",
    h("small", { class: "dk-muted" }, label),
  );
}

/** Seconds as "35 ms", "1.4 s", "12 s", "3 min 4 s", "2 h 5 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** How long an execution ran, or has been running. */
export function executionDuration(execution) {
  const start = Date.parse(execution.started_at);
  const end = unset(execution.finished_at) ? Date.now() : Date.parse(execution.finished_at);
  return Number.isNaN(start) ? "" : duration(Math.max(0, (end - start) / 1000));
}

export function isRunning(execution) {
  return unset(execution.finished_at);
}

const STATUS_TEXT = {
  success: "Succeeded",
  failed: "Failed",
  partially_failed: "Partly failed",
  untriggered: "Never run",
  "": "Never run",
  running: "Running",
};

/** A coloured badge with its status in words (colour is never the only signal). */
export function badge(status) {
  const key = status || "untriggered";
  return h("span", { class: `dk-badge dk-${key}` }, STATUS_TEXT[key] ?? key);
}

const HEALTH_TEXT = {
  ok: "ok",
  late: "late",
  overdue: "overdue",
  missed: "missed",
  failing: "failing",
  paused: "paused",
};

/** A job's health (docs/monitoring.md) as a small pill in words, its reason on hover and for
 * screen readers (unless `reasonShown` beside it); nothing for a server that does not say it. */
export function healthPill(job, { reasonShown = false } = {}) {
  if (!job.health) return null;
  const reason = reasonShown ? "" : job.health_reason || "";
  return h(
    "span",
    { class: `dk-health dk-health-${job.health}`, title: reason || null },
    HEALTH_TEXT[job.health] ?? job.health,
    reason ? h("span", { class: "dk-sr" }, `: ${reason}`) : null,
  );
}

/** An execution's resource use, "1.23 s CPU · 12.5 MiB peak", or "" when the server measured
 * none (a running run, an http job, a row from before it did). */
export function resourceUse(execution) {
  const user = execution.cpu_user_seconds;
  const system = execution.cpu_system_seconds;
  const rss = execution.max_rss_bytes;
  const parts = [];
  if (typeof user === "number" || typeof system === "number")
    parts.push(`${((user || 0) + (system || 0)).toFixed(2)} s CPU`);
  if (typeof rss === "number") parts.push(`${(rss / 1048576).toFixed(1)} MiB peak`);
  return parts.join(" · ");
}

/** The last results as small squares, oldest left, each titled with its time and duration. */
export function squares(results = [], zone) {
  const shown = [...results].reverse();
  return h(
    "span",
    { class: "dk-squares", role: "img", "aria-label": squaresLabel(shown) },
    shown.map((run) =>
      h("span", {
        class: `dk-square dk-${run.status}`,
        title: `${run.status} · ${wallTime(run.started_at)} ${zone || "UTC"} · ${duration(run.duration)}`,
      }),
    ),
  );
}

function squaresLabel(runs) {
  if (!runs.length) return "no finished runs yet";
  const failed = runs.filter((run) => run.status !== "success").length;
  return `last ${runs.length} runs: ${runs.length - failed} succeeded, ${failed} failed`;
}

/** A "#/..." link. */
export function link(hash, ...children) {
  return h("a", { href: hash }, ...children);
}

export const enc = encodeURIComponent;

/** The hash of a job's page, and of one of its executions. */
export const jobHash = (job) => `#/jobs/${enc(job)}`;
export const executionHash = (job, id) => `#/jobs/${enc(job)}/executions/${enc(id)}`;

/** An error as a line the user can read, with the server's explanation. */
export function problem(error) {
  return h("p", { class: "dk-error", role: "alert" }, error.message || String(error));
}
