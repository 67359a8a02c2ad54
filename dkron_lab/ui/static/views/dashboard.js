// The dashboard: live counters (each a link to the jobs it counts), then the jobs list, paged,
// filtered and sorted by the server; the filter lives in the URL hash (#/jobs?status=failed).

import { JOB_STATUSES } from "../source.js";
import { jobActions } from "./actions.js";
import { bulkBar, selectAll, selectOne } from "./bulk.js";
import { needs, showRole } from "./role.js";
import {
  badge,
  h,
  healthPill,
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
const SORTS = {
  name: "Name",
  next: "Next run",
  last_error: "Last failure",
  last_success: "Last success",
};
const STATUS_LABELS = {
  success: "Succeeded",
  failed: "Failing",
  partially_failed: "Partly failed",
  untriggered: "Never run",
};

/** The filter the hash's query asks for, as /v1/jobs parameters. */
export function jobFilter(query) {
  const page = Math.max(1, Number(query.get("page")) || 1);
  const filter = {
    q: query.get("q") || "",
    status: JOB_STATUSES.includes(query.get("status")) ? query.get("status") : "",
    disabled: ["true", "false"].includes(query.get("disabled")) ? query.get("disabled") : "",
    _sort: query.get("sort") in SORTS ? query.get("sort") : "name",
    _order: query.get("order") === "desc" ? "DESC" : "ASC",
    metadata: query.get("metadata") || "",
  };
  return { filter, page };
}

/** "team=data, env=prod" as `{"metadata[team]": "data", "metadata[env]": "prod"}`. */
export function metadataQuery(text) {
  const pairs = text.split(",").map((pair) => pair.split("="));
  return Object.fromEntries(
    pairs
      .filter(([key, value]) => key.trim() && value !== undefined)
      .map(([key, ...value]) => [`metadata[${key.trim()}]`, value.join("=").trim()]),
  );
}

/** The /v1/jobs parameters of a filter and page. */
function apiQuery(filter, page) {
  const { metadata, ...rest } = filter;
  return { ...rest, ...metadataQuery(metadata), _start: (page - 1) * PAGE, _end: page * PAGE };
}

function filterHash(filter, page = 1) {
  const query = new URLSearchParams();
  if (filter.q) query.set("q", filter.q);
  if (filter.status) query.set("status", filter.status);
  if (filter.disabled) query.set("disabled", filter.disabled);
  if (filter._sort !== "name") query.set("sort", filter._sort);
  if (filter._order === "DESC") query.set("order", "desc");
  if (filter.metadata) query.set("metadata", filter.metadata);
  if (page > 1) query.set("page", page);
  const text = query.toString();
  return text ? `#/jobs?${text}` : "#/jobs";
}

function counters(data) {
  const tile = (label, value, hash, status) =>
    h(
      "a",
      { class: `dk-tile${status ? ` dk-tile-${status}` : ""}`, href: hash },
      h("span", { class: "dk-tile-value" }, value),
      h("span", { class: "dk-tile-label" }, label),
    );
  const leader = data.leader?.Name || data.leader?.name || "none yet";
  return h(
    "section",
    { class: "dk-tiles", "aria-label": "Counters" },
    h(
      "div",
      { class: "dk-tile dk-tile-leader" },
      h("span", { class: "dk-tile-value" }, leader),
      h("span", { class: "dk-tile-label" }, "Leader"),
    ),
    tile("Jobs", data.total, "#/jobs"),
    JOB_STATUSES.map((status) =>
      tile(STATUS_LABELS[status], data.statuses[status], `#/jobs?status=${status}`, status),
    ),
    tile("Running now", data.running.length, "#/busy", "running"),
  );
}

function controls(filter, navigate) {
  const go = (change) => navigate(filterHash({ ...filter, ...change }), { replace: true });
  const select = (label, name, value, options, onchange) =>
    h(
      "label",
      {},
      `${label} `,
      h(
        "select",
        { name, "data-key": `filter:${name}`, onchange: (event) => onchange(event.target.value) },
        Object.entries(options).map(([key, text]) =>
          h("option", { value: key, selected: key === value }, text),
        ),
      ),
    );
  let typing;
  const search = h("input", {
    type: "search",
    name: "q",
    "data-key": "filter:q",
    value: filter.q,
    placeholder: "name or display name",
    oninput: (event) => {
      const q = event.target.value.trim(); // read now: a shadow root retargets it later
      clearTimeout(typing);
      typing = setTimeout(() => go({ q }), 300);
    },
  });
  const metadata = h("input", {
    type: "text",
    name: "metadata",
    "data-key": "filter:metadata",
    value: filter.metadata,
    placeholder: "key=value, ...",
    onchange: (event) => go({ metadata: event.target.value.trim() }),
  });
  return h(
    "form",
    { class: "dk-filters", role: "search", onsubmit: (event) => event.preventDefault() },
    h("label", {}, "Search ", search),
    h("label", {}, "Metadata ", metadata),
    select("Status", "status", filter.status, { "": "any", ...STATUS_LABELS }, (status) =>
      go({ status }),
    ),
    select(
      "Schedule",
      "disabled",
      filter.disabled,
      { "": "any", false: "enabled", true: "disabled" },
      (disabled) => go({ disabled }),
    ),
    select("Sort by", "sort", filter._sort, SORTS, (_sort) => go({ _sort })),
    select("Order", "order", filter._order, { ASC: "ascending", DESC: "descending" }, (_order) =>
      go({ _order }),
    ),
  );
}

function jobRow(job, running, actions, select) {
  const zone = job.timezone || "UTC";
  const status = h(
    "td",
    {},
    badge(job.status),
    running ? [" ", badge("running")] : null,
    job.health ? [" ", healthPill(job)] : null,
  );
  return h(
    "tr",
    { class: job.disabled ? "dk-disabled" : "" },
    select,
    h(
      "th",
      { scope: "row" },
      link(jobHash(job.name), job.displayname || job.name),
      job.displayname ? h("small", { class: "dk-muted" }, ` ${job.name}`) : null,
    ),
    status,
    h("td", {}, squares(job.last_results, zone)),
    h(
      "td",
      { class: "dk-mono" },
      job.schedule,
      job.disabled ? h("small", {}, " (disabled)") : null,
    ),
    h("td", {}, job.disabled ? "—" : timeIn(job.next, zone)),
    h("td", { class: "dk-num" }, duration(job.median_duration)),
    h("td", needs("operator"), actions),
  );
}

function table(jobs, running, actionsOf, bulk) {
  if (!jobs.length) return h("p", { class: "dk-empty" }, "No job matches.");
  return h(
    "div",
    { class: "dk-scroll" },
    h(
      "table",
      { class: "dk-table dk-jobs" },
      h("caption", { class: "dk-sr" }, "Jobs"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          bulk.all,
          ["Job", "Status", "Last runs", "Schedule", "Next run", "Median"].map((c) =>
            h("th", { scope: "col" }, c),
          ),
          h("th", { scope: "col", ...needs("operator") }, "Actions"),
        ),
      ),
      h(
        "tbody",
        {},
        jobs.map((job) => jobRow(job, running.has(job.name), actionsOf(job), bulk.one(job))),
      ),
    ),
  );
}

