// A job's history on its page: the run grid (with skipped fires and late starts), the duration
// scatter and the success calendar. It reads the last RUNS executions, the skipped spans and,
// for the calendar, one SQL query over the whole history (the executions when SQL is refused).

import {
  calendarDays,
  countByDay,
  durationScatter,
  gridEntries,
  runGrid,
  successCalendar,
} from "./charts.js";
import { executionHash, h, problem, put } from "./dom.js";

const RUNS = 500;
const DAYS = 84;
const EVERY_MS = 30_000;

const quote = (text) => `'${String(text).replaceAll("'", "''")}'`;

/** Runs per UTC day of `name` over the last DAYS days, as a Map of day number to {runs, ok}. */
async function dailyCounts(source, name, signal) {
  const query =
    "SELECT CAST(floor(epoch(started_at) / 86400) AS BIGINT) AS day, count(*) AS runs, " +
    "count(*) FILTER (WHERE success) AS ok FROM executions " +
    `WHERE job_name = ${quote(name)} AND started_at >= now() - INTERVAL ${DAYS} DAY GROUP BY day`;
  const answer = await source.sql(query, { maxRows: DAYS + 1, signal });
  return new Map(
    answer.rows.map(([day, runs, ok]) => [Number(day), { runs: Number(runs), ok: Number(ok) }]),
  );
}

/** The history section of job `name`: `{el, update(job, version)}`. `update` reads and redraws
 * when `version` (what the job page saw change: its runs) moved, else at most every EVERY_MS. */
export function historySection({ source, name, signal }) {
  const el = h("section", { class: "dk-history", "aria-labelledby": "dk-history" });
  put(el, h("h2", { id: "dk-history" }, "History"), h("p", { class: "dk-muted" }, "Loading…"));
  let seen = null;
  let at = 0;
  let busy = false;
  const update = async (job, version) => {
    const key = String(version);
    if (busy || (key === seen && Date.now() - at < EVERY_MS)) return;
    busy = true;
    try {
      const [runs, skipped] = await Promise.all([
        source.recentRuns(name, RUNS, signal),
        source.skipped(name, signal),
      ]);
      const counts = await dailyCounts(source, name, signal).catch(() => countByDay(runs));
      seen = key;
      at = Date.now();
      draw(job, runs, skipped, counts);
    } catch (error) {
      if (error.name !== "AbortError")
        put(el, h("h2", { id: "dk-history" }, "History"), problem(error));
    } finally {
      busy = false;
    }
  };
  const draw = (job, runs, skipped, counts) => {
    const zone = job.timezone || "UTC";
    const hashOf = (execution) => executionHash(name, execution.id);
    const active = el.getRootNode().activeElement;
    const focused = el.contains(active) ? active : null;
    const label = focused?.getAttribute("aria-label");
    put(
      el,
      h("h2", { id: "dk-history" }, "History"),
      h(
        "div",
        { class: "dk-charts" },
        runGrid(gridEntries(runs, skipped), { zone, hashOf }),
        durationScatter(runs, { zone, hashOf }),
        successCalendar(calendarDays(counts, DAYS)),
      ),
    );
    if (label) el.querySelector(`[aria-label="${CSS.escape(label)}"]`)?.focus();
  };
  return { el, update };
}
