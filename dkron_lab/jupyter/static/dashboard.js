// The dkron-lab dashboard's view (an anywidget front-end module; plain DOM, no build step).
//
// It only renders the model's synced traits and sends requests to Python:
//   model.send({action: "run" | "enable" | "disable" | "delete", job})
//   model.send({action: "save", form}), model.send({action: "preview", schedule, timezone})
//   model.send({action: "refresh"}), and model.set("selected", name) when a job row is clicked.
// It never talks to the dkron-lab server itself: the kernel does, with the client's credentials.

/** Create an element: h("td", {class: "x", onclick: f}, child, "text", ...). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Replace an element's children; null, undefined and false are left out, arrays flattened. */
function put(element, ...children) {
  const kept = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  element.replaceChildren(...kept);
}

/** "2026-11-27T15:13:00.000042+01:00" -> "2026-11-27 15:13:00 +01:00" (the job's own zone). */
function when(text) {
  if (!text) return "";
  return String(text)
    .replace("T", " ")
    .replace(/\.\d+/, "")
    .replace(/Z$/, " UTC")
    .replace(/([+-]\d\d:\d\d)$/, " $1");
}

/** An instant (any offset) as wall time in `zone`, e.g. "2026-11-27 15:22:43 GMT+1". */
function inZone(text, zone) {
  if (!text) return "";
  try {
    const format = new Intl.DateTimeFormat("sv-SE", {
      timeZone: zone || "UTC",
      dateStyle: "short",
      timeStyle: "medium",
    });
    const named = { timeZone: zone || "UTC", timeZoneName: "shortOffset" };
    const offset = new Intl.DateTimeFormat("en-US", named)
      .formatToParts(new Date(text))
      .find((part) => part.type === "timeZoneName");
    return `${format.format(new Date(text))} ${offset ? offset.value : ""}`.trim();
  } catch {
    return when(text);
  }
}

/** "2026-11-28 02:00:00 +01:00" as the wall time, then the zone smaller beneath it. */
function stacked(text) {
  const cut = text.lastIndexOf(" ");
  if (cut < 11) return [text];
  return [h("div", {}, text.slice(0, cut)), h("div", { class: "dk-tz" }, text.slice(cut + 1))];
}

function seconds(start, end) {
  if (!start || !end) return "";
  const span = (Date.parse(end) - Date.parse(start)) / 1000;
  return Number.isFinite(span) ? `${span.toFixed(span < 10 ? 2 : 0)} s` : "";
}

function badge(text, kind) {
  return h("span", { class: `dk-badge dk-${kind || text || "none"}` }, text || "never");
}

function errorBox(error, extraClass) {
  if (!error) return null;
  return h("div", { class: `dk-error ${extraClass}` }, h("b", {}, `${error.type}: `), error.error);
}

function jobStatus(job, running) {
  if (running.has(job.name) || job.status === "running") return badge("running", "running");
  if (job.disabled) return badge("disabled", "disabled");
  return badge("enabled", "enabled");
}

function executorSummary(job) {
  const config = job.executor_config || {};
  if (job.executor === "shell") return config.command || "";
  if (job.executor === "http") return `${config.method || "GET"} ${config.url || ""}`;
  if (job.executor === "notebook") return config.path || "";
  return job.executor || "";
}

/** One view of the dashboard; `state` holds what only the view knows (the delete to confirm). */
function render({ model, el }) {
  const state = { confirming: "" };
  const send = (content) => model.send(content);
  const parts = {
    head: h("div", { class: "dk-head" }),
    banner: h("div", { class: "dk-banner" }),
    jobs: h("div", { class: "dk-jobs" }),
    busy: h("div", { class: "dk-busy" }),
    executions: h("div", { class: "dk-executions" }),
    members: h("div", { class: "dk-members" }),
  };
  const form = buildForm(model, send);
  el.classList.add("dk-dashboard");
  el.replaceChildren(
    parts.head,
    parts.banner,
    h("section", {}, h("h3", {}, "Jobs"), parts.jobs),
    h("section", {}, h("h3", {}, "Running now"), parts.busy),
    h(
      "div",
      { class: "dk-columns" },
      h("section", { class: "dk-wide" }, parts.executions),
      h("section", {}, h("h3", {}, "Members"), parts.members),
    ),
    form.element,
  );

  const draw = {
    head: () => put(parts.head, headView(model, send)),
    banner: () => put(parts.banner, bannerView(model)),
    jobs: () => put(parts.jobs, jobsView(model, send, state, form, draw)),
    busy: () => put(parts.busy, busyView(model)),
    executions: () => put(parts.executions, executionsView(model)),
    members: () => put(parts.members, membersView(model)),
  };
  const listeners = [
    ["change:url change:leader change:last_refresh change:interval", draw.head],
    ["change:errors change:notice", draw.banner],
    ["change:jobs change:selected change:busy", draw.jobs],
    ["change:busy", draw.busy],
    ["change:executions change:selected", draw.executions],
    ["change:members change:leader", draw.members],
    ["change:preview change:errors", form.update],
  ];
  const each = (method) => {
    for (const [events, callback] of listeners)
      for (const event of events.split(" ")) model[method](event, callback);
  };
  each("on");
  for (const callback of Object.values(draw)) callback();
  form.update();
  return () => each("off");
}

