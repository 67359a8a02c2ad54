// Runs across every job (GET /v1/executions): running ones first, then newest first; filtered
// by result and job in the URL (#/runs?status=failed&job=backup&page=2).

import {
  badge,
  executionDuration,
  executionHash,
  h,
  isRunning,
  jobHash,
  link,
  put,
  rerender,
  resourceUse,
  timeIn,
} from "./dom.js";

const PAGE = 50;
const RESULTS = { "": "any", running: "running", success: "succeeded", failed: "failed" };

function runsHash(filter, page = 1) {
  const query = new URLSearchParams();
  if (filter.status) query.set("status", filter.status);
  if (filter.job) query.set("job", filter.job);
  if (page > 1) query.set("page", page);
  const text = query.toString();
  return text ? `#/runs?${text}` : "#/runs";
}

function row(execution) {
  const status = isRunning(execution) ? "running" : execution.success ? "success" : "failed";
  const lines = String(execution.output || "")
    .trimEnd()
    .split("\n");
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, link(jobHash(execution.job_name), execution.job_name)),
    h(
      "td",
      {},
      link(executionHash(execution.job_name, execution.id), timeIn(execution.started_at, null)),
    ),
    h("td", {}, badge(status)),
    h("td", { class: "dk-num" }, executionDuration(execution)),
    h("td", {}, execution.node_name),
    h("td", { class: "dk-num" }, resourceUse(execution)),
    h("td", {}, h("code", { class: "dk-tail" }, lines[lines.length - 1].slice(0, 120))),
  );
}

function controls(filter, navigate) {
  const go = (change) => navigate(runsHash({ ...filter, ...change }), { replace: true });
  return h(
    "form",
    { class: "dk-filters", role: "search", onsubmit: (event) => event.preventDefault() },
    h(
      "label",
      {},
      "Result ",
      h(
        "select",
        {
          name: "status",
          "data-key": "runs:status",
          onchange: (e) => go({ status: e.target.value }),
        },
        Object.entries(RESULTS).map(([key, text]) =>
          h("option", { value: key, selected: key === filter.status }, text),
        ),
      ),
    ),
    h(
      "label",
      {},
      "Job ",
      h("input", {
        type: "text",
        name: "job",
        "data-key": "runs:job",
        value: filter.job,
        placeholder: "exact name",
        onchange: (e) => go({ job: e.target.value.trim() }),
      }),
    ),
  );
}

export function runsView({ source, el, query, signal, navigate, fail, every }) {
  const filter = {
    status: query.get("status") in RESULTS ? query.get("status") : "",
    job: query.get("job") || "",
  };
  const page = Math.max(1, Number(query.get("page")) || 1);
  const list = h("div");
  put(el, h("h1", {}, "Runs"), controls(filter, navigate), list);
  every(5000, async () => {
    try {
      const start = (page - 1) * PAGE;
      const { executions, total } = await source.allExecutions(
        { ...filter, _start: start, _end: start + PAGE },
        signal,
      );
      const last = Math.min(total, start + PAGE);
      rerender(list, () => [
        executions.length
          ? h(
              "div",
              { class: "dk-scroll" },
              h(
                "table",
                { class: "dk-table dk-runs" },
                h("caption", { class: "dk-sr" }, "Runs, running ones first, then newest first"),
                h(
                  "thead",
                  {},
                  h(
                    "tr",
                    {},
                    [
                      "Job",
                      "Started",
                      "Result",
                      "Duration",
                      "Node",
                      "Resources",
                      "Output (last line)",
                    ].map((c) => h("th", { scope: "col" }, c)),
                  ),
                ),
                h("tbody", {}, executions.map(row)),
              ),
            )
          : h("p", { class: "dk-empty" }, "No run matches."),
        h(
          "nav",
          { class: "dk-pager", "aria-label": "Pages" },
          h(
            "button",
            {
              type: "button",
              "data-key": "runs:newer",
              disabled: page <= 1,
              onclick: () => navigate(runsHash(filter, page - 1)),
            },
            "Newer",
          ),
          h("span", {}, `${total ? start + 1 : 0}–${last} of ${total}`),
          h(
            "button",
            {
              type: "button",
              "data-key": "runs:older",
              disabled: last >= total,
              onclick: () => navigate(runsHash(filter, page + 1)),
            },
            "Older",
          ),
        ),
      ]);
    } catch (error) {
      fail(error, list);
    }
  });
}
