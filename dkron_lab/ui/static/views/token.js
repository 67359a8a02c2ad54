// The token prompt, shown when the API answers 401: the token goes to sessionStorage only
// (gone when the tab closes), never into the URL.

import { h, put } from "./dom.js";

export function tokenView({ el, retry, wrong }) {
  const input = h("input", {
    type: "password",
    id: "dk-token",
    name: "token",
    autocomplete: "current-password",
    required: true,
    "aria-describedby": "dk-token-help",
  });
  const submit = (event) => {
    event.preventDefault();
    retry(input.value.trim());
  };
  put(
    el,
    h(
      "form",
      { class: "dk-login", onsubmit: submit, "aria-labelledby": "dk-login-title" },
      h("h1", { id: "dk-login-title" }, "API token"),
      wrong ? h("p", { class: "dk-error", role: "alert" }, "That token was refused.") : null,
      h(
        "p",
        { id: "dk-token-help" },
        "This server needs its API token. It is in the server's start-up log, in ",
        h("code", {}, "<data-dir>/api-token"),
        ", or given by ",
        h("code", {}, "--api-token"),
        ". It is kept in this tab only.",
      ),
      h("label", { for: "dk-token" }, "Token"),
      input,
      h("button", { type: "submit" }, "Sign in"),
    ),
  );
  input.focus();
}
