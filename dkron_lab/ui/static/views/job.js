// A job's page: what it is, what it does next, its actions, and its executions newest first,
// each a link to its own page (#/jobs/<job>/executions/<id>).

import { jobActions } from "./actions.js";
import { historySection } from "./history.js";
import { overridesButton, overridesDialog } from "./overrides.js";
import { needs, showRole } from "./role.js";
import {
  badge,
  executionDuration,
  executionHash,
  h,
  isRunning,
  jobHash,
  link,
  problem,
  put,
  rerender,
  squares,
  timeIn,
  duration,
} from "./dom.js";

const PAGE = 25;

function field(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function labels(object) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("span", { class: "dk-muted" }, "—");
  return entries.map(([key, value]) => h("code", { class: "dk-chip" }, `${key}=${value}`));
}

function summary(job, running) {
  const zone = job.timezone || "UTC";
  const config = job.executor_config || {};
  return h(
    "dl",
    { class: "dk-summary" },
    field("Status", badge(job.status), running ? [" ", badge("running")] : null),
    field("Last runs", squares(job.last_results, zone)),
    field(
      "Schedule",
      h("code", {}, job.schedule || "(after its parent)"),
      job.disabled ? " — disabled" : "",
    ),
    field("Time zone", zone),
    field("Next run", job.disabled ? "—" : timeIn(job.next, zone)),
    field("Last success", timeIn(job.last_success, zone)),
    field("Last failure", timeIn(job.last_error, zone)),
    field("Runs", `${job.success_count} succeeded, ${job.error_count} failed`),
    field("Median duration", duration(job.median_duration) || "—"),
    field("Executor", h("code", {}, job.executor)),
    config.command ? field("Command", h("pre", { class: "dk-command" }, config.command)) : null,
    field("Concurrency", job.concurrency || "allow"),
    field("Retries", String(job.retries ?? 0)),
    field("Target tags", labels(job.tags)),
    field("Metadata", labels(job.metadata)),
    job.parent_job ? field("Parent", link(jobHash(job.parent_job), job.parent_job)) : null,
    job.dependent_jobs?.length
      ? field(
          "Children",
          job.dependent_jobs.map((child) => [link(jobHash(child), child), " "]),
        )
      : null,
    job.owner ? field("Owner", job.owner, job.owner_email ? ` <${job.owner_email}>` : "") : null,
  );
}

function executionRow(job, execution) {
  const zone = job.timezone || "UTC";
  const running = isRunning(execution);
  const status = running ? "running" : execution.success ? "success" : "failed";
  return h(
    "tr",
    {},
    h(
      "th",
      { scope: "row" },
      link(executionHash(job.name, execution.id), timeIn(execution.started_at, zone)),
    ),
    h("td", {}, badge(status)),
    h("td", { class: "dk-num" }, executionDuration(execution)),
    h("td", {}, execution.node_name),
    h("td", { class: "dk-num" }, String(execution.attempt)),
    h("td", {}, h("code", { class: "dk-tail" }, lastLine(execution.output))),
  );
}

function lastLine(output) {
  const lines = String(output || "")
    .trimEnd()
    .split("\n");
  return lines[lines.length - 1].slice(0, 120);
}

function executions(job, page, start, go) {
  const rows = page.executions;
  const table = rows.length
    ? h(
        "div",
        { class: "dk-scroll" },
        h(
          "table",
          { class: "dk-table" },
          h("caption", { class: "dk-sr" }, `Executions of ${job.name}, newest first`),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Started", "Result", "Duration", "Node", "Attempt", "Output (last line)"].map((c) =>
                h("th", { scope: "col" }, c),
              ),
            ),
          ),
          h(
            "tbody",
            {},
            rows.map((execution) => executionRow(job, execution)),
          ),
        ),
      )
    : h("p", { class: "dk-empty" }, "No execution yet.");
  const last = Math.min(page.total, start + PAGE);
  return [
    table,
    h(
      "nav",
      { class: "dk-pager", "aria-label": "Execution pages" },
      h(
        "button",
        {
          type: "button",
          "data-key": "newer",
          disabled: start <= 0,
          onclick: () => go(start - PAGE),
        },
        "Newer",
      ),
      h("span", {}, `${page.total ? start + 1 : 0}–${last} of ${page.total}`),
      h(
        "button",
        {
          type: "button",
          "data-key": "older",
          disabled: last >= page.total,
          onclick: () => go(start + PAGE),
        },
        "Older",
      ),
    ),
  ];
}

/** Render job `name`'s page into `el`; `focus: "executions"` scrolls to its executions (the
 * Dkron UI's #/jobs/<job>/show/executions). */
export function jobView({ source, el, name, focus, signal, navigate, fail, every }) {
  const state = { confirming: null, start: 0 };
  const head = h("div", { class: "dk-heading" });
  const notice = h("div", { role: "status", class: "dk-notice" });
  const about = h("section", { "aria-label": "Summary" });
  const runs = h("section", { id: "executions", "aria-labelledby": "dk-executions" });
  const history = historySection({ source, name, signal });
  const dialog = overridesDialog({ source, after: (action, error) => after(action, error) });
  put(
    el,
    h("p", { class: "dk-crumbs" }, link("#/jobs", "Jobs"), " / "),
    head,
    notice,
    about,
    history.el,
    h("h2", { id: "dk-executions", tabindex: "-1" }, "Executions"),
    runs,
    dialog.el,
  );
  showRole(source);
  let last = null;
  let scrolled = false;
  const draw = (focusKey) => {
    if (!last) return;
    const { job, page, running } = last;
    const actions = jobActions({ source, job, state, after });
    const edit = h(
      "span",
      { class: "dk-actions", ...needs("admin") },
      link(`${jobHash(job.name)}/edit`, "Edit"),
      link(`#/jobs/new?from=${encodeURIComponent(job.name)}`, "Clone"),
    );
    const heading = h("h1", {}, job.displayname || job.name);
    rerender(head, () => [heading, actions, overridesButton(job, dialog), edit], focusKey);
    put(about, summary(job, running));
    rerender(runs, () => executions(job, page, state.start, go));
    if (focus === "executions" && !scrolled) {
      scrolled = true;
      el.querySelector("#dk-executions").focus();
    }
  };
  const go = (start) => {
    state.start = Math.max(0, start);
    refresh();
  };
  const after = (action, error, focusKey) => {
    if (action === "remove" && !error) return navigate("#/jobs");
    if (error) put(notice, problem(error));
    else if (action) put(notice, h("p", {}, `Done: ${action}.`));
    draw(focusKey);
    if (action) refresh();
  };
  const refresh = async () => {
    try {
      const [job, page, busy, stats] = await Promise.all([
        source.job(name, signal),
        source.executions(name, { start: state.start, size: PAGE }, signal),
        source.busy(signal),
        source.jobs({ q: name, _start: 0, _end: 50 }, signal),
      ]);
      const withStats = stats.jobs.find((listed) => listed.name === name) || {};
      last = {
        job: {
          ...job,
          last_results: withStats.last_results,
          median_duration: withStats.median_duration,
        },
        page,
        running: busy.some((execution) => execution.job_name === name),
      };
      draw();
      history.update(last.job, `${page.total}:${last.running}:${job.success_count}`);
    } catch (error) {
      fail(error, about);
    }
  };
  every(3000, refresh);
}