function headView(model, send) {
  const refreshed = model.get("last_refresh");
  return [
    h("span", { class: "dk-title" }, "dkron-lab"),
    h("span", { class: "dk-url" }, model.get("url")),
    h("span", {}, "leader: ", h("b", { class: "dk-leader" }, model.get("leader") || "none")),
    h(
      "span",
      { class: "dk-refreshed" },
      refreshed ? `refreshed ${when(refreshed)}, every ${model.get("interval")} s` : "loading…",
    ),
    h("button", { class: "dk-refresh", onclick: () => send({ action: "refresh" }) }, "Refresh"),
  ];
}

function bannerView(model) {
  const errors = model.get("errors") || {};
  const notice = model.get("notice");
  return [
    errorBox(errors.refresh, "dk-refresh-error"),
    errorBox(errors.action, "dk-action-error"),
    notice ? h("div", { class: "dk-notice" }, notice) : null,
  ];
}

function jobsView(model, send, state, form, draw) {
  const jobs = model.get("jobs") || [];
  if (!jobs.length) return h("p", { class: "dk-empty" }, "No jobs yet: create one below.");
  const selected = model.get("selected");
  const running = new Set((model.get("busy") || []).map((execution) => execution.job_name));
  const rows = jobs.map((job) =>
    h(
      "tr",
      {
        class: `dk-job${job.name === selected ? " dk-selected" : ""}`,
        dataset: { job: job.name },
        title: "show this job's executions",
        onclick: () => {
          model.set("selected", job.name);
          model.save_changes();
        },
      },
      h(
        "td",
        { class: "dk-name" },
        job.displayname || job.name,
        h("div", { class: "dk-what", title: executorSummary(job) }, executorSummary(job)),
      ),
      h("td", {}, h("code", {}, job.schedule), h("div", { class: "dk-tz" }, job.timezone || "UTC")),
      h("td", {}, jobStatus(job, running)),
      h("td", { class: "dk-next" }, job.disabled ? "" : stacked(when(job.next))),
      h(
        "td",
        { class: "dk-last" },
        badge(job.last_result, job.last_result),
        h("div", { class: "dk-tz" }, stacked(inZone(job.last_run, job.timezone))[0]),
      ),
      h("td", { class: "dk-actions" }, jobActions(job, send, state, form, draw)),
    ),
  );
  const head = ["Job", "Schedule", "Status", "Next run", "Last result", ""];
  return h(
    "table",
    { class: "dk-table" },
    h("thead", {}, h("tr", {}, head.map((title) => h("th", {}, title)))),
    h("tbody", {}, rows),
  );
}

function jobActions(job, send, state, form, draw) {
  const act = (action) => (event) => {
    event.stopPropagation();
    send({ action, job: job.name });
  };
  const confirm = (name) => (event) => {
    event.stopPropagation();
    state.confirming = name;
    draw.jobs();
  };
  if (state.confirming === job.name) {
    return [
      h("span", { class: "dk-confirm" }, `Delete ${job.name}?`),
      h(
        "button",
        {
          class: "dk-delete-yes dk-danger",
          onclick: (event) => {
            state.confirming = "";
            act("delete")(event);
          },
        },
        "Yes, delete",
      ),
      h("button", { class: "dk-delete-no", onclick: confirm("") }, "No"),
    ];
  }
  return [
    h("button", { class: "dk-run", onclick: act("run") }, "Run"),
    job.disabled
      ? h("button", { class: "dk-enable", onclick: act("enable") }, "Enable")
      : h("button", { class: "dk-disable", onclick: act("disable") }, "Disable"),
    h(
      "button",
      {
        class: "dk-edit",
        onclick: (event) => {
          event.stopPropagation();
          form.fill(job);
        },
      },
      "Edit",
    ),
    h("button", { class: "dk-delete", onclick: confirm(job.name) }, "Delete"),
  ];
}

