// Bulk actions on the jobs list: select rows, then run / enable / disable / delete them with
// one confirmation that names the count. `state.selected` (job names) and `state.bulk` (the
// action being confirmed) survive the list's refreshes, as `state.confirming` does. The
// selection needs the operator role, deleting the admin role (views/role.js).

import { h } from "./dom.js";
import { needs } from "./role.js";

const plural = (n) => `${n} job${n === 1 ? "" : "s"}`;

/** Each action: which of the selected jobs it applies to, and what it does to one. */
const BULK = {
  run: { label: "Run", role: "operator", pick: () => true, call: (s, job) => s.run(job.name) },
  enable: {
    label: "Enable",
    role: "operator",
    pick: (job) => job.disabled,
    call: (s, job) => s.toggle(job.name),
  },
  disable: {
    label: "Disable",
    role: "operator",
    pick: (job) => !job.disabled,
    call: (s, job) => s.toggle(job.name),
  },
  remove: { label: "Delete", role: "admin", pick: () => true, call: (s, job) => s.remove(job.name) },
};

/** Do `action` on `jobs` one after the other; the first failure is reported, the rest go on. */
export async function bulkDo(source, action, jobs) {
  const { call, pick } = BULK[action];
  let failed = null;
  let done = 0;
  for (const job of jobs.filter(pick)) {
    try {
      await call(source, job);
      done += 1;
    } catch (error) {
      failed ??= new Error(`${job.name}: ${error.message}`);
    }
  }
  return { done, failed };
}

/** The select-all checkbox of the table's head. */
export function selectAll(jobs, state, after) {
  const all = jobs.length > 0 && jobs.every((job) => state.selected.has(job.name));
  return h(
    "th",
    { scope: "col", class: "dk-select", ...needs("operator") },
    h("input", {
      type: "checkbox",
      checked: all,
      "aria-label": "Select every job on this page",
      "data-key": "select:*",
      onchange: (event) => {
        for (const job of jobs) {
          if (event.target.checked) state.selected.add(job.name);
          else state.selected.delete(job.name);
        }
        after(null, null, "select:*");
      },
    }),
  );
}

/** A row's checkbox. */
export function selectOne(job, state, after) {
  return h(
    "td",
    { class: "dk-select", ...needs("operator") },
    h("input", {
      type: "checkbox",
      checked: state.selected.has(job.name),
      "aria-label": `Select ${job.name}`,
      "data-key": `select:${job.name}`,
      onchange: (event) => {
        if (event.target.checked) state.selected.add(job.name);
        else state.selected.delete(job.name);
        after(null, null, `select:${job.name}`);
      },
    }),
  );
}

/** The bar above the list once rows are selected: the actions, or the confirmation. */
export function bulkBar({ source, jobs, state, after }) {
  const chosen = jobs.filter((job) => state.selected.has(job.name));
  if (!chosen.length) return null;
  const label = { role: "group", "aria-label": `${plural(chosen.length)} selected` };
  if (state.bulk) {
    const action = BULK[state.bulk];
    const count = chosen.filter(action.pick).length;
    const confirm = async () => {
      const name = state.bulk;
      state.bulk = null;
      const { done, failed } = await bulkDo(source, name, chosen);
      if (name === "remove") state.selected.clear();
      after(`${action.label.toLowerCase()} ${plural(done)}`, failed, "bulk:run");
    };
    return h(
      "div",
      { class: "dk-bulk dk-confirm", ...label },
      h("span", {}, `${action.label} ${plural(count)}?`, " "),
      h(
        "button",
        {
          type: "button",
          class: `dk-danger-${state.bulk}`,
          "data-key": "bulk:yes",
          onclick: confirm,
        },
        `Yes, ${action.label.toLowerCase()} ${plural(count)}`,
      ),
      h(
        "button",
        {
          type: "button",
          "data-key": "bulk:cancel",
          onclick: () => {
            const name = state.bulk;
            state.bulk = null;
            after(null, null, `bulk:${name}`);
          },
        },
        "Cancel",
      ),
    );
  }
  return h(
    "div",
    { class: "dk-bulk", ...label },
    h("span", {}, `${plural(chosen.length)} selected:`),
    Object.entries(BULK).map(([name, action]) =>
      h(
        "button",
        {
          type: "button",
          "data-key": `bulk:${name}`,
          disabled: !chosen.some(action.pick),
          ...needs(action.role),
          onclick: () => {
            state.bulk = name;
            after(null, null, "bulk:yes");
          },
        },
        `${action.label} selected`,
      ),
    ),
    h(
      "button",
      {
        type: "button",
        "data-key": "bulk:clear",
        onclick: () => {
          state.selected.clear();
          after(null, null, null);
        },
      },
      "Clear selection",
    ),
  );
}
