// #/locations/<ID>: UPS units and strings, each block a cell coloured by status.
import { allPages, api } from "../api.js";
import { fmt, h } from "../dom.js";

const STRING_ID = /^STR-(.+)-(\d+)$/;
const HOVER_DELAY_MS = 300;

/** {upsId: {stringId: [battery...]}} in ID order (the API lists batteries in ID order). */
function groupBatteries(batteries) {
  const units = new Map();
  for (const b of batteries) {
    const match = STRING_ID.exec(b.string_id);
    const ups = match ? match[1] : "unknown";
    if (!units.has(ups)) units.set(ups, new Map());
    const strings = units.get(ups);
    if (!strings.has(b.string_id)) strings.set(b.string_id, []);
    strings.get(b.string_id).push(b);
  }
  return units;
}

function rulText(rul) {
  if (!rul) return "RUL: not estimated yet";
  if (rul.status === "end_of_life") return "RUL: at end of life";
  if (rul.status === "open_ended" || rul.rul_days === null) return "RUL: beyond the horizon";
  const high = rul.rul_high_days === null ? "open" : fmt(rul.rul_high_days, 0);
  return `RUL: ${fmt(rul.rul_days, 0)} days (${fmt(rul.rul_low_days, 0)}–${high})`;
}

export async function page(ctx) {
  const [locationId] = ctx.params;
  const { signal } = ctx.scope;
  const [loc, batteries] = await Promise.all([
    api(`/locations/${encodeURIComponent(locationId)}`, { signal }),
    allPages("/batteries", "batteries", { location_id: locationId }, signal),
  ]);
  const state = new Map(batteries.map((b) => [b.battery_id, {
    status: b.status, soh: b.latest_telemetry ? b.latest_telemetry.soh_pct : null, rul: undefined,
  }]));
  const cells = new Map();
  const describe = (id) => {
    const s = state.get(id);
    const rul = s.rul === undefined ? "RUL: hover to load" : rulText(s.rul);
    return `${id}\nStatus: ${s.status}\nSoH: ${s.soh === null ? "–" : `${fmt(s.soh, 1)} %`}\n${rul}`;
  };
  const paint = (id) => {
    const cell = cells.get(id);
    if (!cell) return;
    cell.dataset.status = state.get(id).status;
    cell.title = describe(id);
    cell.hidden = critical.checked && cell.dataset.status !== "critical";
  };

  const critical = h("input", { type: "checkbox", testid: "filter-critical" });
  const counts = h("span", { class: "muted small" });
  const units = [];
  for (const [upsId, strings] of groupBatteries(batteries)) {
    const rows = [];
    for (const [stringId, blocks] of strings) {
      const blockCells = blocks.map((b) => {
        const cell = h("a", {
          class: "block", href: `#/batteries/${encodeURIComponent(b.battery_id)}`, testid: "block-cell",
          "data-battery-id": b.battery_id, "data-status": b.status, "aria-label": `Block ${b.position}`,
        }, String(b.position));
        cells.set(b.battery_id, cell);
        return cell;
      });
      const number = STRING_ID.exec(stringId);
      rows.push(h("div", { class: "string-row", testid: "string-row", "data-string-id": stringId },
        h("div", { class: "string-label" }, `String ${number ? number[2] : stringId}`),
        h("div", { class: "blocks" }, blockCells)));
    }
    units.push(h("section", { class: "panel ups", testid: "ups-unit", "data-ups-id": upsId }, h("h2", {}, upsId), rows));
  }
  const recount = () => {
    const n = { healthy: 0, warning: 0, critical: 0, unknown: 0 };
    for (const s of state.values()) n[s.status] = (n[s.status] || 0) + 1;
    counts.textContent = `${state.size} blocks: ${n.healthy} healthy, ${n.warning} warning, ${n.critical} critical, ${n.unknown} unknown`;
  };
  ctx.scope.listen(critical, "change", () => { for (const id of cells.keys()) paint(id); });

  // SoH and RUL on hover: the RUL needs the battery's detail, fetched once per block after a short dwell.
  const tip = h("div", { class: "tooltip", role: "tooltip", hidden: true });
  let hoverTimer = null;
  const showTip = (cell) => {
    tip.textContent = describe(cell.dataset.batteryId);
    const box = cell.getBoundingClientRect();
    tip.hidden = false;
    tip.style.left = `${Math.min(box.left, window.innerWidth - tip.offsetWidth - 8)}px`;
    tip.style.top = `${box.bottom + 6}px`;
  };
  const enter = (event) => {
    const cell = event.target.closest && event.target.closest(".block");
    if (!cell) return;
    showTip(cell);
    const id = cell.dataset.batteryId;
    clearTimeout(hoverTimer);
    if (state.get(id).rul !== undefined) return;
    hoverTimer = setTimeout(async () => {
      try {
        const detail = await api(`/batteries/${encodeURIComponent(id)}`, { signal });
        state.get(id).rul = detail.rul;
        paint(id);
        if (!tip.hidden) showTip(cell);
      } catch (err) { ctx.report(err); }
    }, HOVER_DELAY_MS);
  };
  const leave = () => { clearTimeout(hoverTimer); tip.hidden = true; };
  const grid = h("div", {}, units);
  ctx.scope.listen(grid, "mouseover", enter);
  ctx.scope.listen(grid, "focusin", enter);
  ctx.scope.listen(grid, "mouseleave", leave);
  ctx.scope.listen(grid, "focusout", leave);
  ctx.scope.add(() => { clearTimeout(hoverTimer); tip.remove(); });

  // Live: status changes recolour a block; readings keep its SoH current. Each time the server
  // confirms the room (on opening the page and after every reconnection), the statuses are read
  // again: a change between the first request and the subscription, or while the feed was down,
  // reached no one.
  ctx.scope.add(ctx.live.on("subscribed", async (msg) => {
    if (msg.type !== "location" || msg.location_id !== locationId) return;
    try {
      for (const b of await allPages("/batteries", "batteries", { location_id: locationId }, signal)) {
        const s = state.get(b.battery_id);
        if (!s) continue;
        s.status = b.status;
        if (b.latest_telemetry && b.latest_telemetry.soh_pct !== null) s.soh = b.latest_telemetry.soh_pct;
        paint(b.battery_id);
      }
      recount();
    } catch (err) { ctx.report(err); }
  }));
  ctx.scope.add(ctx.live.on("battery_status_update", (msg) => {
    const s = state.get(msg.battery_id);
    if (!s || !msg.data) return;
    s.status = msg.data.status || s.status;
    if (msg.data.soh_pct !== null && msg.data.soh_pct !== undefined) s.soh = msg.data.soh_pct;
    paint(msg.battery_id);
    recount();
  }));
  ctx.scope.add(ctx.live.on("telemetry_update", (msg) => {
    const s = state.get(msg.battery_id);
    if (s && msg.data && msg.data.soh_pct !== null && msg.data.soh_pct !== undefined) s.soh = msg.data.soh_pct;
  }));

  ctx.scope.add(ctx.live.subscribe("location", locationId));
  for (const id of cells.keys()) paint(id);
  recount();
  ctx.main.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, loc.name), h("div", { class: "muted small" }, `${loc.location_id} · ${loc.city}, ${loc.country} · average SoH ${loc.average_soh === null ? "–" : `${fmt(loc.average_soh, 1)} %`} · ${loc.active_alerts ?? 0} active alerts`)),
      h("a", { href: "#/fleet" }, "← Fleet")),
    h("div", { class: "panel row" },
      h("label", { class: "inline" }, critical, "Only critical blocks"),
      h("div", { class: "legend" }, ["healthy", "warning", "critical", "unknown"].map((s) => h("span", { class: s }, s))),
      h("span", { class: "spacer" }), counts),
    batteries.length ? grid : h("div", { class: "panel muted" }, "No batteries at this location yet."));
  document.body.append(tip);
  ctx.ready("location");
}