function busyView(model) {
  const busy = model.get("busy") || [];
  if (!busy.length) return h("p", { class: "dk-empty" }, "Nothing is running.");
  return h(
    "div",
    {},
    busy.map((execution) =>
      h(
        "div",
        { class: "dk-running", dataset: { job: execution.job_name } },
        h(
          "div",
          {},
          badge("running", "running"),
          " ",
          h("b", {}, execution.job_name),
          ` on ${execution.node_name}, since ${when(execution.started_at)}`,
        ),
        h("pre", { class: "dk-output" }, execution.output || "(no output yet)"),
      ),
    ),
  );
}

function executionsView(model) {
  const name = model.get("selected");
  if (!name) return [h("h3", {}, "Executions"), h("p", { class: "dk-empty" }, "Click a job.")];
  const executions = model.get("executions") || [];
  const rows = executions.map((execution, index) =>
    h(
      "details",
      { class: "dk-execution", open: index === 0 },
      h(
        "summary",
        {},
        badge(
          execution.finished_at ? (execution.success ? "success" : "failed") : "running",
          execution.finished_at ? (execution.success ? "success" : "failed") : "running",
        ),
        ` ${when(execution.started_at)} on ${execution.node_name}`,
        execution.attempt > 1 ? ` (attempt ${execution.attempt})` : "",
        ` ${seconds(execution.started_at, execution.finished_at)}`,
      ),
      h("pre", { class: "dk-output" }, execution.output || "(no output)"),
    ),
  );
  return [
    h("h3", {}, `Executions of ${name}`),
    rows.length ? h("div", {}, rows) : h("p", { class: "dk-empty" }, "No executions yet."),
  ];
}

function membersView(model) {
  const leader = model.get("leader");
  const rows = (model.get("members") || []).map((member) =>
    h(
      "tr",
      { class: "dk-member" },
      h("td", {}, member.Name, member.Name === leader ? h("b", { class: "dk-star" }, " ★ leader") : ""),
      h("td", {}, `${member.Addr}:${member.Port}`),
      h("td", {}, (member.Tags || {}).server === "true" ? "server" : "agent"),
      h("td", {}, badge(member.statusText, member.statusText)),
    ),
  );
  return h("table", { class: "dk-table" }, h("tbody", {}, rows));
}

// -- the job form -----------------------------------------------------------------------------

const FIELDS = ["name", "schedule", "timezone", "executor", "command", "method", "url", "body"];
const MORE_FIELDS = ["notebook", "parameters", "tags", "retries", "concurrency"];

