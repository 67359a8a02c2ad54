// What happened over time, drawn without a charting library: a run grid (one cell per due
// instant, skipped fires and late starts included), a duration scatter (start × duration) and a
// success calendar (one cell per day). The data shaping is pure (gridEntries, calendarDays,
// scatterPoints) so it can be tested apart from the drawing. Every cell and point carries its
// numbers in a title (hover) and an aria-label; the grid and the calendar are one tab stop each
// and the arrow keys move inside them.

import { duration, h, isRunning, unset, wallTime } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

/** Seconds as dom.js's duration() says them ("120 ms" below one second). */
const span = duration;

/** Lateness over this many seconds marks a start as late. */
export const LATE_AFTER_S = 1;

export const SKIP_REASONS = {
  policy: "skipped by the job's catch-up policy",
  superseded: "superseded: a later missed fire ran instead",
  window: "older than the server's catch-up window",
  limit: "over the catch-up limit",
  expired: "after the job expired",
  calendar: "on a day its calendar excludes",
  running: "a run of it was still going on (concurrency forbid)",
  disabled: "the job was disabled when its parent's run asked for it",
};

/** An SVG element, as h() makes HTML ones. */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const seconds = (from, to) => (Date.parse(to) - Date.parse(from)) / 1000;

function runStatus(executions) {
  if (executions.some(isRunning)) return "running";
  const lastByNode = new Map();
  for (const e of executions) {
    const seen = lastByNode.get(e.node_name);
    if (!seen || e.attempt > seen.attempt) lastByNode.set(e.node_name, e);
  }
  return [...lastByNode.values()].every((e) => e.success) ? "success" : "failed";
}

/** One entry per due instant, oldest first: runs (the executions of one trigger, every node
 * and retry, grouped by `group`) and spans of skipped fires. A run: `{kind: "run", at, status,
 * lateness, executions}` (`lateness` in seconds, null for a run by hand or by its parent); a
 * span: `{kind: "skipped", at, last, count, reason}`. */
export function gridEntries(executions, skipped = []) {
  const groups = new Map();
  for (const e of executions) {
    const key = String(e.group ?? e.id);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(e);
  }
  const runs = [...groups.values()].map((members) => {
    const first = members.reduce((a, b) =>
      Date.parse(b.started_at) < Date.parse(a.started_at) ? b : a,
    );
    const due = first.scheduled_at;
    return {
      kind: "run",
      at: due || first.started_at,
      status: runStatus(members),
      lateness: due ? Math.max(0, seconds(due, first.started_at)) : null,
      executions: members,
      first,
    };
  });
  const spans = skipped.map((span) => ({
    kind: "skipped",
    at: span.first,
    last: span.last,
    count: span.count,
    reason: span.reason,
  }));
  return [...runs, ...spans].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

/** The words of a grid entry: what a title and an aria-label say. */
export function entryText(entry, zone) {
  const at = `${wallTime(entry.at)} ${zone}`;
  if (entry.kind === "skipped") {
    const span =
      entry.count > 1 ? `${entry.count} fires ${at} to ${wallTime(entry.last)}` : `fire ${at}`;
    return `Skipped: ${span}, ${SKIP_REASONS[entry.reason] || entry.reason} (${entry.reason})`;
  }
  const word = { success: "Succeeded", failed: "Failed", running: "Running" }[entry.status];
  const parts = [`${word}: due ${at}`];
  if (entry.lateness === null) parts.push("run by hand or by its parent");
  else if (entry.lateness > LATE_AFTER_S) parts.push(`started ${span(entry.lateness)} late`);
  else parts.push(`started on time (+${(entry.lateness * 1000).toFixed(0)} ms)`);
  const done = entry.executions.filter((e) => !isRunning(e));
  if (done.length) {
    const longest = Math.max(...done.map((e) => seconds(e.started_at, e.finished_at)));
    parts.push(`took ${span(longest)}`);
  }
  if (entry.executions.length > 1) parts.push(`${entry.executions.length} executions`);
  return parts.join(", ");
}

/** Arrow keys, Home and End move the focus between `cells` (one tab stop for them all);
 * `onfocus(cell)` is told which one has it, for a line of details. */
export function roving(container, cells, onfocus) {
  cells.forEach((cell, i) => {
    cell.tabIndex = i === cells.length - 1 ? 0 : -1;
    cell.addEventListener("focus", () => onfocus(cell));
    cell.addEventListener("mouseenter", () => onfocus(cell));
  });
  container.addEventListener("keydown", (event) => {
    const at = cells.indexOf(container.getRootNode().activeElement);
    if (at < 0) return;
    const step = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 }[event.key];
    let next = step === undefined ? null : at + step;
    if (event.key === "Home") next = 0;
    if (event.key === "End") next = cells.length - 1;
    if (next === null || next < 0 || next >= cells.length) return;
    event.preventDefault();
    cells[at].tabIndex = -1;
    cells[next].tabIndex = 0;
    cells[next].focus();
  });
}

