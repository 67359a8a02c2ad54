// The standalone UI: a hash router over the views. Settings come from <meta> tags (no inline
// script, the page's CSP forbids it); every URL is relative, so the page works at /ui/, under
// a proxy's path prefix, and under Jupyter.
//
// Routes:
//   #/                                   dashboard: counters and jobs
//   #/jobs?status=&q=&disabled=&sort=&order=&page=   the jobs list, filtered by the server
//   #/jobs/<job>                         a job and its executions
//   #/jobs/<job>/show[/executions]       the same, at Dkron UI's addresses
//   #/jobs/<job>/executions/<id>         one execution and its full (live) output
//   #/runs?status=&job=&page=            runs across every job, running ones first
//   #/busy                               what runs now
//   #/cluster                            members, leader, Raft voters, runs per node
//   #/sql                                read-only SQL over the history
//   #/graph                              the jobs' dependencies, with their last status
//   #/timeline                           runs of the last 24 h and fires of the next 24 h
//   #/jobs/new[?from=<job>]              the job form: a new job, or a clone of <job>
//   #/jobs/<job>/edit                    the job form over <job>

import {
  adoptTokenFromHash,
  Client,
  pageSettings,
  storeToken,
  storedToken,
  TokenNeeded,
} from "./client.js";
import { parseRoute } from "./router.js";
import { RestSource } from "./source.js";
import { busyView } from "./views/busy.js";
import { clusterView } from "./views/cluster.js";
import { dashboardView } from "./views/dashboard.js";
import { problem, put } from "./views/dom.js";
import { executionView } from "./views/execution.js";
import { formView } from "./views/form.js";
import { graphView } from "./views/graph.js";
import { jobView } from "./views/job.js";
import { runsView } from "./views/runs.js";
import { sqlView } from "./views/sql.js";
import { timelineView } from "./views/timeline.js";
import { tokenView } from "./views/token.js";

const VIEWS = {
  dashboard: dashboardView,
  job: jobView,
  execution: executionView,
  busy: busyView,
  runs: runsView,
  cluster: clusterView,
  sql: sqlView,
  graph: graphView,
  timeline: timelineView,
  form: formView,
};

export function mount(main, { source, auth }) {
  let current = null;

  const navigate = (hash, { replace = false } = {}) => {
    if (replace) {
      history.replaceState(null, "", hash);
      show();
    } else {
      location.hash = hash;
    }
  };

  const fail = (error, where) => {
    if (error.name === "AbortError") return;
    if (error instanceof TokenNeeded) return askToken();
    put(where, problem(error));
  };

  const askToken = () => {
    current?.abort();
    current = new AbortController();
    const wrong = Boolean(storedToken());
    tokenView({
      el: main,
      wrong,
      retry: (token) => {
        storeToken(token);
        show();
      },
    });
  };

  const show = () => {
    const focused = document.activeElement?.closest?.("[data-key]")?.dataset.key;
    current?.abort();
    const controller = new AbortController();
    current = controller;
    const signal = controller.signal;
    const route = parseRoute(location.hash || "#/");
    if (!route) {
      put(main, problem(new Error(`No page at ${location.hash}: see the Dashboard.`)));
      return;
    }
    const every = (ms, refresh) => poll(ms, refresh, signal);
    const failHere = (error, where) => signal.aborted || fail(error, where);
    VIEWS[route.view]({ ...route, source, el: main, signal, navigate, fail: failHere, every });
    document.title = `${route.name ? `${route.name} · ` : ""}dkron-lab`;
    if (focused) refocus(main, focused);
  };

  if (auth === "bearer") {
    adoptTokenFromHash(location, history);
    const signOut = document.getElementById("dk-sign-out");
    if (signOut) {
      signOut.hidden = false;
      signOut.addEventListener("click", () => {
        storeToken("");
        askToken();
      });
    }
  }
  window.addEventListener("hashchange", show);
  show();
}

/** Give focus back to a control the re-mounted view has again (the search box while typing). */
function refocus(main, key) {
  const control = main.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!control) return;
  control.focus();
  if (control.type === "search")
    control.setSelectionRange(control.value.length, control.value.length);
}

/** Call `refresh` now and every `ms` while the page is visible, until `signal` aborts. */
function poll(ms, refresh, signal) {
  let timer = null;
  const tick = async () => {
    if (signal.aborted) return;
    if (!document.hidden) await refresh();
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  const wake = () => {
    if (!document.hidden && !signal.aborted) {
      clearTimeout(timer);
      tick();
    }
  };
  document.addEventListener("visibilitychange", wake, { signal });
  signal.addEventListener("abort", () => clearTimeout(timer));
  tick();
}

function clock() {
  const el = document.getElementById("dk-clock");
  if (!el) return;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const tick = () => {
    el.textContent = `${new Date().toLocaleTimeString()} ${zone}`;
  };
  tick();
  setInterval(tick, 1000);
}

const settings = pageSettings(document);
const client = new Client(settings);
clock();
mount(document.getElementById("dk-main"), { source: new RestSource(client), auth: settings.auth });