function pager(filter, page, total, navigate) {
  const pages = Math.max(1, Math.ceil(total / PAGE));
  const first = total ? (page - 1) * PAGE + 1 : 0;
  const last = Math.min(total, page * PAGE);
  const to = (n) => () => navigate(filterHash(filter, n));
  return h(
    "nav",
    { class: "dk-pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: page <= 1, onclick: to(page - 1) }, "Previous"),
    h("span", { "aria-live": "polite" }, `${first}–${last} of ${total}`),
    h("button", { type: "button", disabled: page >= pages, onclick: to(page + 1) }, "Next"),
  );
}

function nodes(members, leader, running) {
  const busy = (name) => running.filter((execution) => execution.node_name === name).length;
  const tags = (member) =>
    Object.entries(member.Tags || {})
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([key, value]) => h("code", { class: "dk-chip" }, `${key}=${value}`));
  return h(
    "section",
    { "aria-labelledby": "dk-nodes" },
    h("h2", { id: "dk-nodes" }, "Nodes"),
    h(
      "div",
      { class: "dk-scroll" },
      h(
        "table",
        { class: "dk-table dk-nodes" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Node", "Address", "Status", "Running", "Tags"].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          members.map((member) =>
            h(
              "tr",
              {},
              h(
                "th",
                { scope: "row" },
                member.Name,
                member.Name === leader ? h("small", { class: "dk-muted" }, " leader") : null,
              ),
              h("td", { class: "dk-mono" }, `${member.Addr}:${member.Port}`),
              h("td", {}, member.statusText || String(member.Status)),
              h("td", { class: "dk-num" }, String(busy(member.Name))),
              h("td", { class: "dk-wrap" }, tags(member)),
            ),
          ),
        ),
      ),
    ),
  );
}

