// The cluster (#/cluster): the members with status and tags, the leader, the Raft voters with
// the term, commit index and each voter's lag where the API knows them, and the runs per node
// (running now from /v1/busy, the last hour's from the history). Admins can remove a Raft peer
// or make this server leave, each confirmed in place.

import { h, problem, put, rerender } from "./dom.js";
import { needs, showRole } from "./role.js";

const RECENT =
  "SELECT node_name, count(*) AS runs, count(*) FILTER (WHERE NOT success) AS failed " +
  "FROM executions WHERE started_at >= now() - INTERVAL 1 HOUR GROUP BY node_name";

const STATUS_CLASS = {
  alive: "success",
  failed: "failed",
  left: "untriggered",
  leaving: "partially_failed",
};

function chips(tags) {
  const entries = Object.entries(tags || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h("span", { class: "dk-muted" }, "—");
  return entries.map(([key, value]) => h("code", { class: "dk-chip" }, `${key}=${value}`));
}

function table(caption, columns, rows) {
  const head = (c) => (typeof c === "string" ? h("th", { scope: "col" }, c) : c);
  return h(
    "div",
    { class: "dk-scroll" },
    h(
      "table",
      { class: "dk-table" },
      h("caption", { class: "dk-sr" }, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map(head),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

function statusBadge(text) {
  return h(
    "span",
    { class: `dk-badge dk-${STATUS_CLASS[text] || "untriggered"}` },
    text || "unknown",
  );
}

function members(data) {
  const { list, leader, busy, recent } = data;
  const rows = list
    .slice()
    .sort((a, b) => a.Name.localeCompare(b.Name))
    .map((member) => {
      const runs = recent.get(member.Name) || { runs: 0, failed: 0 };
      const running = busy.filter((e) => e.node_name === member.Name).length;
      const leads = member.Name === leader;
      return h(
        "tr",
        { dataset: { node: member.Name } },
        h(
          "th",
          { scope: "row" },
          member.Name,
          leads ? [" ", h("span", { class: "dk-badge dk-running" }, "leader")] : null,
        ),
        h("td", {}, `${member.Addr}:${member.Port}`),
        h("td", {}, statusBadge(member.statusText)),
        h("td", {}, member.Tags?.server === "true" ? "server" : "agent"),
        h("td", { class: "dk-num" }, String(running)),
        h("td", { class: "dk-num" }, String(runs.runs)),
        h("td", { class: "dk-num" }, String(runs.failed)),
        h("td", { class: "dk-wrap" }, chips(member.Tags)),
      );
    });
  return table(
    "The cluster's members",
    [
      "Node",
      "Address",
      "Status",
      "Kind",
      "Running now",
      "Runs, last hour",
      "Failed, last hour",
      "Tags",
    ],
    rows,
  );
}

function raftSummary(raft, leader) {
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")];
  return h(
    "dl",
    { class: "dk-summary dk-raft", "aria-label": "Raft on this server" },
    field("Leader", leader || "none yet"),
    field("This server", `${raft.state || "?"} at ${raft.self || "?"}`),
    field("Term", raft.term),
    field("Commit index", raft.commit_index),
    field("Applied index", raft.applied_index),
    field("Log entries kept", raft.log_size),
    field("Quorum", raft.has_quorum === "True" || raft.has_quorum === "true" ? "yes" : "no"),
  );
}

function confirmable(state, key, label, ask, yes, act, after) {
  if (state.confirming !== key) {
    return h(
      "button",
      {
        type: "button",
        "data-key": key,
        onclick: () => {
          state.confirming = key;
          after(`${key}:yes`);
        },
      },
      label,
    );
  }
  return h(
    "span",
    { class: "dk-actions", role: "group", "aria-label": ask },
    h("span", {}, `${ask} `),
    h(
      "button",
      {
        type: "button",
        class: "dk-danger-remove",
        "data-key": `${key}:yes`,
        onclick: async () => {
          state.confirming = null;
          try {
            const answer = await act();
            after(key, null, answer);
          } catch (error) {
            after(key, error);
          }
        },
      },
      yes,
    ),
    h(
      "button",
      {
        type: "button",
        "data-key": `${key}:cancel`,
        onclick: () => {
          state.confirming = null;
          after(key);
        },
      },
      "Cancel",
    ),
  );
}

function voters(data, source, state, after) {
  const commit = Number(data.raft.commit_index);
  const rows = data.peers.map((peer) => {
    const name = peer.name || peer.address;
    const lag =
      peer.match_index === null || peer.match_index === undefined
        ? null
        : Math.max(0, commit - peer.match_index);
    return h(
      "tr",
      { dataset: { peer: name } },
      h(
        "th",
        { scope: "row" },
        name,
        peer.role === "self" ? h("span", { class: "dk-muted" }, " (this server)") : null,
      ),
      h("td", {}, peer.address),
      h("td", {}, peer.leader ? "leader" : "follower"),
      h(
        "td",
        {},
        peer.reachable || peer.role === "self" ? "yes" : h("span", { class: "dk-error" }, "no"),
      ),
      h("td", { class: "dk-num" }, peer.match_index ?? "—"),
      h("td", { class: "dk-num" }, lag === null ? "—" : `${lag} entries`),
      h(
        "td",
        needs("admin"),
        confirmable(
          state,
          `remove:${name}`,
          `Remove ${name}`,
          `Remove ${name} from the Raft voters?`,
          "Yes, remove",
          () => source.removePeer(name),
          after,
        ),
      ),
    );
  });
  return table(
    "The Raft voters",
    [
      "Server",
      "Raft address",
      "Role",
      "Reachable",
      "Match index",
      "Lag",
      h("th", { scope: "col", ...needs("admin") }, "Admin"),
    ],
    rows,
  );
}

async function load(source, signal) {
  const [status, list, peers, busy] = await Promise.all([
    source.status(signal),
    source.members(signal),
    source.raftPeers(signal),
    source.busy(signal),
  ]);
  const recent = new Map();
  try {
    const answer = await source.sql(RECENT, { maxRows: 1000, signal });
    for (const [node, runs, failed] of answer.rows)
      recent.set(node, { runs: Number(runs), failed: Number(failed) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
  }
  const raft = status.raft || {};
  const leading = peers.find((peer) => peer.leader);
  const leaderName = leading ? leading.name || leading.address : "";
  return { status, list, peers, busy, raft, leader: leaderName, recent };
}

export function clusterView({ source, el, signal, fail, every }) {
  const state = { confirming: null };
  const notice = h("div", { role: "status", class: "dk-notice" });
  const body = h("div");
  put(el, h("h1", {}, "Cluster"), notice, body);
  showRole(source);
  let last = null;
  const after = (key, error, answer) => {
    if (error) put(notice, problem(error));
    else if (answer !== undefined)
      put(
        notice,
        h(
          "p",
          {},
          key.startsWith("leave")
            ? "This server is leaving; it stops now."
            : `Done: ${key.replace(":", " ")}.`,
        ),
      );
    draw(typeof key === "string" && !answer && !error ? key : null);
    if (answer !== undefined) refresh();
  };
  const draw = (focusKey) => {
    if (!last) return;
    const data = last;
    rerender(
      body,
      () => [
        h(
          "section",
          { "aria-labelledby": "dk-members" },
          h("h2", { id: "dk-members" }, "Members"),
          members(data),
        ),
        h(
          "section",
          { "aria-labelledby": "dk-raft" },
          h("h2", { id: "dk-raft" }, "Raft"),
          raftSummary(data.raft, data.leader),
          voters(data, source, state, after),
        ),
        h(
          "section",
          { "aria-labelledby": "dk-this" },
          h("h2", { id: "dk-this" }, "This server"),
          h(
            "p",
            {},
            `The page talks to ${data.status.agent?.name || "?"} (dkron-lab ${data.status.agent?.version || "?"}). `,
            "Leaving stops it once its running executions finish; the admin role is needed.",
          ),
          h(
            "div",
            needs("admin"),
            confirmable(
              state,
              "leave",
            `Leave: stop ${data.status.agent?.name || "this server"}`,
            "Make this server leave the cluster and stop?",
            "Yes, leave",
              () => source.leave(),
              after,
            ),
          ),
        ),
      ],
      focusKey,
    );
  };
  const refresh = async () => {
    try {
      last = await load(source, signal);
      draw();
    } catch (error) {
      fail(error, body);
    }
  };
  every(5000, refresh);
}
