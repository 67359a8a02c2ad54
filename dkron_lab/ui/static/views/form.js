// The job form: create (#/jobs/new), edit (#/jobs/<job>/edit) and clone (#/jobs/new?from=<job>).
// One job object is the truth; the form's controls and the raw JSON mode are two views of it,
// so edits round-trip between them. The server checks it on submit (POST /v1/jobs), and its
// 400 message is shown next to the field it names. The cron helper says the schedule in words
// and lists the next fires in the job's zone from GET /v1/schedule while typing.
//
// The fields the server computes are the ones its OpenAPI document marks `readOnly`
// (source.jobReadOnly): they are left out of what the form sends, and a clone starts without
// them.

import { describeSchedule } from "./cron.js";
import { h, jobHash, put, wallTime } from "./dom.js";
import { needs, showRole } from "./role.js";

const NEW_JOB = {
  name: "",
  displayname: "",
  schedule: "@every 1h",
  timezone: "",
  owner: "",
  owner_email: "",
  disabled: false,
  tags: {},
  metadata: {},
  retries: 0,
  parent_job: "",
  concurrency: "allow",
  catchup: "",
  executor: "shell",
  executor_config: {},
};

/** The executors every server has, and the executor_config keys the form shows for each
 * (docs/executors.md); other keys of a job's config are kept as they are. */
export const EXECUTORS = {
  shell: [
    { key: "command", label: "Command", kind: "textarea", placeholder: "echo hello" },
    { key: "shell", label: "Run through /bin/sh (pipes, &&, $VARS)", kind: "checkbox" },
    { key: "env", label: "Environment", placeholder: "K1=v1,K2=v2" },
    { key: "cwd", label: "Working directory", placeholder: "the node's" },
    { key: "timeout", label: "Timeout", placeholder: "30s, 5m, 1h30m (none)" },
  ],
  http: [
    {
      key: "method",
      label: "Method",
      kind: "select",
      options: ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
    },
    { key: "url", label: "URL", placeholder: "https://example.com/health" },
    { key: "headers", label: "Headers (one “Name: value” a line)", kind: "headers" },
    { key: "body", label: "Body", kind: "textarea" },
    { key: "expectCode", label: "Expected status", placeholder: "200,204 (any)" },
    { key: "timeout", label: "Timeout (seconds)", placeholder: "30" },
  ],
  notebook: [
    { key: "path", label: "Notebook path", placeholder: "/srv/notebooks/report.ipynb" },
    {
      key: "parameters",
      label: "Parameters (JSON)",
      kind: "textarea",
      placeholder: '{"region": "eu", "days": 7}',
    },
    { key: "kernel", label: "Kernel", placeholder: "the notebook's, else python3" },
    { key: "timeout", label: "Timeout", placeholder: "10m (none)" },
  ],
  heartbeat: [],
};

/** What an executor with no config of its own does, said where its fields would be. */
const EXECUTOR_HELP = {
  heartbeat:
    "A heartbeat check runs nothing: the work it watches (a crontab line, a CronJob, a " +
    "script) pings its ping URL when done, shown on the job's page once saved. The schedule " +
    "says when a ping is due, and max lateness (under Monitoring) how long after.",
};

/** `job` without the fields the server computes (`readOnly`, from the OpenAPI document). */
export function editable(job, readOnly) {
  const copy = structuredClone(job);
  for (const key of readOnly) delete copy[key];
  return copy;
}

/** The job a clone of `job` starts from: a new name, no counters. */
export function cloneOf(job, readOnly) {
  return { ...editable(job, readOnly), name: `${job.name}-copy` };
}

const FIELDS = [
  "name",
  "displayname",
  "schedule",
  "timezone",
  "owner_email",
  "owner",
  "disabled",
  "tags",
  "metadata",
  "retries",
  "parent_job",
  "processors",
  "concurrency_group",
  "concurrency",
  "executor_config",
  "executor",
  "ephemeral",
  "starts_at",
  "expires_at",
  "catchup",
  "retry_interval",
  "retry_on",
  "secret_keys",
  "max_lateness",
  "max_duration",
  "on_overdue",
  "calendar_mode",
  "calendar",
];