/** Render the dashboard into `el` and refresh it every few seconds until `signal` aborts. */
export function dashboardView({ source, el, query, signal, navigate, fail, every }) {
  const { filter, page } = jobFilter(query);
  const state = { confirming: null, notice: null, selected: new Set(), bulk: null };
  const tiles = h("div", { "aria-live": "off" });
  const notice = h("div", { role: "status", class: "dk-notice" });
  const list = h("div");
  const cluster = h("div");
  put(
    el,
    h(
      "div",
      { class: "dk-heading" },
      h("h1", {}, filter.status ? `Jobs: ${STATUS_LABELS[filter.status]}` : "Jobs"),
      h("a", { href: "#/jobs/new", class: "dk-button", ...needs("admin") }, "New job"),
    ),
    tiles,
    controls(filter, navigate),
    notice,
    list,
    cluster,
  );
  showRole(source);
  // The list is drawn as soon as its page arrives; the counters, the Running badges and the
  // nodes follow (on a first load with many jobs, counting them takes longer than one page,
  // so they are asked for only then).
  const last = { counts: null, page: null, running: new Set(), members: [] };
  const draw = (focusKey) => {
    const { counts, page: shown, running, members } = last;
    if (counts) {
      put(tiles, counters(counts));
      const leader = counts.leader?.Name || counts.leader?.name;
      put(cluster, nodes(members, leader, counts.running));
    }
    if (!shown) return;
    const actionsOf = (job) => jobActions({ source, job, state, after });
    const bulk = {
      all: selectAll(shown.jobs, state, after),
      one: (job) => selectOne(job, state, after),
    };
    rerender(
      list,
      () => [
        bulkBar({ source, jobs: shown.jobs, state, after }),
        table(shown.jobs, running, actionsOf, bulk),
        pager(filter, page, shown.total, navigate),
      ],
      focusKey,
    );
  };
  const after = (action, error, focusKey) => {
    if (error) put(notice, problem(error));
    else if (action) put(notice, h("p", {}, `Done: ${action}.`));
    draw(focusKey);
    if (action) refresh();
  };
  const refresh = async () => {
    try {
      const first = last.page === null;
      const listed = source.jobs(apiQuery(filter, page), signal).then((shown) => {
        last.page = shown;
        if (first) draw();
      });
      // On the first load the counts are asked for once the list has come: the server answers
      // on one thread, each count goes over every job, and asked together they held the list
      // back (with 10,000 jobs the list came last, after all five).
      if (first) await listed;
      const [counts, members] = await Promise.all([
        source.counters(signal),
        source.members(signal),
        listed,
      ]);
      Object.assign(last, {
        counts,
        members,
        running: new Set(counts.running.map((e) => e.job_name)),
      });
      draw();
    } catch (error) {
      fail(error, list);
    }
  };
  every(5000, refresh);
}
