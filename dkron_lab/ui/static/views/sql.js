// The SQL tab (#/sql): one read-only SELECT over the history (POST /v1/sql, docs/sql.md), run
// with the button or Ctrl+Enter; the rows as a table, the first numeric column as bars, the
// server's message when it refuses; example queries, and queries saved in this browser.

import { s } from "./charts.js";
import { h, problem, put } from "./dom.js";

const SAVED_KEY = "dkron-lab.sql.saved";
const MAX_ROWS = 1000;
const BARS = 40;

/** A few of docs/sql.md's queries. */
export const EXAMPLES = {
  "Failure rate by job": `SELECT job_name, count(*) AS runs,
       round(100 * avg((NOT success)::int), 1) AS failure_pct
FROM executions
GROUP BY job_name
ORDER BY failure_pct DESC, runs DESC`,
  "Lateness by job (ms)": `SELECT job_name,
       round(quantile_cont(lateness_s, 0.5) * 1000, 1) AS p50_ms,
       round(quantile_cont(lateness_s, 0.99) * 1000, 1) AS p99_ms,
       round(max(lateness_s) * 1000, 1) AS max_ms
FROM executions
WHERE lateness_s IS NOT NULL
GROUP BY job_name
ORDER BY p99_ms DESC`,
  "Slowest jobs this week": `SELECT job_name, count(*) AS runs,
       round(median(duration_s), 2) AS median_s,
       round(quantile_cont(duration_s, 0.95), 2) AS p95_s
FROM executions
WHERE started_at >= now() - INTERVAL 7 DAY
GROUP BY job_name
ORDER BY p95_s DESC
LIMIT 10`,
  "The last twenty failures": `SELECT job_name, node_name, finished_at, right(output, 200) AS output_tail
FROM executions
WHERE NOT success
ORDER BY finished_at DESC
LIMIT 20`,
  "Work per member, last hour": `SELECT m.name, m.status, m.leader, count(e.id) AS runs,
       coalesce(sum(e.duration_s), 0) AS busy_s
FROM members AS m
LEFT JOIN executions AS e ON e.node_name = m.name AND e.finished_at >= now() - INTERVAL 1 HOUR
GROUP BY ALL
ORDER BY runs DESC`,
};

const NUMERIC =
  /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE|REAL|DECIMAL.*)$/;

export function savedQueries(storage = localStorage) {
  try {
    const found = JSON.parse(storage.getItem(SAVED_KEY) || "{}");
    return found && typeof found === "object" ? found : {};
  } catch {
    return {};
  }
}

function storeQueries(queries, storage = localStorage) {
  storage.setItem(SAVED_KEY, JSON.stringify(queries));
}

function cell(value) {
  if (value === null || value === undefined) return h("span", { class: "dk-muted" }, "NULL");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function resultTable(answer) {
  const numeric = answer.columns.map((c) => NUMERIC.test(c.type));
  return h(
    "div",
    { class: "dk-scroll" },
    h(
      "table",
      { class: "dk-table dk-sql-result" },
      h("caption", { class: "dk-sr" }, "Query result"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          answer.columns.map((c) => h("th", { scope: "col", title: c.type }, c.name)),
        ),
      ),
      h(
        "tbody",
        {},
        answer.rows.map((row) =>
          h(
            "tr",
            {},
            row.map((value, i) => h("td", { class: numeric[i] ? "dk-num" : null }, cell(value))),
          ),
        ),
      ),
    ),
  );
}

