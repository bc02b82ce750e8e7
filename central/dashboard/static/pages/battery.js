// #/batteries/<ID>: live telemetry charts, SoH history with the RUL extrapolation, the battery's alerts.
import { api } from "../api.js";
import { LiveChart, staticPlot } from "../chart.js";
import { badge, fill, fmt, fmtTime, h, label } from "../dom.js";

const WINDOW_POINTS = 1800; // each live chart keeps at most this many readings
const HISTORY_HOURS = 2;
const SOH_DAYS = 730;
const ALERTS_SHOWN = 100; // the battery's newest alerts
const DAY_S = 86400;

// [API field, test hook, title, unit, colour, digits, display scale, fixed y range]
const CHARTS = [
  ["voltage", "chart-voltage", "Voltage", "V", "#2563eb", 3, 1, null],
  ["temperature", "chart-temperature", "Temperature", "°C", "#d97706", 1, 1, null],
  ["internal_resistance", "chart-resistance", "Internal resistance", "mΩ", "#7c3aed", 3, 1000, null],
  ["soc_pct", "chart-soc", "State of charge", "%", "#059669", 1, 1, [0, 100]],
];

function rulSummary(rul) {
  if (!rul) return "No RUL estimate yet (too little SoH history).";
  if (rul.status === "end_of_life") return `At end of life: SoH ${fmt(rul.soh_now_pct, 1)} % (80 % or below).`;
  if (rul.status === "open_ended" || rul.rul_days === null) {
    return `Open-ended: SoH ${fmt(rul.soh_now_pct, 1)} %, fading ${fmt(rul.fade_pct_per_year, 2)} %/year; no end of life within the horizon.`;
  }
  const high = rul.rul_high_days === null ? "open" : `${fmt(rul.rul_high_days, 0)}`;
  return `RUL ${fmt(rul.rul_days, 0)} days (${rul.interval_pct} % interval ${fmt(rul.rul_low_days, 0)}–${high} days), end of life ${rul.predicted_eol_date || "–"}; SoH ${fmt(rul.soh_now_pct, 1)} %, fading ${fmt(rul.fade_pct_per_year, 2)} %/year.`;
}

/** uPlot columns for the SoH history plus the extrapolation to 80 % and its interval. */
function sohColumns(points, rul) {
  const hist = points.map((p) => [Date.parse(p.t) / 1000, p.soh_pct]);
  const extra = [];
  if (rul && rul.status === "fading" && rul.rul_days !== null) {
    const t0 = Date.parse(rul.computed_at) / 1000;
    extra.push([t0, "fit", rul.soh_now_pct], [t0 + rul.rul_days * DAY_S, "fit", 80]);
    if (rul.rul_low_days !== null) extra.push([t0, "low", rul.soh_now_pct], [t0 + rul.rul_low_days * DAY_S, "low", 80]);
    if (rul.rul_high_days !== null) extra.push([t0, "high", rul.soh_now_pct], [t0 + rul.rul_high_days * DAY_S, "high", 80]);
  }
  const xs = [...new Set([...hist.map((p) => p[0]), ...extra.map((p) => p[0])])].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const col = () => new Array(xs.length).fill(null);
  const soh = col(); const fit = col(); const low = col(); const high = col(); const eol = col();
  for (const [x, v] of hist) soh[index.get(x)] = v;
  for (const [x, kind, v] of extra) ({ fit, low, high })[kind][index.get(x)] = v;
  if (xs.length) { eol[0] = 80; eol[xs.length - 1] = 80; }
  return [xs, soh, fit, low, high, eol];
}

function alertRow(a) {
  const status = !a.is_active ? "resolved" : a.is_acknowledged ? "acknowledged" : "active";
  return h("tr", { "data-alert-id": a.alert_id, "data-status": status },
    h("td", {}, badge(a.severity, `sev-${a.severity}`)), h("td", {}, label(a.alert_type)),
    h("td", {}, a.message), h("td", { class: "hide-narrow" }, fmtTime(a.triggered_at)),
    h("td", {}, badge(status, `status-${status}`)));
}

