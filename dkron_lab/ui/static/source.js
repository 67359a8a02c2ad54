// What the views read and do, over /v1. Views take a source, never a Client: a later AFM
// `RestModel` (ui.md §4) can be built on the same methods, and a test can hand views a fake.

const enc = encodeURIComponent;
const jobPath = (job) => `jobs/${enc(job)}`;

/** Jobs whose last run ended so: the counters of the dashboard, and the list's filters. */
export const JOB_STATUSES = ["success", "failed", "partially_failed", "untriggered"];

export class RestSource {
  constructor(client) {
    this.client = client;
  }

  /** How many jobs each status has, the leader, and the runs going on now. */
  async counters(signal) {
    const [counts, leader, busy] = await Promise.all([
      this.jobCounts(signal),
      this.client.json("leader", { signal }).catch((error) => {
        if (error.status === 503) return { data: null }; // no leader elected yet
        throw error;
      }),
      this.client.json("busy", { signal }),
    ]);
    return { ...counts, leader: leader.data, running: busy.data };
  }

  /** `{total, statuses}`: one GET /v1/counts (a pass over the jobs on the server), or, from
   * a server without it, a count query per status. */
  async jobCounts(signal) {
    if (this.hasCounts !== false) {
      try {
        const { data } = await this.client.json("counts", { signal });
        this.hasCounts = true;
        const statuses = Object.fromEntries(JOB_STATUSES.map((s) => [s, data.statuses[s] ?? 0]));
        return { total: data.total, statuses };
      } catch (error) {
        if (error.status !== 404) throw error;
        this.hasCounts = false;
      }
    }
    const count = (query) =>
      this.client.json("jobs", { query: { ...query, _start: 0, _end: 0 }, signal });
    const [all, ...byStatus] = await Promise.all([
      count({}),
      ...JOB_STATUSES.map((status) => count({ status })),
    ]);
    const statuses = Object.fromEntries(JOB_STATUSES.map((s, i) => [s, byStatus[i].total]));
    return { total: all.total, statuses };
  }

  /** A page of jobs, filtered and sorted by the server, with their last 10 results. */
  async jobs(filter, signal) {
    const query = { stats: "true", ...filter };
    const { data, total } = await this.client.json("jobs", { query, signal });
    return { jobs: data, total };
  }

  /** The cluster's members, as Serf reports them (Name, Addr, Port, Tags, statusText). */
  async members(signal) {
    return (await this.client.json("members", { signal })).data;
  }

  /** The executions running now, on every node this server knows. */
  async busy(signal) {
    return (await this.client.json("busy", { signal })).data;
  }

  async job(name, signal) {
    return (await this.client.json(jobPath(name), { signal })).data;
  }

  /** A page of a job's executions, running ones first, then newest first, each output cut
   * to a short tail. */
  async executions(name, { start = 0, size = 25 } = {}, signal) {
    const query = { job: name, _start: start, _end: start + size, output_size_limit: 200 };
    const { data, total } = await this.client.json("executions", { query, signal });
    return { executions: data, total };
  }

  /** A page of every job's executions (filter: status, job, node, since, until, _start,
   * _end), running ones first, then newest first. */
  async allExecutions(filter, signal) {
    const query = { output_size_limit: 200, ...filter };
    const { data, total } = await this.client.json("executions", { query, signal });
    return { executions: data, total };
  }

  async execution(name, id, signal) {
    return (await this.client.json(`${jobPath(name)}/executions/${enc(id)}`, { signal })).data;
  }

  /** The output from byte `offset`: `{offset, next, done, data}`. */
  async output(name, id, offset, signal) {
    const path = `${jobPath(name)}/executions/${enc(id)}/output`;
    return (await this.client.json(path, { query: { offset }, signal })).data;
  }

