// The dashboard's shell: session, navigation, the live feed, and the hash router.
import { api, ApiError, roles, session, setSignedOutHandler } from "./api.js";
import { Scope, fill, h, toast } from "./dom.js";
import { Live } from "./live.js";
import * as alerts from "./pages/alerts.js";
import * as battery from "./pages/battery.js";
import * as fleet from "./pages/fleet.js";
import * as locationPage from "./pages/location.js";
import * as loginPage from "./pages/login.js";
import * as research from "./pages/research.js";
import * as users from "./pages/users.js";

const ROUTES = [
  [/^#\/login$/, loginPage.page],
  [/^#\/fleet$/, fleet.page],
  [/^#\/locations\/([^/]+)$/, locationPage.page],
  [/^#\/batteries\/([^/]+)$/, battery.page],
  [/^#\/alerts$/, alerts.page],
  [/^#\/research$/, research.listPage],
  [/^#\/research\/(\d+)$/, research.detailPage],
  [/^#\/users$/, users.page],
];
const NAV = [["fleet", "Fleet", "#/fleet"], ["alerts", "Alerts", "#/alerts"], ["research", "Research", "#/research"]];

const main = document.getElementById("page");
const liveStatus = h("span", { class: "live", testid: "live-status", "data-state": "disconnected" }, "offline");
const live = new Live(
  (up) => { liveStatus.dataset.state = up ? "connected" : "disconnected"; liveStatus.textContent = up ? "live" : "offline"; },
  () => signedOut(true),
  (message) => toast(message),
);
let current = null; // {scope}
let checkedUser = false;

/** Back to the login page; `expired`: the session ended by itself (not a log-out), so say so. */
function signedOut(expired = false) {
  if (expired) {
    toast("Your session has ended: please log in again.", "info");
    session.returnTo(location.hash);
  }
  session.clear();
  live.stop();
  checkedUser = false;
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
}
setSignedOutHandler(signedOut);

function renderShell(user) {
  const nav = document.getElementById("nav");
  const box = document.getElementById("session");
  if (!user) { nav.replaceChildren(); box.replaceChildren(); return; }
  const links = NAV.map(([id, text, href]) => h("a", { href, testid: `nav-${id}`, "data-nav": id }, text));
  if (roles.isAdmin(user)) links.push(h("a", { href: "#/users", testid: "nav-users", "data-nav": "users" }, "Users"));
  fill(nav, links);
  const logout = h("button", { type: "button", testid: "logout" }, "Log out");
  logout.addEventListener("click", async () => {
    logout.disabled = true;
    try { await api("/auth/logout", { method: "POST" }); } catch (err) { if (err.status !== 401) toast(err.message); }
    signedOut();
  });
  fill(box, liveStatus, h("span", { testid: "current-user" }, `${user.username} (${user.role})`), logout);
}

function highlight(hash) {
  for (const a of document.querySelectorAll("#nav a")) {
    const section = hash.split("/")[1] || "";
    const active = a.dataset.nav === section || (a.dataset.nav === "fleet" && section === "locations")
      || (a.dataset.nav === "fleet" && section === "batteries");
    a.classList.toggle("active", active);
  }
}

function report(err) {
  if (err && err.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) return; // signedOut() has said it
  console.error(err);
  toast(err instanceof ApiError ? err.message : `Something went wrong: ${err && err.message ? err.message : err}`);
}

async function route() {
  if (current) current.scope.dispose();
  const scope = new Scope();
  current = { scope };
  delete main.dataset.page;
  let hash = location.hash || "#/fleet";
  let user = session.user;
  if (!session.access) {
    user = null;
    session.returnTo(hash);
    hash = "#/login";
  } else if (!checkedUser) {
    // A reload keeps the tokens: check them (and the role) once.
    try {
      user = await api("/auth/me", { signal: scope.signal });
      session.save({ user });
      checkedUser = true;
    } catch (err) {
      if (!scope.alive) return;
      if (!session.access) return; // signed out meanwhile: route() runs again
      report(err);
    }
    if (!scope.alive) return;
  }
  if (user && hash === "#/login") hash = "#/fleet";
  if (hash === "#/users" && user && !roles.isAdmin(user)) {
    toast("Users: admin access required");
    hash = "#/fleet";
  }
  if (hash !== (location.hash || "#/fleet")) { history.replaceState(null, "", hash); }
  renderShell(user);
  if (user) live.start();
  highlight(hash);
  const found = ROUTES.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  main.replaceChildren();
  if (!found) {
    main.append(h("div", { class: "panel" }, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/fleet" }, "Back to the fleet"))));
    return;
  }
  const [match, page] = found;
  const ctx = {
    main, scope, live, user,
    params: match.slice(1).map(decodeURIComponent),
    ready: (name) => { if (scope.alive) main.dataset.page = name; },
    report,
  };
  try {
    await page(ctx);
  } catch (err) {
    if (!scope.alive) return;
    report(err);
    if (!main.childElementCount) main.append(h("div", { class: "panel" }, h("p", { class: "muted" }, "This page could not be loaded.")));
  }
}

window.addEventListener("hashchange", route);
route();
