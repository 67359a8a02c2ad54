// The notebook widget's front end: the web UI itself (dkron_lab/ui/static), hosted in the
// widget's element. An anywidget module is loaded as one blob, so the UI's own modules cannot
// be imported by their relative names; Python sends their texts in the `modules` trait, and
// this loader links them: one blob URL per module, dependencies first, each module's relative
// import specifiers ("./x.js", "../y.js": the only import style the UI uses) rewritten to the
// blob URLs of the modules they name.
//
// The app then runs as in /ui, but:
//   - in a shadow root, with ui.css scoped to it (the `css` trait), so it neither restyles the
//     notebook nor takes the notebook's styles; Lab's --jp-* variables still reach it;
//   - at an address kept in memory (router.js memoryLocation): the notebook's location.hash is
//     never read or written, and hash links navigate inside the widget;
//   - over a transport of custom messages: {kind: "request", id, method, path, query, body}
//     to Python, which makes the request with the kernel's dkron_lab.Client and answers
//     {kind: "response", id, status, body, total}. The browser never talks to the server.

const IMPORT = /(\bfrom\s*|\bimport\s*)(["'])(\.\.?\/[^"']+)\2/g;
const ENTRY = "app.js";
const ANSWER_WITHIN_MS = 60_000;

/** `spec` as seen from module `path`: "../source.js" from "views/dashboard.js" is "source.js". */
function resolve(spec, path) {
  return new URL(spec, `https://ui.invalid/${path}`).pathname.slice(1);
}

/** The modules `entry` needs, dependencies before dependents; an import cycle is refused (a
 * blob URL can only name a module that already has one). */
function linkOrder(modules, entry) {
  const order = [];
  const state = new Map(); // path -> "open" | "done"
  const visit = (path, trail) => {
    if (state.get(path) === "done") return;
    if (state.get(path) === "open") {
      const cycle = [...trail, path].join(" -> ");
      throw new Error(`the UI's modules import each other in a cycle: ${cycle}`);
    }
    if (!(path in modules)) {
      throw new Error(`the UI's module ${path} is missing (${trail.at(-1)} imports it)`);
    }
    state.set(path, "open");
    for (const [, , , spec] of modules[path].matchAll(IMPORT)) {
      visit(resolve(spec, path), [...trail, path]);
    }
    state.set(path, "done");
    order.push(path);
  };
  visit(entry, []);
  return order;
}

const linked = new WeakMap();

/** Import the UI's modules from their texts; `{app, client, router, source}`. One set per
 * widget model, shared by its views. */
function load(model) {
  if (!linked.has(model)) linked.set(model, link(model.get("modules")));
  return linked.get(model);
}

async function link(modules) {
  const urls = {};
  for (const path of linkOrder(modules, ENTRY)) {
    const text = modules[path].replace(
      IMPORT,
      (_, keyword, quote, spec) => `${keyword}${quote}${urls[resolve(spec, path)]}${quote}`,
    );
    urls[path] = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
  }
  try {
    const [app, client, router, source] = await Promise.all(
      [ENTRY, "client.js", "router.js", "source.js"].map((path) => import(urls[path])),
    );
    return { app, client, router, source };
  } finally {
    for (const url of Object.values(urls)) URL.revokeObjectURL(url);
  }
}

/** The client.js transport over the widget's custom messages. `close()` drops what is pending. */
function kernelTransport(model) {
  const waiting = new Map();
  const prefix = Math.random().toString(36).slice(2, 10);
  let count = 0;
  const answered = (message) => {
    if (message?.kind !== "response" || !waiting.has(message.id)) return;
    const { resolve, timer } = waiting.get(message.id);
    clearTimeout(timer);
    waiting.delete(message.id);
    resolve({ status: message.status, body: message.body ?? null, total: message.total ?? null });
  };
  model.on("msg:custom", answered);
  const transport = (method, path, { query = {}, body, signal } = {}) =>
    new Promise((resolve, reject) => {
      const aborted = () => reject(new DOMException("The request was aborted.", "AbortError"));
      if (signal?.aborted) return aborted();
      count += 1;
      const id = `${prefix}-${count}`;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(
          new Error(
            `the kernel did not answer ${method} /v1/${path} in ${ANSWER_WITHIN_MS / 1000} s: ` +
              "is a cell still running, or the kernel stopped? (the widget's requests wait for it)",
          ),
        );
      }, ANSWER_WITHIN_MS);
      waiting.set(id, { resolve, timer });
      signal?.addEventListener(
        "abort",
        () => {
          if (!waiting.delete(id)) return;
          clearTimeout(timer);
          aborted();
        },
        { once: true },
      );
      const api = `/v1/${path.replace(/^\//, "")}`;
      const request = { kind: "request", id, method, path: api, query };
      model.send(body === undefined ? request : { ...request, body });
    });
  transport.close = () => {
    model.off("msg:custom", answered);
    for (const { timer } of waiting.values()) clearTimeout(timer);
    waiting.clear();
  };
  return transport;
}