  /** Follow a running execution's output from `offset`: `onChunk({offset, next, done, data})`
   * as it is printed, until it ends (a stream that breaks falls back to offset reads). */
  async followOutput(name, id, offset, onChunk, signal) {
    const path = `${jobPath(name)}/executions/${enc(id)}/output/stream`;
    let next = offset;
    let done = false;
    const take = (chunk) => {
      next = chunk.next;
      done = chunk.done;
      onChunk(chunk);
    };
    try {
      await this.client.lines(path, { query: { offset }, signal, onLine: take });
    } catch (error) {
      if (signal?.aborted) return;
      console.warn("output stream ended early, reading on by offset:", error.message);
    }
    while (!done && !signal?.aborted) {
      take(await this.output(name, id, next, signal));
      if (!done) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  /** Create or update a job (POST /v1/jobs); a 400's message says which field is wrong. */
  async saveJob(job) {
    return (await this.client.json("jobs", { method: "POST", body: job })).data;
  }

  /** The next `count` fires of a schedule in `timezone` (GET /v1/schedule), or an ApiError
   * whose message says what is wrong with it. */
  async schedule(spec, timezone, count, signal) {
    const query = { schedule: spec, timezone, count };
    return (await this.client.json("schedule", { query, signal })).data;
  }

  /** The names of every job (at most 1000), sorted, for the parent job dropdown. */
  async jobNames(signal) {
    const query = { _start: 0, _end: 1000, _sort: "name", _order: "ASC" };
    return (await this.client.json("jobs", { query, signal })).data.map((job) => job.name);
  }

  /** Every calendar (`{name, ...}`), in name order, for the form's calendar choice. */
  async calendars(signal) {
    return (await this.client.json("calendars", { signal })).data;
  }

  /** The absolute URL of a server path the API gave ("/v1/jobs/x/ping?key=..."), as this page
   * reaches the server (under Jupyter, through its proxy); the path as it is where requests go
   * through the kernel (the notebook widget), whose server this page does not know. */
  serverUrl(path) {
    if (!this.client.streams) return String(path);
    return this.client.url(String(path).replace(/^\/?v1\//, "")).href;
  }

  /** The job's badge (GET /v1/jobs/<job>/badge.svg) as a data: URL, fetched with this page's
   * credentials (an <img> could not send them); null where the page cannot fetch it itself. */
  async badgeImage(name, signal) {
    if (!this.client.streams) return null;
    const response = await this.client.fetch(`${jobPath(name)}/badge.svg`, { signal });
    return `data:image/svg+xml;charset=utf-8,${enc(await response.text())}`;
  }

  run(name) {
    return this.client.json(`${jobPath(name)}/run`, { method: "POST" });
  }

  /** Run the job once with `{env, parameters}` laid over its own (POST /v1/jobs/<job> with a
   * body); a 400's message says what the server could not use. */
  runWith(name, overrides) {
    return this.client.json(jobPath(name), { method: "POST", body: overrides });
  }

  /** Who this page is signed in as: `{name, role}` (GET /v1/whoami; role "viewer",
   * "operator" or "admin"), asked once per credential. A server without the endpoint is
   * taken as letting everything be tried (it still checks every request). Not aborted with
   * a page: every view shares the one answer. */
  whoami() {
    const key = JSON.stringify(this.client.headers("GET"));
    if (this._who?.key !== key) {
      const asked = this.client
        .json("whoami")
        .then(({ data }) => data)
        .catch((error) => {
          if (error.status === 404) return { name: "", role: "admin" };
          if (this._who?.asked === asked) this._who = null; // ask again next time
          throw error;
        });
      this._who = { key, asked };
    }
    return this._who.asked;
  }

  /** The read-only fields of a job, as the OpenAPI document marks them (`readOnly` in the
   * Job schema and the list's additions), fetched once. */
  jobReadOnly() {
    this._readOnly ??= this.client
      .json("openapi.json")
      .then(({ data }) => readOnlyFields(data, ["Job", "JobWithStats"]))
      .catch((error) => {
        this._readOnly = null;
        throw error;
      });
    return this._readOnly;
  }

  toggle(name) {
    return this.client.json(`${jobPath(name)}/toggle`, { method: "POST" });
  }

  remove(name) {
    return this.client.json(jobPath(name), { method: "DELETE" });
  }

  // -- history, cluster and SQL (views/history.js, cluster.js, sql.js) -----------------------

  /** The job's latest `size` executions with no output, newest first (running ones first). */
  async recentRuns(name, size, signal) {
    const query = { job: name, _start: 0, _end: size, output_size_limit: 0 };
    return (await this.client.json("executions", { query, signal })).data;
  }

  /** Spans of fires the job did not run: `{reason, first, last, count, recorded_at}`. */
  async skipped(name, signal) {
    return (await this.client.json(`${jobPath(name)}/skipped`, { signal })).data;
  }

  /** One read-only SELECT over the history: `{columns, rows, truncated, row_count}`. */
  async sql(query, { maxRows = 1000, signal } = {}) {
    const body = { query, max_rows: maxRows };
    return (await this.client.json("sql", { method: "POST", body, signal })).data;
  }

  /** This server's status (`GET /v1`): agent, serf counters, raft (as strings), tags. */
  async status(signal) {
    return (await this.client.json("", { signal })).data;
  }

  /** The Raft voters as this server sees them (name, address, role, leader, reachable,
   * match_index). */
  async raftPeers(signal) {
    return (await this.client.json("raft/peers", { signal })).data;
  }

  removePeer(peer) {
    return this.client.json(`raft/peers/${enc(peer)}`, { method: "DELETE" });
  }

  /** Ask the server this page talks to to leave the cluster and stop. */
  leave() {
    return this.client.json("leave", { method: "POST" });
  }
}

/** The names of the properties `readOnly` in the `schemas` of an OpenAPI `document`,
 * following `allOf` and local `$ref`s. */
export function readOnlyFields(document, schemas) {
  const found = new Set();
  const seen = new Set();
  const walk = (schema) => {
    if (!schema || seen.has(schema)) return;
    seen.add(schema);
    if (schema.$ref) {
      const name = /^#\/components\/schemas\/(.+)$/.exec(schema.$ref)?.[1];
      return walk(document.components?.schemas?.[name]);
    }
    for (const part of schema.allOf ?? []) walk(part);
    for (const [key, property] of Object.entries(schema.properties ?? {}))
      if (property?.readOnly) found.add(key);
  };
  for (const name of schemas) walk(document.components?.schemas?.[name]);
  return [...found].sort();
}