function detailLine() {
  return h("p", { class: "dk-chart-detail dk-muted", "aria-live": "polite" }, "\u00a0");
}

/** The run grid: the last `limit` entries, oldest left; a run links to its execution. */
export function runGrid(entries, { zone, limit = 120, hashOf }) {
  const shown = entries.slice(-limit);
  const detail = detailLine();
  const cells = shown.map((entry) => {
    const text = entryText(entry, zone);
    const late = entry.kind === "run" && entry.lateness > LATE_AFTER_S;
    const classes = [
      "dk-cell",
      entry.kind === "skipped" ? "dk-skipped" : `dk-${entry.status}`,
      late ? "dk-late" : "",
    ].join(" ");
    const attributes = { class: classes.trim(), title: text, "aria-label": text };
    if (entry.kind === "skipped") {
      attributes.dataset = { reason: entry.reason, count: entry.count };
      return h(
        "span",
        attributes,
        entry.count > 1 ? h("span", { "aria-hidden": "true" }, "×") : null,
      );
    }
    attributes.dataset = { status: entry.status, late: late ? "yes" : "no" };
    return h("a", { ...attributes, href: hashOf(entry.first) });
  });
  const list = h("div", { class: "dk-grid", role: "group", "aria-label": gridLabel(shown) }, cells);
  roving(list, cells, (cell) => (detail.textContent = cell.getAttribute("aria-label")));
  return h(
    "figure",
    { class: "dk-chart" },
    h("figcaption", {}, `Runs by due time, oldest left (last ${shown.length})`),
    shown.length ? list : h("p", { class: "dk-empty" }, "No run and no skipped fire yet."),
    detail,
    legend([
      ["dk-success", "succeeded"],
      ["dk-failed", "failed"],
      ["dk-running", "running"],
      ["dk-skipped", "skipped (reason on hover)"],
      ["dk-success dk-late", `started over ${LATE_AFTER_S} s late`],
    ]),
  );
}

function gridLabel(entries) {
  const count = (test) => entries.filter(test).length;
  const skipped = entries.filter((e) => e.kind === "skipped").reduce((n, e) => n + e.count, 0);
  return (
    `Run grid: ${count((e) => e.status === "success")} succeeded, ` +
    `${count((e) => e.status === "failed")} failed, ${count((e) => e.status === "running")} running, ` +
    `${skipped} fires skipped, ${count((e) => e.kind === "run" && e.lateness > LATE_AFTER_S)} late. ` +
    "Arrow keys move between runs."
  );
}

function legend(items) {
  return h(
    "p",
    { class: "dk-legend" },
    items.map(([classes, text]) => [
      h("span", { class: `dk-cell dk-key ${classes}`, "aria-hidden": "true" }),
      ` ${text} `,
    ]),
  );
}