export async function page(ctx) {
  const [batteryId] = ctx.params;
  const { signal } = ctx.scope;
  const id = encodeURIComponent(batteryId);
  const end = new Date();
  const start = new Date(end.getTime() - HISTORY_HOURS * 3600 * 1000);
  const [detail, telemetry, history] = await Promise.all([
    api(`/batteries/${id}`, { signal }),
    api(`/batteries/${id}/telemetry`, { params: { start: start.toISOString(), limit: WINDOW_POINTS }, signal }),
    // Without its SoH history the page still shows the rest (and says why in a toast).
    api(`/batteries/${id}/soh-history`, { params: { days: SOH_DAYS }, signal })
      .catch((err) => { ctx.report(err); return { points: [], rul: undefined }; }),
  ]);
  const latest = detail.latest_telemetry || {};
  const locationId = detail.location_info.location_id;
  const now = {};
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Location"), h("dd", {}, h("a", { href: `#/locations/${encodeURIComponent(locationId)}` }, detail.location_info.name)),
    h("dt", {}, "String / position"), h("dd", {}, `${detail.string_info.string_id} / ${detail.position}`),
    h("dt", {}, "Model"), h("dd", {}, `${detail.manufacturer} ${detail.model}, ${fmt(detail.nominal_voltage_v, 0)} V ${fmt(detail.nominal_capacity_ah, 0)} Ah`),
    h("dt", {}, "Serial"), h("dd", { class: "mono" }, detail.serial_number),
    h("dt", {}, "Installed"), h("dd", {}, `${detail.installed_date} (${detail.age_days} days; ${detail.is_in_warranty ? "in" : "out of"} warranty)`),
    h("dt", {}, "Latest"), now.latest = h("dd", {}, fmtTime(latest.timestamp)),
    h("dt", {}, "SoH"), now.soh = h("dd", {}, latest.soh_pct === undefined ? "–" : `${fmt(latest.soh_pct, 1)} %`));

  const charts = [];
  const shown = (v, scale) => (v === null || v === undefined ? v : v * scale);
  const chartPanels = CHARTS.map(([key, testid, title, unit, color, digits, scale, range]) => {
    const el = h("div", { class: "chart", testid });
    const value = h("span", { class: "big" }, fmt(shown(latest[key], scale), digits, unit));
    charts.push({ key, el, value, unit, digits, scale, spec: { label: title, color, digits, scale, range, capacity: WINDOW_POINTS } });
    return h("section", { class: "panel" }, h("div", { class: "chart-title" }, h("h2", {}, title), value), el);
  });

  const newestDay = history.points.length ? history.points[history.points.length - 1].t : "";
  const sohEl = h("div", { class: "chart", testid: "chart-soh", "data-points": String(history.points.length), "data-last-ts": newestDay });
  const rulEl = h("p", { testid: "rul-summary" }, rulSummary(history.rul ?? detail.rul));
  const alertsBody = h("tbody");
  const alertsBox = h("div", { testid: "battery-alerts", class: "table-wrap" });

  ctx.main.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { class: "mono" }, batteryId), h("span", {}, badge(detail.status, `status-${detail.status}`), " ", `${detail.active_alerts} active alert${detail.active_alerts === 1 ? "" : "s"}`)),
      h("a", { href: `#/locations/${encodeURIComponent(locationId)}` }, `← ${locationId}`)),
    h("div", { class: "grid-2" }, h("section", { class: "panel" }, h("h2", {}, "Battery"), facts),
      h("section", { class: "panel" }, h("h2", {}, "State of health and remaining life"), rulEl, sohEl)),
    h("div", { class: "grid-2" }, chartPanels),
    h("section", { class: "panel" }, h("h2", {}, "Alerts"), alertsBox));

  // Charts need their element in the page to size themselves.
  for (const c of charts) {
    c.chart = new LiveChart(c.el, c.spec);
    ctx.scope.add(() => c.chart.destroy());
    c.chart.add(telemetry.data.map((p) => ({ ts: p.timestamp, value: p[c.key] })));
  }
  const soh = staticPlot(sohEl, {
    time: true, yLabel: "SoH %", data: sohColumns(history.points, history.rul ?? detail.rul),
    series: [
      { label: "SoH (daily median)", stroke: "#2563eb", width: 1.5, points: { show: false } },
      { label: "RUL fit", stroke: "#dc2626", dash: [6, 4], width: 1.5, spanGaps: true },
      { label: "interval low", stroke: "#f59e0b", dash: [3, 3], spanGaps: true },
      { label: "interval high", stroke: "#f59e0b", dash: [3, 3], spanGaps: true },
      { label: "end of life 80 %", stroke: "#6b7280", dash: [2, 4], spanGaps: true },
    ],
  });
  ctx.scope.add(() => soh.destroy());

  const known = new Map();
  const renderAlerts = () => {
    const rows = [...known.values()].sort((a, b) => (a.triggered_at < b.triggered_at ? 1 : -1));
    fill(alertsBox, rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Severity"), h("th", {}, "Type"), h("th", {}, "Message"), h("th", { class: "hide-narrow" }, "Triggered"), h("th", {}, "Status"))),
        fill(alertsBody, rows.map(alertRow)))
      : h("p", { class: "muted" }, "No alerts for this battery."));
  };
  const listed = await api("/alerts", { params: { battery_id: batteryId, active_only: false, limit: ALERTS_SHOWN }, signal });
  for (const a of listed.alerts) known.set(a.id, a);
  renderAlerts();

  // Live: each reading goes to the charts; an alert event (new or changed) updates the table.
  ctx.scope.add(ctx.live.on("telemetry_update", (msg) => {
    if (msg.battery_id !== batteryId || !msg.data) return;
    for (const c of charts) {
      c.chart.add([{ ts: msg.timestamp, value: msg.data[c.key] ?? null }]);
      c.value.textContent = fmt(shown(msg.data[c.key], c.scale), c.digits, c.unit);
    }
    now.latest.textContent = fmtTime(msg.timestamp);
    if (msg.data.soh_pct !== null && msg.data.soh_pct !== undefined) now.soh.textContent = `${fmt(msg.data.soh_pct, 1)} %`;
  }));
  // Once the server confirms the room (on opening the page and after every reconnection), fetch
  // what was stored since the newest point: readings stored after the first request or while
  // the feed was down reached no one. Overlaps with live readings are dropped by the charts.
  ctx.scope.add(ctx.live.on("subscribed", async (msg) => {
    if (msg.type !== "battery" || msg.battery_id !== batteryId) return;
    const last = charts[0].chart.ring.last;
    const since = last === null ? telemetry.start : new Date(last * 1000 + 1).toISOString();
    try {
      const gap = await api(`/batteries/${id}/telemetry`, { params: { start: since, limit: WINDOW_POINTS }, signal });
      for (const c of charts) c.chart.add(gap.data.map((p) => ({ ts: p.timestamp, value: p[c.key] })));
    } catch (err) { ctx.report(err); }
  }));
  ctx.scope.add(ctx.live.on("alert", (msg) => {
    if (msg.battery_id !== batteryId) return;
    known.set(msg.id, msg);
    renderAlerts();
  }));
  ctx.scope.add(ctx.live.subscribe("battery", batteryId));
  ctx.ready("battery");
}