/** Horizontal bars of the first numeric column, labelled by the first other column. */
export function barChart(answer) {
  const value = answer.columns.findIndex((c) => NUMERIC.test(c.type));
  if (value < 0 || !answer.rows.length) return null;
  const labelAt = answer.columns.findIndex((c, i) => i !== value && !NUMERIC.test(c.type));
  const rows = answer.rows.slice(0, BARS).filter((row) => typeof row[value] === "number");
  if (!rows.length) return null;
  const top = Math.max(...rows.map((row) => Math.abs(row[value])), 1e-9);
  const width = 640;
  const bar = 18;
  const left = 170;
  const name = answer.columns[value].name;
  const label = (row, i) => (labelAt >= 0 ? String(row[labelAt] ?? "NULL") : `row ${i + 1}`);
  const svg = s(
    "svg",
    {
      class: "dk-bars",
      viewBox: `0 0 ${width} ${rows.length * bar + 4}`,
      role: "img",
      "aria-label": `${name} by ${labelAt >= 0 ? answer.columns[labelAt].name : "row"}: ${rows
        .slice(0, 10)
        .map((row, i) => `${label(row, i)} ${row[value]}`)
        .join(", ")}${rows.length > 10 ? ", …" : ""}`,
    },
    rows.map((row, i) =>
      s(
        "g",
        {},
        s("title", {}, `${label(row, i)}: ${name} = ${row[value]}`),
        s(
          "text",
          { x: left - 6, y: i * bar + 13, "text-anchor": "end" },
          label(row, i).slice(0, 26),
        ),
        s("rect", {
          x: left,
          y: i * bar + 2,
          height: bar - 5,
          width: Math.max(1, (Math.abs(row[value]) / top) * (width - left - 70)),
        }),
        s(
          "text",
          { x: left + (Math.abs(row[value]) / top) * (width - left - 70) + 4, y: i * bar + 13 },
          String(row[value]),
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
      `${name}${rows.length < answer.rows.length ? ` (first ${rows.length} rows)` : ""}`,
    ),
    svg,
  );
}

export function sqlView({ el, source, signal }) {
  const box = h("textarea", {
    id: "dk-sql-query",
    "data-key": "sql:query",
    spellcheck: "false",
    "aria-describedby": "dk-sql-help",
  });
  box.value = sessionStorage.getItem("dkron-lab.sql.last") || EXAMPLES["Failure rate by job"];
  const result = h("div", { "aria-live": "polite" });
  const saved = h("ul", { class: "dk-saved", "aria-label": "Saved queries" });
  const name = h("input", {
    type: "text",
    id: "dk-sql-name",
    placeholder: "name",
    "data-key": "sql:name",
  });

  const run = async () => {
    const query = box.value.trim();
    if (!query) return;
    sessionStorage.setItem("dkron-lab.sql.last", box.value);
    put(result, h("p", { class: "dk-muted" }, "Running…"));
    const began = performance.now();
    try {
      const answer = await source.sql(query, { maxRows: MAX_ROWS, signal });
      const ms = Math.round(performance.now() - began);
      put(
        result,
        h(
          "p",
          { class: "dk-muted", role: "status" },
          `${answer.row_count} row${answer.row_count === 1 ? "" : "s"} in ${ms} ms`,
          answer.truncated ? ` (the first ${MAX_ROWS}: the query has more)` : "",
        ),
        barChart(answer),
        answer.rows.length ? resultTable(answer) : null,
      );
    } catch (error) {
      if (error.name === "AbortError") return;
      put(result, problem(error));
    }
  };

  const drawSaved = () => {
    const queries = savedQueries();
    put(
      saved,
      Object.keys(queries)
        .sort()
        .map((key) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                onclick: () => {
                  box.value = queries[key];
                  box.focus();
                },
              },
              key,
            ),
            h(
              "button",
              {
                type: "button",
                "aria-label": `Forget ${key}`,
                title: `Forget ${key}`,
                onclick: () => {
                  const left = savedQueries();
                  delete left[key];
                  storeQueries(left);
                  drawSaved();
                },
              },
              "×",
            ),
          ),
        ),
    );
  };

  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });

  put(
    el,
    h(
      "div",
      { class: "dk-sql" },
      h("h1", {}, "SQL"),
      h(
        "p",
        { id: "dk-sql-help", class: "dk-muted" },
        "One read-only SELECT over the views executions, jobs, members and audit (DuckDB's dialect; ",
        "see docs/sql.md). Ctrl+Enter runs it; at most ",
        String(MAX_ROWS),
        " rows come back.",
      ),
      h("label", { for: "dk-sql-query" }, "Query"),
      box,
      h(
        "div",
        { class: "dk-sql-bar" },
        h("button", { type: "button", "data-key": "sql:run", onclick: run }, "Run"),
        h(
          "label",
          {},
          "Example ",
          h(
            "select",
            {
              "data-key": "sql:example",
              onchange: (event) => {
                if (event.target.value) box.value = EXAMPLES[event.target.value];
                event.target.value = "";
                box.focus();
              },
            },
            h("option", { value: "" }, "choose…"),
            Object.keys(EXAMPLES).map((key) => h("option", { value: key }, key)),
          ),
        ),
        h("label", { for: "dk-sql-name" }, "Save as "),
        name,
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              const key = name.value.trim();
              if (!key) return name.focus();
              storeQueries({ ...savedQueries(), [key]: box.value });
              name.value = "";
              drawSaved();
            },
          },
          "Save",
        ),
      ),
      saved,
      result,
    ),
  );
  drawSaved();
}
