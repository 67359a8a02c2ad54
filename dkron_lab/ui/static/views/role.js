// What the signed-in role may do, for the views to hide what it cannot (the server checks
// every request anyway, docs/security.md): `viewer` reads, `operator` also runs and toggles,
// `admin` also creates, changes and deletes jobs and manages the cluster.
//
// A control that needs a role carries `data-needs="operator"` or `"admin"` (`needs(role)`);
// `showRole(source)` asks the server who the page is signed in as (GET /v1/whoami) and puts
// the role on <html data-role>, and ui.css hides what that role may not use (and, until it is
// known, keeps those controls invisible so they do not flash).

const ORDER = ["viewer", "operator", "admin"];

/** Whether `role` may do what `needed` may. */
export function allows(role, needed) {
  return ORDER.indexOf(role) >= ORDER.indexOf(needed);
}

/** The attributes of a control that `role` (or a stronger one) may use. */
export function needs(role) {
  return { "data-needs": role };
}

/** Learn the page's role and show it on <html data-role>; resolves to `{name, role}`, or
 * null when it could not be asked (every control is then shown, and the server says no to
 * what the role may not do). */
export async function showRole(source) {
  try {
    const who = await source.whoami();
    const role = ORDER.includes(who?.role) ? who.role : "viewer";
    document.documentElement.dataset.role = role;
    document.documentElement.dataset.user = who?.name || "";
    return who;
  } catch (error) {
    if (error.name !== "AbortError") console.warn("could not learn the page's role:", error);
    document.documentElement.dataset.role = "admin";
    return null;
  }
}
