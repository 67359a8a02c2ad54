// One execution: its result and its full output. A running one's output streams in as it is
// printed (relayed by the server this page talks to), then the result is read again.

import { AnsiWriter } from "./ansi.js";
import { findBox } from "./find.js";
import {
  badge,
  executionDuration,
  h,
  isRunning,
  jobHash,
  link,
  put,
  resourceUse,
  timeIn,
} from "./dom.js";

function facts(job, execution) {
  const zone = job.timezone || "UTC";
  const running = isRunning(execution);
  const status = running ? "running" : execution.success ? "success" : "failed";
  const item = (label, ...value) => [h("dt", {}, label), h("dd", {}, ...value)];
  return h(
    "dl",
    { class: "dk-summary" },
    item("Result", badge(status)),
    item("Started", timeIn(execution.started_at, zone)),
    item("Finished", running ? "still running" : timeIn(execution.finished_at, zone)),
    item("Duration", executionDuration(execution)),
    execution.scheduled_at ? item("Due at", timeIn(execution.scheduled_at, zone)) : null,
    resourceUse(execution) ? item("Resources", resourceUse(execution)) : null,
    item("Node", execution.node_name),
    item("Attempt", String(execution.attempt)),
    item("Id", h("code", {}, execution.id)),
  );
}

function toolbar(output, name) {
  const toggle = (label, key, checked, onchange) =>
    h(
      "label",
      {},
      h("input", {
        type: "checkbox",
        "data-key": key,
        checked,
        onchange: (e) => onchange(e.target.checked),
      }),
      ` ${label}`,
    );
  const download = h(
    "button",
    {
      type: "button",
      onclick: () => {
        const url = URL.createObjectURL(new Blob([output.textContent], { type: "text/plain" }));
        const anchor = h("a", { href: url, download: `${name}.log` });
        anchor.click();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
      },
    },
    "Download",
  );
  return h(
    "div",
    { class: "dk-toolbar", role: "toolbar", "aria-label": "Output" },
    toggle("Wrap lines", "wrap", true, (on) => output.classList.toggle("dk-nowrap", !on)),
    toggle("Follow the end", "follow", true, (on) => {
      output.dataset.follow = on ? "yes" : "no";
    }),
    download,
    findBox(output, h),
  );
}

const writers = new WeakMap();

/** Append a chunk to the output (ANSI colours as classes) and keep its end in view while
 * following. */
function append(output, text) {
  if (!text) return;
  if (!writers.has(output)) writers.set(output, new AnsiWriter(output));
  writers.get(output).write(text);
  if (output.dataset.follow === "yes") output.scrollTop = output.scrollHeight;
}

async function readAll(source, job, id, output, signal) {
  let offset = 0;
  for (;;) {
    const chunk = await source.output(job, id, offset, signal);
    append(output, chunk.data);
    if (chunk.done || chunk.next <= offset) return;
    offset = chunk.next;
  }
}

/** The execution once its result is recorded. The output's end can be announced a moment
 * before the history holds the finished run: look for it in the job's list (where a missing
 * run is no 404) until it is there. */
async function settled(source, name, id, signal) {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const { executions } = await source.executions(name, { start: 0, size: 50 }, signal);
    const found = executions.find((execution) => execution.id === id);
    if (found && !isRunning(found)) return found;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return source.execution(name, id, signal);
}

/** Render execution `id` of job `name` into `el`. */
export async function executionView({ source, el, name, id, signal, fail }) {
  const about = h("section", { "aria-label": "Result" });
  const output = h("pre", {
    class: "dk-output",
    tabindex: "0",
    "aria-label": "Output",
    "aria-live": "off",
    "data-follow": "yes",
  });
  put(
    el,
    h("p", { class: "dk-crumbs" }, link("#/jobs", "Jobs"), " / ", link(jobHash(name), name), " /"),
    h("h1", {}, "Execution"),
    about,
    h("h2", {}, "Output"),
    toolbar(output, `${name}-${id}`),
    output,
  );
  try {
    const [job, execution] = await Promise.all([
      source.job(name, signal),
      source.execution(name, id, signal),
    ]);
    put(about, facts(job, execution));
    if (isRunning(execution)) {
      output.setAttribute("aria-busy", "true");
      const ticking = setInterval(() => put(about, facts(job, execution)), 1000);
      try {
        await source.followOutput(name, id, 0, (chunk) => append(output, chunk.data), signal);
      } finally {
        clearInterval(ticking);
      }
      output.removeAttribute("aria-busy");
      if (!signal.aborted) put(about, facts(job, await settled(source, name, id, signal)));
    } else {
      await readAll(source, name, id, output, signal);
    }
    output.dataset.complete = "yes";
  } catch (error) {
    if (!signal.aborted) fail(error, about);
  }
}