/** The field a server message is about: "executor_config.command" for a plugin's config key,
 * else the job field it names first ("retries must be 0 or more" -> "retries"), or "". */
export function fieldOfError(message) {
  const text = String(message);
  const key = /^[\w-]+ executor: "(\w+)"/.exec(text);
  if (key) return `executor_config.${key[1]}`;
  if (/^[\w-]+ executor:|^unknown executor|^executor is required/.test(text)) return "executor";
  if (/^can't parse job schedule|^schedule|^the schedule/.test(text)) return "schedule";
  if (/^unknown time zone|^time zone/.test(text)) return "timezone";
  if (/\bparent\b/.test(text)) return "parent_job";
  let best = "";
  let at = Infinity;
  for (const field of FIELDS) {
    const found = new RegExp(`(^|[^\\w.])${field}\\b`).exec(text);
    if (found && found.index < at) [best, at] = [field, found.index];
  }
  return best;
}

/** "key=value" lines as an object, and back. */
export function parsePairs(text) {
  const pairs = String(text)
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      const at = line.indexOf("=");
      return at < 0 ? [line.trim(), ""] : [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    });
  return Object.fromEntries(pairs);
}

export function showPairs(object) {
  return Object.entries(object || {})
    .map(([key, value]) => `${key}=${value}`)
    .join("\n");
}

function headerLines(text) {
  try {
    const list = JSON.parse(text || "[]");
    return Array.isArray(list) ? list.join("\n") : String(text);
  } catch {
    return String(text);
  }
}

function zones() {
  const browser = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const all = Intl.supportedValuesOf?.("timeZone") ?? [];
  return [browser, "UTC", ...all.filter((zone) => zone !== browser && zone !== "UTC")];
}

