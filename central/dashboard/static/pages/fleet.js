// #/fleet: the locations with their statistics, and the fleet's alert counts.
import { api } from "../api.js";
import { fmt, h, label } from "../dom.js";

const STATS_DAYS = 7;

function stat(value, text, bad = false) {
  return h("div", { class: `stat${bad ? " bad" : ""}` }, h("span", { class: "value" }, value), h("span", { class: "label" }, text));
}

function locationCard(loc) {
  return h("a", { class: "panel card", href: `#/locations/${encodeURIComponent(loc.location_id)}`, testid: "location-card", "data-location-id": loc.location_id },
    h("div", { class: "title" }, loc.name),
    h("div", { class: "muted small" }, `${loc.location_id} · ${loc.city}, ${loc.country}`),
    h("div", { class: "stats" },
      stat(fmt(loc.total_batteries, 0), "batteries"),
      stat(fmt(loc.critical_batteries, 0), "critical", loc.critical_batteries > 0),
      stat(loc.average_soh === null ? "–" : `${fmt(loc.average_soh, 1)} %`, "average SoH"),
      stat(fmt(loc.active_alerts, 0), "active alerts", loc.active_alerts > 0)),
    h("div", { class: "muted small reporting" }, `${fmt(loc.active_batteries, 0)} reporting`));
}

function alertStats(stats) {
  const types = Object.entries(stats.alerts_by_type).sort((a, b) => b[1] - a[1]);
  return h("section", { class: "panel", testid: "alert-stats" },
    h("div", { class: "page-head" }, h("h2", {}, "Alerts"), h("a", { href: "#/alerts" }, "All alerts →")),
    h("h3", {}, "Active now, by severity"),
    h("div", { class: "counts" },
      h("div", { class: "count sev-critical", "data-severity": "critical" }, h("strong", {}, String(stats.critical_alerts)), "critical"),
      h("div", { class: "count sev-warning", "data-severity": "warning" }, h("strong", {}, String(stats.warning_alerts)), "warning"),
      h("div", { class: "count sev-info", "data-severity": "info" }, h("strong", {}, String(stats.info_alerts)), "info"),
      h("div", { class: "count status-unknown" }, h("strong", {}, String(stats.active_alerts)), "active in total")),
    h("h3", {}, `Triggered in the last ${STATS_DAYS} days, by type (${stats.total_alerts} in all, ${stats.acknowledged_alerts} acknowledged)`),
    types.length
      ? h("div", { class: "table-wrap" }, h("table", {}, h("tbody", {}, types.map(([type, n]) =>
        h("tr", { "data-type": type }, h("td", {}, label(type)), h("td", { class: "num" }, String(n)))))))
      : h("p", { class: "muted" }, "None."));
}

export async function page(ctx) {
  const { signal } = ctx.scope;
  const [locations, stats] = await Promise.all([
    api("/locations", { signal }),
    api("/alerts/stats", { params: { days: STATS_DAYS }, signal }),
  ]);
  const cards = locations.locations.map(locationCard);
  ctx.main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Fleet"), h("span", { class: "muted" }, `${locations.total} locations`)),
    cards.length ? h("div", { class: "grid" }, cards) : h("div", { class: "panel muted" }, "No locations yet."),
    alertStats(stats));
  ctx.ready("fleet");
}
