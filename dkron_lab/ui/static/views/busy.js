// What runs now, on every node: each run a link to its live output.

import {
  badge,
  executionDuration,
  executionHash,
  h,
  jobHash,
  link,
  put,
  rerender,
  timeIn,
} from "./dom.js";

function row(execution) {
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, link(jobHash(execution.job_name), execution.job_name)),
    h(
      "td",
      {},
      link(executionHash(execution.job_name, execution.id), timeIn(execution.started_at, null)),
    ),
    h("td", {}, badge("running")),
    h("td", { class: "dk-num" }, executionDuration(execution)),
    h("td", {}, execution.node_name),
  );
}

export function busyView({ source, el, signal, fail, every }) {
  const list = h("div");
  put(el, h("h1", {}, "Running now"), list);
  every(2000, async () => {
    try {
      const running = await source.busy(signal);
      rerender(list, () =>
        running.length
          ? h(
              "table",
              { class: "dk-table" },
              h(
                "thead",
                {},
                h(
                  "tr",
                  {},
                  ["Job", "Started", "State", "For", "Node"].map((c) =>
                    h("th", { scope: "col" }, c),
                  ),
                ),
              ),
              h("tbody", {}, running.map(row)),
            )
          : h("p", { class: "dk-empty" }, "Nothing runs now."),
      );
    } catch (error) {
      fail(error, list);
    }
  });
}
