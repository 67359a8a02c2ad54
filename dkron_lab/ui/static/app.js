// The UI: a hash router over the views, and the page that starts it. Settings come from <meta>
// tags (no inline script, the page's CSP forbids it); every URL is relative, so the page works
// at /ui/, under a proxy's path prefix, and under Jupyter. `mount` also runs inside another
// page (the notebook widget, dkron_lab/jupyter/static/widget.js): in a given element, with its
// own location and transport, leaving the host page's address, title and tokens alone.
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
import { pageLocation, parseRoute } from "./router.js";
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

/** Show the page the address asks for in `main`, and the next one whenever it changes.
 * `address`: where the address lives (router.js's pageLocation or memoryLocation);
 * `title(text)`: what to do with the page's title; `every`: the shortest time between two
 * refreshes, in ms. Returns `unmount()`, which stops the page shown and stops following the
 * address. */
export function mount(
  main,
  {
    source,
    auth,
    address = pageLocation(),
    title = (text) => {
      document.title = text;
    },
    every: fastest = 0,
  },
) {
  let current = null;

  const navigate = (hash, { replace = false } = {}) => {
    address.go(hash, { replace });
    if (replace) show();
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
    const focused = main.getRootNode().activeElement?.closest?.("[data-key]")?.dataset.key;
    current?.abort();
    const controller = new AbortController();
    current = controller;
    const signal = controller.signal;
    const route = parseRoute(address.hash);
    if (!route) {
      put(main, problem(new Error(`No page at ${address.hash}: see the Dashboard.`)));
      return;
    }
    const every = (ms, refresh) => poll(Math.max(ms, fastest), refresh, signal);
    const failHere = (error, where) => signal.aborted || fail(error, where);
    VIEWS[route.view]({ ...route, source, el: main, signal, navigate, fail: failHere, every });
    title(`${route.name ? `${route.name} · ` : ""}dkron-lab`);
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
  const life = new AbortController();
  address.listen(show, life.signal);
  show();
  return function unmount() {
    life.abort();
    current?.abort();
  };
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

/** Keep `el` showing the browser's time and zone, until `signal` aborts. */
export function clock(el, signal) {
  if (!el) return;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const tick = () => {
    el.textContent = `${new Date().toLocaleTimeString()} ${zone}`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  signal?.addEventListener("abort", () => clearInterval(timer));
}

// The UI's own page (index.html, which carries its settings as <meta> tags) starts itself; a
// host page that imports this module mounts it where it wants.
if (document.querySelector('meta[name="dkron-api"]')) {
  const settings = pageSettings(document);
  const client = new Client(settings);
  clock(document.getElementById("dk-clock"));
  mount(document.getElementById("dk-main"), {
    source: new RestSource(client),
    auth: settings.auth,
  });
}
