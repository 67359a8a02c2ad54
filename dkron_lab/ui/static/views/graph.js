// Dependencies (#/graph): jobs with a parent or children as a layered SVG graph, parents left
// of their children, each box coloured by the job's last status and a link to its page. Dkron
// chains are trees (one parent a job), so a layer per depth is enough: no layout library.

import { s } from "./charts.js";
import { h, jobHash, put, rerender } from "./dom.js";

const BOX = { width: 170, height: 34, gapX: 60, gapY: 14 };
const STATUS_WORDS = {
  success: "succeeded",
  failed: "failed",
  partially_failed: "partly failed",
  untriggered: "never run",
  "": "never run",
};

/** Layers of the jobs that take part in a chain: `[[job, ...], ...]`, roots first; each layer
 * keeps the order of its parents so that edges cross little. */
export function layers(jobs) {
  const byName = new Map(jobs.map((job) => [job.name, job]));
  const chained = jobs.filter((job) => job.parent_job || job.dependent_jobs?.length);
  const children = new Map();
  for (const job of chained) {
    if (job.parent_job && byName.has(job.parent_job)) {
      if (!children.has(job.parent_job)) children.set(job.parent_job, []);
      children.get(job.parent_job).push(job);
    }
  }
  const roots = chained.filter((job) => !job.parent_job || !byName.has(job.parent_job));
  const out = [];
  let layer = roots.sort((a, b) => a.name.localeCompare(b.name));
  const seen = new Set();
  while (layer.length) {
    layer = layer.filter((job) => !seen.has(job.name));
    if (!layer.length) break;
    layer.forEach((job) => seen.add(job.name));
    out.push(layer);
    layer = layer.flatMap((job) =>
      (children.get(job.name) || []).sort((a, b) => a.name.localeCompare(b.name)),
    );
  }
  return out;
}

function graph(columns) {
  const rows = Math.max(...columns.map((column) => column.length));
  const width = columns.length * (BOX.width + BOX.gapX) - BOX.gapX + 8;
  const height = rows * (BOX.height + BOX.gapY) - BOX.gapY + 8;
  const at = new Map();
  columns.forEach((column, x) =>
    column.forEach((job, y) =>
      at.set(job.name, { x: 4 + x * (BOX.width + BOX.gapX), y: 4 + y * (BOX.height + BOX.gapY) }),
    ),
  );
  const edges = columns.flat().flatMap((job) => {
    const from = at.get(job.parent_job);
    const to = at.get(job.name);
    if (!from || !to) return [];
    const x1 = from.x + BOX.width;
    const y1 = from.y + BOX.height / 2;
    const x2 = to.x;
    const y2 = to.y + BOX.height / 2;
    const mid = (x1 + x2) / 2;
    return [
      s("path", { class: "dk-edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }),
    ];
  });
  const boxes = columns.flat().map((job) => {
    const { x, y } = at.get(job.name);
    const status = job.status || "untriggered";
    const words = `${job.name}: ${STATUS_WORDS[status] ?? status}${job.parent_job ? `, after ${job.parent_job}` : ""}`;
    return s(
      "a",
      { href: jobHash(job.name), "aria-label": words, class: "dk-node", "data-job": job.name },
      s("title", {}, words),
      s("rect", {
        class: `dk-node-box dk-node-${status}`,
        x,
        y,
        width: BOX.width,
        height: BOX.height,
        rx: 5,
      }),
      s(
        "text",
        { x: x + 10, y: y + 21 },
        job.name.length > 22 ? `${job.name.slice(0, 21)}…` : job.name,
      ),
    );
  });
  return s(
    "svg",
    {
      class: "dk-graph",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "group",
      "aria-label": "Job dependencies, parents left of their children",
    },
    edges,
    boxes,
  );
}

export function graphView({ source, el, signal, fail, every }) {
  const body = h("div");
  put(
    el,
    h("h1", {}, "Dependencies"),
    h(
      "p",
      { class: "dk-muted" },
      "Jobs that run after a parent, left to right; each box is a link, coloured by its last result.",
    ),
    body,
  );
  every(10000, async () => {
    try {
      const { jobs } = await source.jobs({ _start: 0, _end: 1000, _sort: "name" }, signal);
      const columns = layers(jobs);
      rerender(body, () =>
        columns.length
          ? h("div", { class: "dk-scroll" }, graph(columns))
          : h("p", { class: "dk-empty" }, "No job has a parent or children."),
      );
    } catch (error) {
      fail(error, body);
    }
  });
}
