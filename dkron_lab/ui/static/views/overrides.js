// "Run with overrides…" on a job's page: a small dialog of name/value rows, environment
// variables for a shell job and parameters for a notebook job, sent as the body of one run
// (POST /v1/jobs/<job>, docs/api.md); the stored job never changes. A parameter's value is
// read as JSON when it is JSON (7, true, "eu", [1, 2]) and as text otherwise. The server's
// 400 is shown in the dialog, which stays open to fix it.

import { h, put } from "./dom.js";
import { needs } from "./role.js";

/** What each executor lets a run override: the body's key and the rows' labels. */
const KINDS = {
  shell: { key: "env", title: "Environment variables", name: "Variable", hint: "NAME" },
  notebook: { key: "parameters", title: "Notebook parameters", name: "Parameter", hint: "name" },
};

/** Whether a job's runs can take overrides (its executor has something to override). */
export function canOverride(job) {
  return job.executor in KINDS;
}

/** A parameter's value as typed: JSON if it reads as JSON, else the text itself. */
export function parameterValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The body of a run from the dialog's rows (`[[name, value], ...]`, empty names left out). */
export function overridesBody(executor, rows) {
  const kind = KINDS[executor];
  const kept = rows.filter(([name]) => name.trim());
  if (!kind || !kept.length) return {};
  const value = kind.key === "parameters" ? parameterValue : (text) => text;
  return { [kind.key]: Object.fromEntries(kept.map(([name, text]) => [name.trim(), value(text)])) };
}

/** The dialog, made once per page: `el` to place on it, `open(job)` to show it for `job`.
 * `after(action, error)` is called once the run was asked for. */
export function overridesDialog({ source, after }) {
  const el = h("dialog", { class: "dk-dialog", "aria-labelledby": "dk-overrides-title" });
  const open = (job) => {
    const kind = KINDS[job.executor];
    if (!kind) return;
    const rows = h("div", { class: "dk-pairs", role: "group", "aria-label": kind.title });
    const error = h("p", { class: "dk-error", role: "alert", hidden: true });
    const addRow = (name = "", value = "") => {
      const row = [
        h("input", {
          type: "text",
          value: name,
          placeholder: kind.hint,
          "aria-label": `${kind.name} name`,
          autocomplete: "off",
          spellcheck: "false",
          class: "dk-mono",
        }),
        h("input", {
          type: "text",
          value,
          placeholder: "value",
          "aria-label": `${kind.name} value`,
          autocomplete: "off",
          spellcheck: "false",
          class: "dk-mono",
        }),
      ];
      const remove = h(
        "button",
        {
          type: "button",
          "aria-label": `Remove this ${kind.name.toLowerCase()}`,
          onclick: () => row.concat(remove).forEach((part) => part.remove()),
        },
        "×",
      );
      rows.append(...row, remove);
      row[0].focus();
    };
    const values = () => {
      const inputs = [...rows.querySelectorAll("input")];
      const pairs = [];
      for (let i = 0; i + 1 < inputs.length; i += 2) pairs.push([inputs[i].value, inputs[i + 1].value]);
      return pairs;
    };
    const submit = async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = overridesBody(job.executor, values());
      try {
        await source.runWith(job.name, body);
        el.close();
        after("run with overrides", null);
      } catch (failure) {
        if (failure.status === undefined) {
          el.close();
          return after("run with overrides", failure);
        }
        put(error, failure.message);
        error.hidden = false;
      }
    };
    put(
      el,
      h(
        "form",
        { method: "dialog", onsubmit: submit },
        h("h2", { id: "dk-overrides-title" }, `Run ${job.displayname || job.name} with overrides`),
        h(
          "p",
          { class: "dk-muted" },
          `${kind.title} for this one run, laid over the job's own; the job is not changed.`,
          kind.key === "parameters" ? " A value is read as JSON when it is JSON (7, true)." : "",
        ),
        rows,
        h("button", { type: "button", onclick: () => addRow() }, `Add a ${kind.name.toLowerCase()}`),
        error,
        h(
          "div",
          { class: "dk-toolbar" },
          h("button", { type: "submit", class: "dk-primary" }, "Run now"),
          h("button", { type: "button", onclick: () => el.close() }, "Cancel"),
        ),
      ),
    );
    el.showModal();
    addRow();
  };
  return { el, open };
}

/** The button that opens the dialog (operators and admins), or null when the job's executor
 * has nothing to override. */
export function overridesButton(job, dialog) {
  if (!canOverride(job)) return null;
  return h(
    "button",
    {
      type: "button",
      "data-key": `overrides:${job.name}`,
      onclick: () => dialog.open(job),
      ...needs("operator"),
    },
    "Run with overrides…",
  );
}
