// #/alerts: the filterable alert list; acknowledge with a note and resolve (engineers, admins); live.
import { api, roles } from "../api.js";
import { badge, fill, fmtTime, h, label, toast } from "../dom.js";

const PAGE_SIZE = 100;
const REREAD_DELAY_MS = 200; // the confirmations of all the rooms come within a few ms
const TYPES = ["voltage_high", "voltage_low", "temperature_high", "resistance_drift", "soh_degraded",
  "rul_warning", "rul_critical", "communication_lost"];
// Status filter -> the API's query and the same test on one alert (for live events).
const STATUSES = {
  active: { params: { active_only: true }, test: (a) => a.is_active },
  pending: { params: { active_only: true, acknowledged: false }, test: (a) => a.is_active && !a.is_acknowledged },
  acknowledged: { params: { active_only: true, acknowledged: true }, test: (a) => a.is_active && a.is_acknowledged },
  all: { params: { active_only: false }, test: () => true },
};

function alertStatus(a) {
  return !a.is_active ? "resolved" : a.is_acknowledged ? "acknowledged" : "active";
}

function select(testid, options, value) {
  return h("select", { testid }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

export async function page(ctx) {
  const { signal } = ctx.scope;
  const canEdit = roles.canEdit(ctx.user);
  const locations = (await api("/locations", { params: { include_stats: false }, signal })).locations;
  const f = {
    severity: select("filter-severity", [["", "Any severity"], ["critical", "Critical"], ["warning", "Warning"], ["info", "Info"]], ""),
    status: select("filter-status", [["active", "Active"], ["pending", "Active, not acknowledged"], ["acknowledged", "Active, acknowledged"], ["all", "All, resolved too"]], "active"),
    type: select("filter-type", [["", "Any type"], ...TYPES.map((t) => [t, label(t)])], ""),
    location: select("filter-location", [["", "All locations"], ...locations.map((l) => [l.location_id, l.location_id])], ""),
  };
  const summary = h("span", { class: "muted small" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const rows = new Map(); // alert id -> alert
  let skip = 0;

  // The acknowledge dialog, shared by the rows.
  const note = h("textarea", { testid: "ack-note", maxlength: 2000, placeholder: "What was found or done (optional)" });
  const confirm = h("button", { type: "submit", class: "primary", testid: "ack-confirm" }, "Acknowledge");
  const cancel = h("button", { type: "button" }, "Cancel");
  const dialogTitle = h("h2", {}, "Acknowledge alert");
  const dialog = h("dialog", {}, h("form", { method: "dialog", class: "row" }, dialogTitle, note, h("div", { class: "row" }, confirm, cancel)));
  let acking = null;
  ctx.scope.listen(cancel, "click", () => dialog.close());
  ctx.scope.listen(dialog, "close", () => { acking = null; });
  ctx.scope.listen(dialog.querySelector("form"), "submit", async (event) => {
    event.preventDefault();
    if (!acking) return;
    const target = acking;
    confirm.disabled = true;
    try {
      const updated = await api(`/alerts/${encodeURIComponent(target.alert_id)}/acknowledge`, { method: "POST", body: { note: note.value || null }, signal });
      dialog.close();
      upsert(updated);
    } catch (err) { ctx.report(err); } finally { confirm.disabled = false; }
  });
  ctx.scope.add(() => { if (dialog.open) dialog.close(); });

  const matches = (a) => (!f.severity.value || a.severity === f.severity.value) && (!f.type.value || a.alert_type === f.type.value)
    && (!f.location.value || a.location_id === undefined || a.location_id === f.location.value) && STATUSES[f.status.value].test(a);

  function row(a) {
    const status = alertStatus(a);
    const actions = h("td", { class: "row" });
    if (canEdit && a.is_active && !a.is_acknowledged) {
      actions.append(h("button", { type: "button", testid: "ack-button", onclick: () => {
        acking = a;
        note.value = "";
        dialogTitle.textContent = `Acknowledge ${label(a.alert_type)} on ${a.battery_id}`;
        dialog.showModal();
        note.focus();
      } }, "Acknowledge"));
    }
    if (canEdit && a.is_active) {
      const button = h("button", { type: "button", testid: "resolve-button", class: "danger" }, "Resolve");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try { upsert(await api(`/alerts/${encodeURIComponent(a.alert_id)}/resolve`, { method: "POST", signal })); } catch (err) { ctx.report(err); button.disabled = false; }
      });
      actions.append(button);
    }
    return h("tr", { testid: "alert-row", "data-alert-id": a.alert_id, "data-status": status, "data-severity": a.severity, "data-type": a.alert_type },
      h("td", {}, badge(a.severity, `sev-${a.severity}`)),
      h("td", {}, label(a.alert_type)),
      h("td", { class: "wide" }, h("a", { href: `#/batteries/${encodeURIComponent(a.battery_id)}`, class: "mono" }, a.battery_id), h("div", { class: "small muted" }, a.message),
        a.acknowledgment_note ? h("div", { class: "small" }, `Note (${a.acknowledged_by}): ${a.acknowledgment_note}`) : null),
      h("td", { class: "hide-narrow" }, fmtTime(a.triggered_at)),
      h("td", {}, badge(status, `status-${status}`)),
      canEdit ? actions : null);
  }

  function render() {
    const list = [...rows.values()];
    fill(tbody, list.map(row));
    if (!list.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No alerts match.")));
  }

  /** A changed or new alert (from an action or the live feed): in place, or dropped if it no longer matches. */
  function upsert(a) {
    if (matches(a)) {
      if (!rows.has(a.id)) {
        const entries = [...rows.entries()];
        rows.clear();
        rows.set(a.id, a);
        for (const [k, v] of entries) rows.set(k, v);
      } else rows.set(a.id, a);
    } else rows.delete(a.id);
    render();
  }

  const params = () => ({
    severity: f.severity.value, alert_type: f.type.value, location_id: f.location.value,
    ...STATUSES[f.status.value].params, limit: PAGE_SIZE,
  });
  async function load(reset) {
    if (reset) { rows.clear(); skip = 0; }
    const page = await api("/alerts", { params: { ...params(), skip }, signal });
    for (const a of page.alerts) rows.set(a.id, a);
    skip += page.alerts.length;
    more.hidden = skip >= page.total;
    summary.textContent = `${page.total} matching · ${page.active_count} active · ${page.pending_count} not acknowledged`;
    render();
  }

  // Live: the rooms of the locations shown; each alert event updates its row.
  let leave = [];
  const subscribe = () => {
    for (const fn of leave) fn();
    const ids = f.location.value ? [f.location.value] : locations.map((l) => l.location_id);
    leave = ids.map((id) => ctx.live.subscribe("location", id));
  };
  ctx.scope.add(() => { for (const fn of leave) fn(); });
  ctx.scope.add(ctx.live.on("alert", (msg) => upsert(msg)));
  // Once the server confirms the rooms (after every reconnection too), the list is read again:
  // an alert that changed while the feed was down, or before the rooms were joined, reached no
  // one. One request for the burst of confirmations.
  let reread = null;
  ctx.scope.add(() => clearTimeout(reread));
  ctx.scope.add(ctx.live.on("subscribed", (msg) => {
    if (msg.type !== "location") return;
    clearTimeout(reread);
    reread = setTimeout(() => load(true).catch(ctx.report), REREAD_DELAY_MS);
  }));

  for (const [key, el] of Object.entries(f)) {
    ctx.scope.listen(el, "change", () => {
      if (key === "location") subscribe();
      load(true).catch(ctx.report);
    });
  }
  ctx.scope.listen(more, "click", () => load(false).catch(ctx.report));

  await load(true);
  subscribe();
  ctx.main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Alerts"), summary),
    h("div", { class: "panel form-grid" },
      h("label", {}, "Severity", f.severity), h("label", {}, "Status", f.status),
      h("label", {}, "Type", f.type), h("label", {}, "Location", f.location)),
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, h("th", {}, "Severity"), h("th", {}, "Type"), h("th", {}, "Battery"), h("th", { class: "hide-narrow" }, "Triggered"), h("th", {}, "Status"), canEdit ? h("th", {}, "") : null)),
      tbody)), more),
    dialog);
  ctx.ready("alerts");
  if (!locations.length) toast("No locations yet: nothing will arrive live.", "info");
}