function buildForm(model, send) {
  const input = (name, attributes = {}) => h("input", { name, class: `dk-in-${name}`, ...attributes });
  const select = (name, options) =>
    h("select", { name, class: `dk-in-${name}` }, options.map((o) => h("option", { value: o }, o)));
  const fields = {
    name: input("name", { placeholder: "backup-db" }),
    schedule: input("schedule", { placeholder: "@every 1h, 0 30 6 * * MON-FRI, @daily" }),
    timezone: input("timezone", { placeholder: "UTC", list: "dk-zones" }),
    executor: select("executor", ["shell", "http", "notebook"]),
    command: input("command", { placeholder: "echo hello" }),
    method: select("method", ["GET", "POST", "PUT", "PATCH", "DELETE"]),
    url: input("url", { placeholder: "https://example.com/hook" }),
    body: input("body", { placeholder: "request body" }),
    notebook: input("notebook", { placeholder: "/home/me/notebooks/report.ipynb" }),
    parameters: input("parameters", { placeholder: '{"day": "2026-01-31"}' }),
    tags: input("tags", { placeholder: "role=web, dc=eu" }),
    retries: input("retries", { type: "number", min: "0", value: "0" }),
    concurrency: select("concurrency", ["allow", "forbid"]),
    disabled: input("disabled", { type: "checkbox" }),
  };
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const label = (text, field, extra) =>
    h("label", { class: `dk-field ${extra || ""}` }, h("span", {}, text), field);
  const previewBox = h("div", { class: "dk-preview" });
  const formError = h("div", { class: "dk-form-errors" });
  const perExecutor = {
    shell: [label("Command", fields.command, "dk-shell")],
    http: [
      label("Method", fields.method, "dk-http"),
      label("URL", fields.url, "dk-http"),
      label("Body", fields.body, "dk-http"),
    ],
    notebook: [
      label("Notebook", fields.notebook, "dk-notebook"),
      label("Parameters", fields.parameters, "dk-notebook"),
    ],
  };
  const showExecutor = () => {
    for (const [executor, labels] of Object.entries(perExecutor))
      for (const item of labels) item.hidden = fields.executor.value !== executor;
  };
  let timer = null;
  const askPreview = () => {
    clearTimeout(timer);
    timer = setTimeout(
      () => send({ action: "preview", schedule: fields.schedule.value, timezone: fields.timezone.value }),
      300,
    );
  };
  fields.schedule.addEventListener("input", askPreview);
  fields.timezone.addEventListener("input", askPreview);
  fields.executor.addEventListener("change", showExecutor);

  const values = () => {
    const form = {};
    for (const [name, field] of Object.entries(fields))
      form[name] = field.type === "checkbox" ? field.checked : field.value;
    return form;
  };
  const save = h(
    "button",
    { class: "dk-save dk-primary", type: "button", onclick: () => send({ action: "save", form: values() }) },
    "Save job",
  );
  const clear = h("button", { class: "dk-new", type: "button", onclick: () => fill(null) }, "New");

  const fill = (job) => {
    const config = (job && job.executor_config) || {};
    const tags = Object.entries((job && job.tags) || {}).map(([k, v]) => `${k}=${v}`);
    const known = { shell: 1, http: 1, notebook: 1 };
    const text = {
      name: job ? job.name : "",
      schedule: job ? job.schedule : "",
      timezone: job ? job.timezone : "",
      executor: job && known[job.executor] ? job.executor : "shell",
      command: config.command || "",
      method: config.method || "GET",
      url: config.url || "",
      body: config.body || "",
      notebook: config.path || "",
      parameters: config.parameters || "",
      tags: tags.join(", "),
      retries: String(job ? job.retries || 0 : 0),
      concurrency: (job && job.concurrency) || "allow",
    };
    for (const name of [...FIELDS, ...MORE_FIELDS]) fields[name].value = text[name];
    fields.disabled.checked = Boolean(job && job.disabled);
    showExecutor();
    askPreview();
  };

  const update = () => {
    const errors = model.get("errors") || {};
    const preview = model.get("preview") || {};
    const next = preview.next || [];
    put(
      previewBox,
      errorBox(errors.preview, "dk-preview-error") ||
        (next.length
          ? h(
              "div",
              {},
              h("span", {}, `Next fires (${preview.timezone || "UTC"}):`),
              h("ol", { class: "dk-fires" }, next.map((t) => h("li", {}, when(t)))),
            )
          : h("span", { class: "dk-empty" }, "Type a schedule to see its next fire instants.")),
    );
    put(formError, errorBox(errors.form, "dk-form-error"));
  };

  showExecutor();
  const element = h(
    "section",
    { class: "dk-form" },
    h("h3", {}, "Create or edit a job"),
    h("datalist", { id: "dk-zones" }, zones.map((zone) => h("option", { value: zone }))),
    h(
      "div",
      { class: "dk-form-grid" },
      h(
        "div",
        { class: "dk-form-fields" },
        label("Name", fields.name),
        label("Schedule", fields.schedule),
        label("Timezone", fields.timezone),
        label("Executor", fields.executor),
        Object.values(perExecutor),
        label("Tags", fields.tags),
        label("Retries", fields.retries),
        label("Concurrency", fields.concurrency),
        label("Disabled", fields.disabled, "dk-check"),
        h("div", { class: "dk-buttons" }, save, clear),
        formError,
      ),
      previewBox,
    ),
  );
  return { element, update, fill };
}

export default { render };