/** The UI page's header and main (from index.html), for the shadow root. */
function pageParts(html) {
  const page = new DOMParser().parseFromString(html, "text/html");
  for (const hidden of page.querySelectorAll("noscript, script")) hidden.remove();
  const app = document.createElement("div");
  app.className = "dk-app";
  app.append(...page.body.childNodes);
  return app;
}

/** Native controls (scrollbars, checkboxes) follow JupyterLab's theme when there is one, and
 * what the app writes on the page's root (views/role.js: data-role) reaches the widget's CSS,
 * where the page's root is the shadow host (widget.py scoped_css). */
function followPage(host, signal) {
  const root = document.documentElement;
  const apply = () => {
    const light = document.body.dataset.jpThemeLight;
    host.style.colorScheme = light === "true" ? "light" : light === "false" ? "dark" : "";
    for (const name of ["data-role", "data-user"]) {
      if (root.hasAttribute(name)) host.setAttribute(name, root.getAttribute(name));
      else host.removeAttribute(name);
    }
  };
  apply();
  const observer = new MutationObserver(apply);
  observer.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  observer.observe(root, { attributes: true, attributeFilter: ["data-role", "data-user"] });
  signal.addEventListener("abort", () => observer.disconnect());
}

/** Inside a shadow root the DOM clears an event's target once the event is dispatched, where
 * a document keeps it; a view that reads it after a pause (the jobs list's search box waits
 * for the typing to stop) would find none. The app's input and change events keep theirs. */
function keepTarget(event) {
  Object.defineProperty(event, "target", { value: event.target, configurable: true });
}

async function render({ model, el }) {
  const life = new AbortController();
  const shadow = el.shadowRoot || el.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = model.get("css");
  const app = pageParts(model.get("page"));
  shadow.replaceChildren(style, app);
  for (const type of ["input", "change"]) {
    shadow.addEventListener(type, keepTarget, { capture: true });
  }
  el.classList.add("dk-widget");
  followPage(el, life.signal);

  let ui;
  try {
    ui = await load(model);
  } catch (error) {
    app.querySelector("main").textContent = `The dkron-lab UI could not start: ${error.message}`;
    throw error;
  }
  const transport = kernelTransport(model);
  const client = new ui.client.Client({ auth: "kernel", transport });
  const address = ui.router.memoryLocation("#/");
  address.capture(shadow);
  ui.app.clock(shadow.getElementById("dk-clock"), life.signal);
  const unmount = ui.app.mount(shadow.getElementById("dk-main"), {
    source: new ui.source.RestSource(client),
    auth: "kernel",
    address,
    // The notebook keeps its title; the page shown is told on the widget's element instead
    // (data-address, data-title), for tests and a curious user.
    title: (text) => {
      el.dataset.address = address.hash;
      el.dataset.title = text;
    },
    every: model.get("interval") * 1000,
  });
  return () => {
    unmount();
    transport.close();
    life.abort();
  };
}

export default { render };