/** Finished executions as `{start, duration, success, execution}`, oldest first. */
export function scatterPoints(executions) {
  return executions
    .filter((e) => !isRunning(e) && !unset(e.started_at))
    .map((e) => ({
      start: Date.parse(e.started_at),
      duration: Math.max(0, seconds(e.started_at, e.finished_at)),
      success: e.success,
      execution: e,
    }))
    .sort((a, b) => a.start - b.start);
}

/** The q-quantile (0..1) of sorted numbers, by linear interpolation. */
export function quantile(sorted, q) {
  if (!sorted.length) return null;
  const at = (sorted.length - 1) * q;
  const low = Math.floor(at);
  const high = Math.ceil(at);
  return sorted[low] + (sorted[high] - sorted[low]) * (at - low);
}

/** Start time × duration, one point per finished execution, with the median and p95 drawn. */
export function durationScatter(executions, { zone, hashOf, width = 720, height = 220 }) {
  const points = scatterPoints(executions);
  if (!points.length) {
    return h(
      "figure",
      { class: "dk-chart" },
      h("figcaption", {}, "Durations"),
      h("p", { class: "dk-empty" }, "No finished run yet."),
    );
  }
  const pad = { left: 56, right: 12, top: 10, bottom: 28 };
  const sorted = points.map((p) => p.duration).sort((a, b) => a - b);
  const p50 = quantile(sorted, 0.5);
  const p95 = quantile(sorted, 0.95);
  const top = Math.max(sorted[sorted.length - 1], 0.001) * 1.1;
  const t0 = points[0].start;
  const t1 = Math.max(points[points.length - 1].start, t0 + 1000);
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (d) => height - pad.bottom - (d / top) * (height - pad.top - pad.bottom);
  const failed = points.filter((p) => !p.success).length;
  const label =
    `Duration of ${points.length} runs by start time: ${points.length - failed} succeeded, ` +
    `${failed} failed; median ${span(p50)}, p95 ${span(p95)}, longest ${span(sorted[sorted.length - 1])}.`;
  // The median's label at the left end, the p95's at the right: they stay apart when close.
  const line = (value, name, right) =>
    s(
      "g",
      { class: "dk-quantile" },
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }),
      s(
        "text",
        {
          x: right ? width - pad.right : pad.left + 4,
          y: y(value) - 3,
          "text-anchor": right ? "end" : "start",
        },
        `${name} ${span(value)}`,
      ),
    );
  const svg = s(
    "svg",
    {
      class: "dk-scatter",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": label,
      tabindex: 0,
      preserveAspectRatio: "xMinYMin meet",
    },
    s("title", {}, label),
    s(
      "g",
      { class: "dk-axis" },
      s("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }),
      s("line", {
        x1: pad.left,
        x2: width - pad.right,
        y1: height - pad.bottom,
        y2: height - pad.bottom,
      }),
      s("text", { x: pad.left - 4, y: pad.top + 8, "text-anchor": "end" }, span(top)),
      s("text", { x: pad.left - 4, y: height - pad.bottom, "text-anchor": "end" }, "0 s"),
      s("text", { x: pad.left, y: height - 8 }, wallTime(points[0].execution.started_at)),
      s(
        "text",
        { x: width - pad.right, y: height - 8, "text-anchor": "end" },
        wallTime(points[points.length - 1].execution.started_at),
      ),
    ),
    line(p50, "median", false),
    points.length >= 5 ? line(p95, "p95", true) : null,
    points.map((p) =>
      s(
        "a",
        { href: hashOf(p.execution), "aria-hidden": "true", tabindex: -1 },
        s(
          "circle",
          {
            class: `dk-point ${p.success ? "dk-success" : "dk-failed"}`,
            cx: x(p.start),
            cy: y(p.duration),
            r: 4,
          },
          s(
            "title",
            {},
            `${p.success ? "Succeeded" : "Failed"}: started ${wallTime(p.execution.started_at)} ${zone}, took ${span(p.duration)}`,
          ),
        ),
      ),
    ),
  );
  return h(
    "figure",
    { class: "dk-chart" },
    h(
      "figcaption",
      {},
      `Durations of the last ${points.length} finished runs (start time × duration)`,
    ),
    h("div", { class: "dk-scroll" }, svg),
    legend([
      ["dk-success", "succeeded"],
      ["dk-failed", "failed"],
    ]),
  );
}

