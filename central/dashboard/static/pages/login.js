// #/login
import { login, session } from "../api.js";
import { h } from "../dom.js";

export async function page(ctx) {
  const username = h("input", { testid: "login-username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { testid: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { testid: "login-submit", type: "submit", class: "primary" }, "Log in");
  const error = h("div", { testid: "login-error", class: "error-text", role: "alert" });
  const form = h("form", { novalidate: true },
    h("label", {}, "Username", username), h("label", {}, "Password", password), submit, error);
  ctx.scope.listen(form, "submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!username.value || !password.value) { error.textContent = "Enter a username and a password."; return; }
    submit.disabled = true;
    try {
      await login(username.value, password.value);
      location.hash = session.takeReturn();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });
  ctx.main.append(h("div", { class: "login panel" }, h("h1", {}, "Battery RUL Monitoring"),
    h("p", { class: "muted small" }, "Sign in to see the fleet."), form));
  username.focus();
  ctx.ready("login");
}
