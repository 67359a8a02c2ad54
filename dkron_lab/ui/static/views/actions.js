// Run, enable/disable and delete a job, each confirmed in place: the first click asks, the
// second does it. `state.confirming` survives the list's refreshes. Each button carries the
// role it needs (views/role.js): run and toggle operator, delete admin.

import { h } from "./dom.js";
import { needs } from "./role.js";

const ACTIONS = {
  run: {
    label: "Run",
    ask: "Run now?",
    yes: "Yes, run",
    role: "operator",
    call: (s, job) => s.run(job.name),
  },
  toggle: {
    role: "operator",
    label: (job) => (job.disabled ? "Enable" : "Disable"),
    ask: (job) => (job.disabled ? "Enable its schedule?" : "Stop its schedule?"),
    yes: (job) => (job.disabled ? "Yes, enable" : "Yes, disable"),
    call: (s, job) => s.toggle(job.name),
  },
  remove: {
    role: "admin",
    label: "Delete",
    ask: "Delete this job?",
    yes: "Yes, delete",
    call: (s, job) => s.remove(job.name),
  },
};

/** A heartbeat check runs nothing (its pings are its runs): it has no Run button. */
export const HEARTBEAT = "heartbeat";

const text = (value, job) => (typeof value === "function" ? value(job) : value);

/** The action buttons of `job`. `after(action, error, focusKey)` is called once one is done
 * or failed (action null: asked or cancelled); `focusKey` names the button to focus next. */
export function jobActions({ source, job, state, after }) {
  const asking = state.confirming?.job === job.name ? state.confirming.action : null;
  const key = (name) => `${name}:${job.name}`;
  if (asking) {
    const action = ACTIONS[asking];
    const cancel = () => {
      state.confirming = null;
      after(null, null, key(asking));
    };
    const confirm = async () => {
      state.confirming = null;
      try {
        await action.call(source, job);
        after(asking, null, key(asking));
      } catch (error) {
        after(asking, error, key(asking));
      }
    };
    return h(
      "span",
      { class: "dk-actions dk-confirm", role: "group", "aria-label": `Confirm for ${job.name}` },
      h("span", {}, text(action.ask, job), " "),
      h(
        "button",
        { type: "button", class: `dk-danger-${asking}`, "data-key": key("yes"), onclick: confirm },
        text(action.yes, job),
      ),
      h("button", { type: "button", "data-key": key("cancel"), onclick: cancel }, "Cancel"),
    );
  }
  return h(
    "span",
    { class: "dk-actions", role: "group", "aria-label": `Actions on ${job.name}` },
    Object.entries(ACTIONS)
      .filter(([name]) => name !== "run" || job.executor !== HEARTBEAT)
      .map(([name, action]) =>
      h(
        "button",
        {
          type: "button",
          "data-key": key(name),
          "aria-label": `${text(action.label, job)} ${job.name}`,
          ...needs(action.role),
          onclick: () => {
            state.confirming = { job: job.name, action: name };
            after(null, null, key("yes"));
          },
        },
        text(action.label, job),
      ),
    ),
  );
}