const DAY_MS = 86_400_000;

/** Per UTC day of the last `days` (ending today): `{day: "YYYY-MM-DD", runs, ok}`; days with
 * no run have `runs: 0`. `counts` maps a day number (days since 1970-01-01) to `{runs, ok}`. */
export function calendarDays(counts, days, now = Date.now()) {
  const today = Math.floor(now / DAY_MS);
  const out = [];
  for (let day = today - days + 1; day <= today; day += 1) {
    const found = counts.get(day) || { runs: 0, ok: 0 };
    out.push({
      day: new Date(day * DAY_MS).toISOString().slice(0, 10),
      weekday: new Date(day * DAY_MS).getUTCDay(),
      ...found,
    });
  }
  return out;
}

/** Count runs per UTC day from executions (when the SQL view is not at hand). */
export function countByDay(executions) {
  const counts = new Map();
  for (const e of executions) {
    if (isRunning(e)) continue;
    const day = Math.floor(Date.parse(e.started_at) / DAY_MS);
    const seen = counts.get(day) || { runs: 0, ok: 0 };
    counts.set(day, { runs: seen.runs + 1, ok: seen.ok + (e.success ? 1 : 0) });
  }
  return counts;
}

function shareClass(cell) {
  if (!cell.runs) return "dk-share-none";
  const share = cell.ok / cell.runs;
  if (share === 1) return "dk-share-4";
  if (share >= 0.9) return "dk-share-3";
  if (share >= 0.5) return "dk-share-2";
  if (share > 0) return "dk-share-1";
  return "dk-share-0";
}

/** One cell per UTC day, weeks as columns (Monday on top), coloured by the share of runs that
 * succeeded. */
export function successCalendar(cells) {
  const detail = detailLine();
  const blanks = (cells[0].weekday + 6) % 7; // Monday first
  const items = cells.map((cell) => {
    const text = cell.runs
      ? `${cell.day}: ${cell.ok} of ${cell.runs} runs succeeded (${Math.round((100 * cell.ok) / cell.runs)}%)`
      : `${cell.day}: no run`;
    return h("span", {
      class: `dk-day ${shareClass(cell)}`,
      title: text,
      "aria-label": text,
      role: "img",
    });
  });
  const withRuns = cells.filter((c) => c.runs);
  const ok = withRuns.reduce((n, c) => n + c.ok, 0);
  const runs = withRuns.reduce((n, c) => n + c.runs, 0);
  const label =
    `Success calendar, ${cells.length} days (UTC): ${runs} runs on ${withRuns.length} days, ` +
    `${runs ? Math.round((100 * ok) / runs) : 0}% succeeded. Arrow keys move between days.`;
  const grid = h(
    "div",
    { class: "dk-calendar", role: "group", "aria-label": label },
    Array.from({ length: blanks }, () =>
      h("span", { class: "dk-day dk-blank", "aria-hidden": "true" }),
    ),
    items,
  );
  roving(grid, items, (cell) => (detail.textContent = cell.getAttribute("aria-label")));
  return h(
    "figure",
    { class: "dk-chart" },
    h("figcaption", {}, `Share of successful runs per day, last ${cells.length} days (UTC)`),
    grid,
    detail,
    legend([
      ["dk-share-none", "no run"],
      ["dk-share-0", "all failed"],
      ["dk-share-2", "half or more"],
      ["dk-share-4", "all succeeded"],
    ]),
  );
}