/** A labelled control in a `.dk-field` that can show the server's message about `key`. */
function field(key, label, control, help) {
  const id = `dk-f-${key}`;
  control.id = id;
  control.dataset.key = `form:${key}`;
  const describedBy = [help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", describedBy);
  const check = control.type === "checkbox";
  return h(
    "div",
    { class: `dk-field${check ? " dk-check" : ""}`, "data-field": key },
    check ? [control, h("label", { for: id }, label)] : [h("label", { for: id }, label), control],
    help ? h("small", { id: `${id}-help`, class: "dk-muted" }, help) : null,
    h("p", { id: `${id}-error`, class: "dk-field-error dk-error", hidden: true }),
  );
}

function input(value, onValue, attributes = {}) {
  return h("input", {
    type: "text",
    value: value ?? "",
    oninput: (e) => onValue(e.target.value),
    ...attributes,
  });
}

function textarea(value, onValue, attributes = {}) {
  return h(
    "textarea",
    { rows: 3, oninput: (e) => onValue(e.target.value), ...attributes },
    value ?? "",
  );
}

function select(value, options, onValue) {
  return h(
    "select",
    { onchange: (e) => onValue(e.target.value) },
    Object.entries(options).map(([key, text]) =>
      h("option", { value: key, selected: key === value }, text),
    ),
  );
}

function checkbox(checked, onValue) {
  return h("input", { type: "checkbox", checked, onchange: (e) => onValue(e.target.checked) });
}

/** The controls of the job's executor_config, for its executor. */
function executorFields(job) {
  const config = (job.executor_config ??= {});
  const set = (key) => (value) => {
    if (value === "" || value === false) delete config[key];
    else config[key] = value === true ? "true" : value;
  };
  const specs = EXECUTORS[job.executor];
  if (EXECUTOR_HELP[job.executor]) {
    delete job.executor_config;
    return h("p", { class: "dk-muted", id: "dk-executor-help" }, EXECUTOR_HELP[job.executor]);
  }
  if (!specs) {
    const other = (text) => (job.executor_config = parsePairs(text));
    return field(
      "executor_config",
      "Executor config (key=value a line)",
      textarea(showPairs(config), other),
    );
  }
  return specs.map((spec) => {
    const key = `executor_config.${spec.key}`;
    const value = config[spec.key] ?? "";
    if (spec.kind === "checkbox")
      return field(key, spec.label, checkbox(value === "true", set(spec.key)));
    if (spec.kind === "select") {
      if (!value) config[spec.key] = spec.options[0];
      const options = Object.fromEntries(
        [...new Set([value || spec.options[0], ...spec.options])].map((o) => [o, o]),
      );
      return field(key, spec.label, select(value || spec.options[0], options, set(spec.key)));
    }
    if (spec.kind === "headers") {
      const lines = (text) => {
        const list = text
          .split("\n")
          .map((line) => line.trim())
          .filter(Boolean);
        set(spec.key)(list.length ? JSON.stringify(list) : "");
      };
      return field(
        key,
        spec.label,
        textarea(headerLines(value), lines, { placeholder: "Content-Type: application/json" }),
      );
    }
    const make = spec.kind === "textarea" ? textarea : input;
    return field(key, spec.label, make(value, set(spec.key), { placeholder: spec.placeholder }));
  });
}

/** The cron helper: the schedule in words and its next 5 fires in the job's zone, asked of the
 * server a moment after the last keystroke; a schedule it refuses shows its message. */
function cronHelper(source, signal) {
  const words = h("p", { class: "dk-cron-words", id: "dk-cron-words" });
  const fires = h("ol", { class: "dk-fires", "aria-label": "Next fires" });
  const error = h("p", { class: "dk-error", role: "alert", hidden: true });
  const el = h("div", { class: "dk-cron", "aria-live": "polite" }, words, error, fires);
  let timer = null;
  let asking = null;
  const ask = async (spec, zone) => {
    asking?.abort();
    asking = new AbortController();
    const mine = asking;
    signal.addEventListener("abort", () => mine.abort(), { once: true });
    try {
      const answer = await source.schedule(spec, zone, 5, mine.signal);
      error.hidden = true;
      put(
        fires,
        answer.next.map((t) =>
          h(
            "li",
            {},
            h("time", { datetime: t }, wallTime(t)),
            " ",
            h("small", { class: "dk-muted" }, answer.timezone),
          ),
        ),
      );
      if (!answer.next.length) put(fires, h("li", { class: "dk-muted" }, "no fire to come"));
    } catch (failure) {
      if (failure.name === "AbortError" || mine.signal.aborted) return;
      put(fires);
      put(error, failure.message);
      error.hidden = false;
    }
  };
  const update = (spec, zone) => {
    put(
      words,
      spec.trim()
        ? (describeSchedule(spec) ?? "")
        : "After its parent job (no schedule of its own)",
    );
    clearTimeout(timer);
    if (!spec.trim()) {
      asking?.abort();
      error.hidden = true;
      put(fires);
      return;
    }
    timer = setTimeout(() => ask(spec, zone), 300);
  };
  return { el, update };
}

function section(title, ...children) {
  return h("fieldset", { class: "dk-fieldset" }, h("legend", {}, title), ...children);
}

/** When the job is unhealthy (docs/monitoring.md) and which days it skips. */
function monitoringFields(job, calendars) {
  const set = (key) => (value) => (job[key] = value);
  const names = [...new Set([...calendars, job.calendar].filter(Boolean))];
  return section(
    "Monitoring",
    field(
      "max_lateness",
      "Max lateness",
      input(job.max_lateness, set("max_lateness"), { placeholder: "server's default (1m)" }),
      "A fire not started this long after its instant is late (a heartbeat check's grace). 0: never",
    ),
    field(
      "max_duration",
      "Max duration",
      input(job.max_duration, set("max_duration"), { placeholder: "server's default (none)" }),
      "A run going on longer is overdue. 30s, 5m, 1h30m; 0: never",
    ),
    field(
      "on_overdue",
      "When overdue",
      select(
        job.on_overdue || "",
        { "": "server's default", alert: "alert only", kill: "alert and stop the run" },
        set("on_overdue"),
      ),
    ),
    field(
      "calendar",
      "Calendar",
      select(
        job.calendar || "",
        { "": "none", ...Object.fromEntries(names.map((c) => [c, c])) },
        set("calendar"),
      ),
      "Days the server's calendars (GET /v1/calendars) list",
    ),
    field(
      "calendar_mode",
      "Calendar days",
      select(
        job.calendar_mode || "",
        { "": "skipped (exclude)", only: "the only days it runs (only)" },
        set("calendar_mode"),
      ),
    ),
  );
}

/** The form's controls over `job` (changed in place as the user types). */
function formFields({ job, editing, parents, calendars, helper }) {
  const set = (key) => (value) => (job[key] = value);
  const schedule = input(
    job.schedule,
    (value) => {
      job.schedule = value;
      helper.update(value, job.timezone || "");
    },
    { autocomplete: "off", spellcheck: "false", class: "dk-mono" },
  );
  const zone = input(
    job.timezone,
    (value) => {
      job.timezone = value.trim();
      helper.update(job.schedule || "", job.timezone);
    },
    { list: "dk-zones", placeholder: "UTC", autocomplete: "off" },
  );
  const config = h("div", { class: "dk-executor" }, executorFields(job));
  const executors = Object.fromEntries(
    [...new Set([...Object.keys(EXECUTORS), job.executor].filter(Boolean))].map((e) => [e, e]),
  );
  const executor = select(job.executor, executors, (value) => {
    job.executor = value;
    job.executor_config = {};
    put(config, executorFields(job));
  });
  const parentNames = [...new Set([...parents, job.parent_job].filter((p) => p && p !== job.name))];
  return [
    section(
      "Job",
      field(
        "name",
        "Name",
        input(job.name, set("name"), {
          required: true,
          readonly: editing,
          pattern: "[A-Za-z0-9_.\\-]+",
          autocomplete: "off",
        }),
        editing ? "A job's name can not change: clone it to rename." : "Letters, digits, _ - and .",
      ),
      field("displayname", "Display name", input(job.displayname, set("displayname"))),
      field("owner", "Owner", input(job.owner, set("owner"))),
      field(
        "owner_email",
        "Owner's e-mail",
        input(job.owner_email, set("owner_email"), { type: "email" }),
      ),
    ),
    section(
      "When",
      field(
        "schedule",
        "Schedule",
        schedule,
        "5 or 6 fields (seconds first), @every 10m, @daily, @at <time>, @manually; empty: after its parent",
      ),
      helper.el,
      field("timezone", "Time zone", zone, "Empty: UTC"),
      h(
        "datalist",
        { id: "dk-zones" },
        zones().map((z) => h("option", { value: z })),
      ),
      field(
        "catchup",
        "Missed fires",
        select(
          job.catchup || "",
          { "": "server's default", skip: "skip", once: "run the latest once", all: "run each" },
          set("catchup"),
        ),
      ),
      field(
        "disabled",
        "Disabled (no scheduled runs)",
        checkbox(Boolean(job.disabled), set("disabled")),
      ),
    ),
    section("What it runs", field("executor", "Executor", executor), config),
    monitoringFields(job, calendars),
    section(
      "How",
      field(
        "parent_job",
        "Parent job",
        select(
          job.parent_job || "",
          { "": "none", ...Object.fromEntries(parentNames.map((p) => [p, p])) },
          set("parent_job"),
        ),
        "Runs after its parent succeeds",
      ),
      field(
        "concurrency",
        "Concurrency",
        select(
          job.concurrency || "allow",
          { allow: "allow overlapping runs", forbid: "forbid overlapping runs" },
          set("concurrency"),
        ),
      ),
      field(
        "retries",
        "Retries",
        input(job.retries ?? 0, (v) => (job.retries = v === "" ? 0 : Number(v)), {
          type: "number",
          min: 0,
          step: 1,
        }),
      ),
      field(
        "tags",
        "Target tags (key=value a line)",
        textarea(showPairs(job.tags), (v) => (job.tags = parsePairs(v)), {
          placeholder: "role=worker",
        }),
      ),
      field(
        "metadata",
        "Metadata (key=value a line)",
        textarea(showPairs(job.metadata), (v) => (job.metadata = parsePairs(v)), {
          placeholder: "team=data",
        }),
      ),
    ),
  ];
}

/** Load what the form starts from, and the fields the server computes: the job to edit, the
 * one to clone, or a new one (with the fields the route's query prefills). */
async function startingJob(source, name, from, signal, query) {
  const [readOnly, stored] = await Promise.all([
    source.jobReadOnly(),
    name || from ? source.job(name || from, signal) : null,
  ]);
  if (name) return { job: editable(stored, readOnly), readOnly };
  if (from) return { job: cloneOf(stored, readOnly), readOnly };
  return { job: { ...structuredClone(NEW_JOB), ...prefillFromQuery(query) }, readOnly };
}

// ---- Prefill from the route and telling a framing page (JupyterLab's "Schedule this notebook")
// The Lab extension shows #/jobs/new?executor=notebook&path=/abs/nb.ipynb&name=nb in a dialog's
// frame, and closes the dialog when the form says, by postMessage to its own origin, that the
// job was saved or the form cancelled.

const BOOLEAN_FIELDS = new Set(["disabled", "ephemeral"]);
const NUMBER_FIELDS = new Set(["retries"]);
const PAIR_FIELDS = new Set(["tags", "metadata"]);
const NOT_PREFILLED = new Set(["from", "tag", "executor_config", "processors", "secret_keys"]);

/** A new job's fields from the route's query: any top-level job field under its name
 * (`disabled` "true"/"false", `retries` a number, `tags`/`metadata` "k=v,k2=v2"), every other
 * key into `executor_config` (`path`, `command`, `parameters`, ...), and `tag=key=value`
 * (repeated) into the tags. */
export function prefillFromQuery(query) {
  if (!query) return {};
  const job = {};
  const config = {};
  for (const [key, value] of query.entries()) {
    if (NOT_PREFILLED.has(key) || value === "") continue;
    if (BOOLEAN_FIELDS.has(key)) job[key] = value === "true";
    else if (NUMBER_FIELDS.has(key)) job[key] = Number(value) || 0;
    else if (PAIR_FIELDS.has(key)) job[key] = parsePairs(value.split(",").join("\n"));
    else if (FIELDS.includes(key)) job[key] = value;
    else config[key] = value;
  }
  if (Object.keys(config).length) job.executor_config = config;
  const tags = parsePairs(query.getAll("tag").join("\n"));
  if (Object.keys(tags).length) job.tags = { ...job.tags, ...tags };
  return job;
}

/** Tell the page framing this one, if it is of the same origin: `{source: "dkron-lab-form",
 * event: "saved", name}` or `{..., event: "cancelled"}`; a save also carries
 * `type: "dkron-lab:job-saved", job: name`. */
export function tellFramer(event, name, win = window) {
  if (win.parent === win) return false;
  const message = { source: "dkron-lab-form", event, ...(name ? { name } : {}) };
  if (event === "saved") Object.assign(message, { type: "dkron-lab:job-saved", job: name });
  win.parent.postMessage(message, win.location.origin);
  return true;
}

/** Render the job form into `el`. */
export function formView({ source, el, name, query, signal, navigate, fail }) {
  const from = query?.get("from") || "";
  const back = name ? jobHash(name) : from ? jobHash(from) : "#/jobs";
  const title = name ? `Edit ${name}` : from ? `Clone ${from}` : "New job";
  const top = h("div", { class: "dk-notice" });
  put(el, h("h1", {}, title), top);
  showRole(source);
  Promise.all([
    startingJob(source, name, from, signal, query),
    source.jobNames(signal).catch(() => []),
    source
      .calendars(signal)
      .then((found) => found.map((calendar) => calendar.name))
      .catch(() => []),
  ])
    .then(([{ job, readOnly }, parents, calendars]) =>
      render({
        source,
        el,
        signal,
        navigate,
        fail,
        job,
        readOnly,
        parents,
        calendars,
        title,
        back,
        editing: Boolean(name),
      }),
    )
    .catch((error) => fail(error, top));
}

function render({
  source,
  el,
  signal,
  navigate,
  fail,
  job,
  readOnly,
  parents,
  calendars,
  title,
  back,
  editing,
}) {
  const state = { job, json: false };
  const helper = cronHelper(source, signal);
  const body = h("div", { class: "dk-form-body" });
  const top = h("div", { class: "dk-notice" });
  const jsonText = h("textarea", { rows: 28, spellcheck: "false", class: "dk-mono dk-json" });
  const toggle = h(
    "button",
    { type: "button", "aria-pressed": "false", "data-key": "form:mode" },
    "Edit as JSON",
  );
  const draw = () => {
    if (state.json) {
      jsonText.value = JSON.stringify(editable(state.job, readOnly), null, 2);
      put(
        body,
        field(
          "json",
          "The job as JSON",
          jsonText,
          "The same job: changes here show in the form, and the server checks it on save",
        ),
      );
    } else {
      put(body, formFields({ job: state.job, editing, parents, calendars, helper }));
      helper.update(state.job.schedule || "", state.job.timezone || "");
    }
    toggle.setAttribute("aria-pressed", String(state.json));
    toggle.textContent = state.json ? "Edit as form" : "Edit as JSON";
  };
  /** The JSON text as the job, or null (its syntax error shown). */
  const fromJson = () => {
    try {
      const parsed = JSON.parse(jsonText.value);
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed))
        throw new Error("the job must be a JSON object");
      return parsed;
    } catch (error) {
      showError(body, top, "json", `Not a job in JSON: ${error.message}`);
      return null;
    }
  };
  toggle.addEventListener("click", () => {
    clearErrors(el);
    if (state.json) {
      const parsed = fromJson();
      if (!parsed) return;
      state.job = parsed;
    }
    state.json = !state.json;
    draw();
    toggle.focus();
  });
  const submit = async (event) => {
    event.preventDefault();
    clearErrors(el);
    if (state.json) {
      const parsed = fromJson();
      if (!parsed) return;
      state.job = parsed;
    }
    const sent = editable(state.job, readOnly);
    try {
      const saved = await source.saveJob(sent);
      tellFramer("saved", saved?.name || sent.name);
      navigate(jobHash(saved?.name || sent.name));
    } catch (error) {
      if (error.status === undefined) return fail(error, top);
      showError(body, top, state.json ? "json" : fieldOfError(error.message), error.message);
    }
  };
  const form = h(
    "form",
    {
      class: "dk-form",
      "aria-label": title,
      novalidate: true,
      onsubmit: submit,
      onkeydown: (event) => {
        if (event.key === "Escape") {
          event.preventDefault();
          tellFramer("cancelled");
          navigate(back);
        } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          form.requestSubmit();
        }
      },
    },
    h(
      "div",
      { class: "dk-toolbar" },
      toggle,
      h("small", { class: "dk-muted" }, "Enter saves, Escape cancels"),
    ),
    top,
    body,
    h(
      "div",
      { class: "dk-toolbar" },
      h(
        "button",
        { type: "submit", class: "dk-primary", ...needs("admin") },
        editing ? "Save" : "Create",
      ),
      h("a", { href: back, onclick: () => tellFramer("cancelled") }, "Cancel"),
    ),
  );
  put(
    el,
    h("p", { class: "dk-crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / "),
    h("h1", {}, title),
    form,
  );
  draw();
  el.querySelector(editing ? "#dk-f-schedule" : "#dk-f-name")?.focus();
}

function clearErrors(el) {
  for (const error of el.querySelectorAll(".dk-field-error")) error.hidden = true;
  for (const control of el.querySelectorAll("[aria-invalid]"))
    control.removeAttribute("aria-invalid");
  for (const notice of el.querySelectorAll(".dk-form > .dk-notice")) put(notice);
}

/** Show `message` next to the field `key` (and focus it), or above the form. */
function showError(body, top, key, message) {
  const where = key && body.querySelector(`[data-field="${CSS.escape(key)}"]`);
  if (!where) {
    put(top, h("p", { class: "dk-error", role: "alert" }, message));
    return;
  }
  const error = where.querySelector(".dk-field-error");
  put(error, message);
  error.hidden = false;
  error.setAttribute("role", "alert");
  const control = where.querySelector("input, select, textarea");
  control?.setAttribute("aria-invalid", "true");
  control?.focus();
}
