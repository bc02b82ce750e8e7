// #/users (admins): list, create, change role, deactivate or reactivate.
import { allPages, api } from "../api.js";
import { fill, fmtTime, h, toast } from "../dom.js";

const ROLES = ["viewer", "engineer", "admin"];

export async function page(ctx) {
  const { signal } = ctx.scope;
  const tbody = h("tbody");
  const count = h("span", { class: "muted" });

  const patch = async (user, body) => {
    try {
      await api(`/auth/users/${encodeURIComponent(user.user_id)}`, { method: "PATCH", body, signal });
      await load();
    } catch (err) { ctx.report(err); await load().catch(ctx.report); }
  };

  function row(u) {
    const self = ctx.user && u.user_id === ctx.user.user_id;
    const role = h("select", { testid: "role-select", disabled: self, "aria-label": `Role of ${u.username}` },
      ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
    role.addEventListener("change", () => patch(u, { role: role.value }));
    const toggle = self ? null : u.is_active
      ? h("button", { type: "button", class: "danger", testid: "deactivate-button", onclick: () => patch(u, { is_active: false }) }, "Deactivate")
      : h("button", { type: "button", testid: "activate-button", onclick: () => patch(u, { is_active: true }) }, "Reactivate");
    return h("tr", { testid: "user-row", "data-username": u.username, "data-active": String(u.is_active) },
      h("td", {}, u.username, h("div", { class: "small muted" }, u.full_name || "")),
      h("td", { class: "hide-narrow" }, u.email),
      h("td", {}, role),
      h("td", {}, u.is_active ? "active" : "inactive"),
      h("td", { class: "hide-narrow" }, fmtTime(u.created_at)),
      h("td", {}, toggle));
  }

  async function load() {
    const users = await allPages("/auth/users", "users", {}, signal);
    fill(tbody, users.map(row));
    count.textContent = `${users.length} users`;
  }

  const username = h("input", { testid: "user-create-username", required: true, maxlength: 64, autocomplete: "off" });
  const email = h("input", { testid: "user-create-email", type: "email", required: true, maxlength: 254 });
  const password = h("input", { testid: "user-create-password", type: "password", required: true, minlength: 8, autocomplete: "new-password" });
  const role = h("select", { testid: "user-create-role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const submit = h("button", { type: "submit", class: "primary", testid: "user-create-submit" }, "Create");
  const form = h("form", { class: "panel", novalidate: true }, h("h2", {}, "New user"),
    h("div", { class: "form-grid" }, h("label", {}, "Username", username), h("label", {}, "Email", email),
      h("label", {}, "Password (8+ characters)", password), h("label", {}, "Role", role), submit));
  ctx.scope.listen(form, "submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      // The username doubles as the user ID.
      await api("/auth/users", { method: "POST", signal, body: {
        user_id: username.value, username: username.value, email: email.value, password: password.value, role: role.value,
      } });
      toast(`Created ${username.value} (${role.value}).`, "info");
      form.reset();
      await load();
    } catch (err) { ctx.report(err); } finally { submit.disabled = false; }
  });

  await load();
  ctx.main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Users"), count),
    form,
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", { class: "hide-narrow" }, "Email"), h("th", {}, "Role"), h("th", {}, "State"), h("th", { class: "hide-narrow" }, "Created"), h("th", {}, ""))),
      tbody))));
  ctx.ready("users");
}
