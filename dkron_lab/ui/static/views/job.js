// A job's page: what it is, what it does next, its actions, and its executions newest first,
// each a link to its own page (#/jobs/<job>/executions/<id>).

import { HEARTBEAT, jobActions } from "./actions.js";
import { historySection } from "./history.js";
import { overridesButton, overridesDialog } from "./overrides.js";
import { needs, showRole } from "./role.js";
import {
  badge,
  executionDuration,
  executionHash,
  h,
  healthPill,
  isRunning,
  jobHash,
  link,
  problem,
  put,
  rerender,
  resourceUse,
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
    job.health
      ? field(
          "Health",
          healthPill(job, { reasonShown: true }),
          job.health_reason ? ` ${job.health_reason}` : "",
        )
      : null,
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
    field("Limits", limits(job)),
    job.calendar
      ? field(
          "Calendar",
          h("code", {}, job.calendar),
          job.calendar_mode === "only" ? " (only its days)" : " (its days excluded)",
        )
      : null,
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

function limits(job) {
  const late = job.max_lateness ? `late after ${job.max_lateness}` : "late: server's default";
  const long = job.max_duration
    ? `overdue after ${job.max_duration}${job.on_overdue === "kill" ? ", then killed" : ""}`
    : "overdue: server's default";
  return `${late}; ${long}`;
}

/** A copyable text: a read-only field (selectable by hand) and a Copy button. */
function copyable(label, key, value) {
  const box = h("input", { type: "text", readonly: true, value, "aria-label": label });
  const said = h("span", { role: "status", class: "dk-muted" });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      put(said, "Copied.");
    } catch {
      box.select();
      put(said, "Selected: press Ctrl+C to copy.");
    }
  };
  const button = h(
    "button",
    { type: "button", "data-key": key, "aria-label": `Copy ${label}`, onclick: copy },
    "Copy",
  );
  return h("div", { class: "dk-copy" }, box, button, said);
}

/** A heartbeat check's ping URL and how to ping it (drawn once per visit); nothing for other
 * jobs. */
function heartbeatSection(source, job) {
  if (job.executor !== HEARTBEAT || !job.ping_url) return null;
  const ping = source.serverUrl(job.ping_url);
  return h(
    "section",
    { class: "dk-check", "aria-labelledby": "dk-ping" },
    h("h2", { id: "dk-ping" }, "Heartbeat check"),
    h(
      "p",
      {},
      "This check runs nothing, so it has no Run button: the work it watches pings it ",
      "when done, and each ping is a run below. No ping by the end of a due instant's ",
      "grace (max lateness) is a missed run.",
    ),
    copyable("Ping URL", "copy:ping", ping),
    ping.startsWith("/")
      ? h("p", { class: "dk-muted" }, "Put the server's address before it.")
      : null,
    h("p", {}, "From a crontab or a script:"),
    copyable("Ping command", "copy:curl", `curl -fsS -X POST -d "done" "${ping}"`),
    h(
      "p",
      { class: "dk-muted" },
      "The key in the URL opens this check's pings and nothing else. ",
      h("code", {}, "/ping/start"),
      " and ",
      h("code", {}, "/ping/fail"),
      " say the work began or failed (docs/monitoring.md).",
    ),
  );
}

/** The job's badge, fetched with this page's credentials, and its markdown (drawn once). */
function badgeSection(source, job, signal) {
  const badgeUrl = source.serverUrl(`/v1/jobs/${encodeURIComponent(job.name)}/badge.svg`);
  const image = h("span");
  const alt = `status badge of ${job.name}`;
  source
    .badgeImage(job.name, signal)
    .then((data) => data && put(image, h("img", { src: data, alt })))
    .catch(() => put(image, h("span", { class: "dk-muted" }, "(the badge could not be read)")));
  return h(
    "section",
    { class: "dk-check", "aria-labelledby": "dk-badge" },
    h("h2", { id: "dk-badge" }, "Badge"),
    h("p", {}, image),
    copyable("Badge markdown", "copy:badge", `![status](${badgeUrl})`),
    h(
      "p",
      { class: "dk-muted" },
      "A README or wiki page shows it without a token only when the server runs with ",
      h("code", {}, "--public-badges"),
      ".",
    ),
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
    h("td", { class: "dk-num" }, resourceUse(execution)),
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
              [
                "Started",
                "Result",
                "Duration",
                "Node",
                "Attempt",
                "Resources",
                "Output (last line)",
              ].map((c) => h("th", { scope: "col" }, c)),
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
  const ping = h("div");
  const badgeBox = h("div");
  const runs = h("section", { id: "executions", "aria-labelledby": "dk-executions" });
  const history = historySection({ source, name, signal });
  const dialog = overridesDialog({ source, after: (action, error) => after(action, error) });
  put(
    el,
    h("p", { class: "dk-crumbs" }, link("#/jobs", "Jobs"), " / "),
    head,
    notice,
    about,
    ping,
    history.el,
    h("h2", { id: "dk-executions", tabindex: "-1" }, "Executions"),
    runs,
    badgeBox,
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
    const overrides = job.executor === HEARTBEAT ? null : overridesButton(job, dialog);
    rerender(head, () => [heading, actions, overrides, edit], focusKey);
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
      if (!badgeBox.hasChildNodes()) {
        put(ping, heartbeatSection(source, job));
        put(badgeBox, badgeSection(source, job, signal));
      }
      draw();
      history.update(last.job, `${page.total}:${last.running}:${job.success_count}`);
    } catch (error) {
      fail(error, about);
    }
  };
  every(3000, refresh);
}
