// The timeline (#/timeline): on one axis from 24 h ago to 24 h ahead, each job's past runs as
// bars (start to end, coloured by result) and its next fires as ticks (GET /v1/schedule, the
// server's own instants), with a line at now. Jobs: those with the soonest next fire, and
// every job that ran in the last 24 h.

import { s } from "./charts.js";
import { h, isRunning, jobHash, put, rerender, wallTime } from "./dom.js";

const HOUR = 3_600_000;
const SPAN = 24 * HOUR;
const JOBS = 40;
const FIRES = 200;
const LAYOUT = { width: 960, label: 170, row: 22, top: 22 };

/** Rows `{name, runs: [{start, end, status, execution}], fires: [ms], more}` of the jobs that
 * ran in (now - SPAN, now] or fire in (now, now + SPAN], by name. */
export function timelineRows(executions, schedules, now) {
  const rows = new Map();
  const row = (name) => {
    if (!rows.has(name)) rows.set(name, { name, runs: [], fires: [], more: false });
    return rows.get(name);
  };
  for (const e of executions) {
    const start = Date.parse(e.started_at);
    if (!(start > now - SPAN)) continue;
    const running = isRunning(e);
    row(e.job_name).runs.push({
      start,
      end: running ? now : Date.parse(e.finished_at),
      status: running ? "running" : e.success ? "success" : "failed",
      execution: e,
    });
  }
  for (const [name, instants] of schedules) {
    const fires = instants.map(Date.parse).filter((t) => t > now && t <= now + SPAN);
    if (!fires.length) continue;
    const target = row(name);
    target.fires = fires;
    target.more = instants.length >= FIRES && fires.length === instants.length;
  }
  return [...rows.values()].sort((a, b) => a.name.localeCompare(b.name));
}

function rowLabel(row) {
  const failed = row.runs.filter((r) => r.status === "failed").length;
  const runs = `${row.runs.length} run${row.runs.length === 1 ? "" : "s"} in the last 24 h`;
  const fires = `${row.fires.length}${row.more ? "+" : ""} fire${row.fires.length === 1 ? "" : "s"} in the next 24 h`;
  const next = row.fires.length ? `, next at ${new Date(row.fires[0]).toISOString()}` : "";
  return `${row.name}: ${runs}${failed ? ` (${failed} failed)` : ""}, ${fires}${next}`;
}

function chart(rows, now) {
  const { width, label, row: height, top } = LAYOUT;
  const x = (t) => label + ((t - (now - SPAN)) / (2 * SPAN)) * (width - label - 8);
  const total = top + rows.length * height + 4;
  const ticks = [-24, -18, -12, -6, 0, 6, 12, 18, 24].map((hours) =>
    s(
      "g",
      { class: "dk-axis" },
      s("line", { x1: x(now + hours * HOUR), x2: x(now + hours * HOUR), y1: top - 4, y2: total }),
      s(
        "text",
        { x: x(now + hours * HOUR), y: top - 8, "text-anchor": hours === 24 ? "end" : "middle" },
        hours === 0 ? "now" : `${hours > 0 ? "+" : ""}${hours} h`,
      ),
    ),
  );
  const lines = rows.map((r, i) => {
    const y = top + i * height;
    return s(
      "g",
      { class: "dk-lane", role: "listitem", "aria-label": rowLabel(r), "data-job": r.name },
      s("title", {}, rowLabel(r)),
      s("a", { href: jobHash(r.name) }, s("text", { x: 4, y: y + 15 }, r.name.slice(0, 24))),
      r.runs.map((run) =>
        s(
          "rect",
          {
            class: `dk-run-bar dk-point dk-${run.status}`,
            x: x(run.start),
            y: y + 4,
            width: Math.max(2, x(run.end) - x(run.start)),
            height: height - 8,
          },
          s("title", {}, `${run.status}: ${wallTime(run.execution.started_at)}`),
        ),
      ),
      r.fires.map((t) =>
        s(
          "line",
          { class: "dk-fire", x1: x(t), x2: x(t), y1: y + 4, y2: y + height - 4 },
          s("title", {}, `due ${new Date(t).toISOString()}`),
        ),
      ),
    );
  });
  return s(
    "svg",
    {
      class: "dk-timeline",
      viewBox: `0 0 ${width} ${total}`,
      role: "list",
      "aria-label": "Runs in the last 24 hours and fires in the next 24 hours, by job",
    },
    ticks,
    s("line", { class: "dk-now", x1: x(now), x2: x(now), y1: top - 4, y2: total }),
    lines,
  );
}

async function load(source, signal) {
  const now = Date.now();
  const since = new Date(now - SPAN).toISOString();
  const [{ jobs }, { executions }] = await Promise.all([
    source.jobs({ _start: 0, _end: JOBS, _sort: "next", disabled: "false" }, signal),
    source.allExecutions({ since, _start: 0, _end: 1000, output_size_limit: 0 }, signal),
  ]);
  const scheduled = jobs.filter((job) => job.schedule && !job.disabled);
  const answers = await Promise.all(
    scheduled.map((job) =>
      source
        .schedule(job.schedule, job.timezone || "", FIRES, signal)
        .then((answer) => [job.name, answer.next])
        .catch(() => [job.name, []]),
    ),
  );
  return { rows: timelineRows(executions, answers, now), now };
}

export function timelineView({ source, el, signal, fail, every }) {
  const body = h("div");
  put(
    el,
    h("h1", {}, "Timeline"),
    h(
      "p",
      { class: "dk-muted" },
      `Past runs as bars (green succeeded, red failed, blue running) and the next fires as ticks, ` +
        `from 24 h ago to 24 h ahead; the ${JOBS} jobs due soonest and every job that ran.`,
    ),
    body,
  );
  every(30_000, async () => {
    try {
      const { rows, now } = await load(source, signal);
      rerender(body, () =>
        rows.length
          ? h("div", { class: "dk-scroll" }, chart(rows, now))
          : h("p", { class: "dk-empty" }, "No run in the last 24 h and no fire in the next."),
      );
    } catch (error) {
      fail(error, body);
    }
  });
}
