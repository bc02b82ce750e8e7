// #/research (datasets, upload with progress) and #/research/<ID> (capacity fade, labels, prediction).
import { api, ApiError, roles, upload } from "../api.js";
import { staticPlot } from "../chart.js";
import { fill, fmt, fmtTime, h, toast } from "../dom.js";

const PAGE_SIZE = 20;
const CYCLE_PAGE = 100; // the API's largest cycles page

function uploadForm(ctx, onStored) {
  const file = h("input", { type: "file", testid: "upload-input", accept: ".mat", required: true });
  const manufacturer = h("input", { name: "manufacturer", maxlength: 200 });
  const chemistry = h("input", { name: "chemistry", maxlength: 100, placeholder: "e.g. LFP, NMC" });
  const nominal = h("input", { name: "nominal_capacity", type: "number", min: 0, step: "any", placeholder: "Ah" });
  const progress = h("progress", { testid: "upload-progress", max: 100, value: 0 });
  const status = h("div", { class: "small muted", role: "status" });
  const submit = h("button", { type: "submit", class: "primary", testid: "upload-submit" }, "Upload");
  const form = h("form", { class: "panel" }, h("h2", {}, "Upload a .mat file"),
    h("div", { class: "form-grid" }, h("label", {}, "File", file), h("label", {}, "Manufacturer", manufacturer),
      h("label", {}, "Chemistry", chemistry), h("label", {}, "Nominal capacity (Ah)", nominal), submit),
    h("div", { class: "row" }, progress), status);
  ctx.scope.listen(form, "submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) { toast("Choose a .mat file first."); return; }
    const body = new FormData();
    body.append("file", file.files[0]);
    if (manufacturer.value) body.append("manufacturer", manufacturer.value);
    if (chemistry.value) body.append("chemistry", chemistry.value);
    if (nominal.value) body.append("nominal_capacity", nominal.value);
    submit.disabled = true;
    progress.value = 0;
    status.textContent = `Uploading ${file.files[0].name}…`;
    try {
      const stored = await upload("/research/batteries", body, (fraction) => {
        progress.value = Math.round(fraction * 100);
        if (fraction >= 1) status.textContent = "Uploaded; the server is reading the file…";
      }, ctx.scope.signal);
      progress.value = 100;
      status.textContent = `Stored ${stored.cells.length} cell${stored.cells.length === 1 ? "" : "s"} from ${stored.filename}.`;
      form.reset();
      await onStored(stored);
    } catch (err) {
      if (err.name === "AbortError") return;
      status.textContent = `Refused: ${err.message}`;
      ctx.report(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function listPage(ctx) {
  const { signal } = ctx.scope;
  const tbody = h("tbody");
  const pager = h("div", { class: "row small" });
  let page = 1;
  async function load(n) {
    const data = await api("/research/batteries", { params: { page: n, page_size: PAGE_SIZE }, signal });
    page = data.meta.page;
    fill(tbody, data.items.length ? data.items.map((b) => {
      const href = `#/research/${b.id}`;
      return h("tr", { testid: "dataset-row", "data-dataset-id": String(b.id) },
        h("td", {}, h("a", { href }, `${b.filename}`), h("div", { class: "small muted" }, b.cell_label)),
        h("td", { class: "hide-narrow" }, b.layout),
        h("td", { class: "num" }, String(b.total_cycles)),
        h("td", { class: "num hide-narrow" }, fmt(b.nominal_capacity, 2, "Ah")),
        h("td", { class: "hide-narrow" }, [b.manufacturer, b.chemistry].filter(Boolean).join(" · ") || "–"),
        h("td", { class: "hide-narrow" }, fmtTime(b.created_at)));
    }) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No datasets yet.")));
    const prev = h("button", { type: "button", disabled: page <= 1 }, "← Previous");
    const next = h("button", { type: "button", disabled: page >= data.meta.total_pages }, "Next →");
    prev.addEventListener("click", () => load(page - 1).catch(ctx.report));
    next.addEventListener("click", () => load(page + 1).catch(ctx.report));
    fill(pager, prev, `Page ${data.meta.page} of ${Math.max(data.meta.total_pages, 1)} · ${data.meta.total} datasets`, next);
    return data.meta;
  }
  const meta = await load(1);
  // The list is oldest first, so an upload's cells come last: show the page with its first cell.
  const onStored = async (stored) => {
    const count = await api("/research/batteries", { params: { page: 1, page_size: 1 }, signal });
    const position = count.meta.total - stored.cells.length + 1;
    await load(Math.max(Math.ceil(position / PAGE_SIZE), 1));
  };
  ctx.main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Research datasets"), h("span", { class: "muted" }, `${meta.total} cells`)),
    roles.canEdit(ctx.user) ? uploadForm(ctx, onStored) : null,
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "File / cell"), h("th", { class: "hide-narrow" }, "Layout"), h("th", { class: "num" }, "Cycles"),
        h("th", { class: "num hide-narrow" }, "Nominal"), h("th", { class: "hide-narrow" }, "Make"), h("th", { class: "hide-narrow" }, "Uploaded"))),
      tbody)), pager));
  ctx.ready("research");
}

/** What the labels say of a cell: first and last SoH, where end of life was reached, RUL at the start. */
function fadeSummary(cycles, eolThreshold) {
  const withSoh = cycles.filter((c) => c.soh !== null);
  const eol = cycles.find((c) => c.rul === 0);
  return {
    first: withSoh.length ? withSoh[0] : null,
    last: withSoh.length ? withSoh[withSoh.length - 1] : null,
    eolCycle: eol ? eol.cycle_index : null,
    startRul: cycles.length ? cycles[0].rul : null,
    threshold: eolThreshold,
  };
}

export async function detailPage(ctx) {
  const [datasetId] = ctx.params;
  const { signal } = ctx.scope;
  const battery = await api(`/research/batteries/${datasetId}`, { signal });
  const plotEl = h("div", { class: "chart", testid: "fade-plot", "data-points": "0" });
  const labels = h("dl", { class: "facts", testid: "cell-labels" });
  const prediction = h("div", { testid: "prediction" }, h("span", { class: "muted" }, "Loading…"));
  const loading = h("p", { class: "small muted" });
  ctx.main.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, battery.filename), h("div", { class: "muted small" }, `${battery.cell_label} · cell ${battery.cell_index} · ${battery.layout}`)),
      h("a", { href: "#/research" }, "← Datasets")),
    h("section", { class: "panel" }, h("h2", {}, "Capacity fade"), loading, plotEl),
    h("div", { class: "grid-2" }, h("section", { class: "panel" }, h("h2", {}, "Labels"), labels),
      h("section", { class: "panel" }, h("h2", {}, "Early-life prediction"), prediction)));

  const predicted = api(`/research/batteries/${datasetId}/prediction`, { signal }).then(
    (p) => fill(prediction, h("dl", { class: "facts" },
      h("dt", {}, "Predicted cycle life"), h("dd", { class: "big" }, fmt(p.predicted_cycle_life, 0)),
      h("dt", {}, `${Math.round(p.interval.level * 100)} % interval`), h("dd", {}, `${fmt(p.interval.low, 0)}–${fmt(p.interval.high, 0)} cycles`),
      h("dt", {}, `RUL at cycle ${p.as_of_cycle}`), h("dd", {}, `${fmt(p.predicted_rul, 0)} cycles`),
      h("dt", {}, "Real cycle life"), h("dd", { class: "big" }, p.actual_cycle_life === null ? "unknown" : String(p.actual_cycle_life)),
      h("dt", {}, "Error"), h("dd", {}, p.error_cycles === null ? "–" : `${p.error_cycles > 0 ? "+" : ""}${fmt(p.error_cycles, 0)} cycles (${fmt((100 * p.error_cycles) / p.actual_cycle_life, 1)} %)`),
      h("dt", {}, "Model"), h("dd", { class: "small" }, p.model))),
    (err) => {
      if (err instanceof ApiError && err.status === 422) fill(prediction, h("p", {}, `No prediction: ${err.message}`));
      else throw err;
    });

  // Every cycle's SoH, page by page, the plot growing as pages arrive.
  const cycles = [];
  let plot = null;
  ctx.scope.add(() => { if (plot) plot.destroy(); });
  for (let n = 1; ; n++) {
    const pageData = await api(`/research/batteries/${datasetId}/cycles`, { params: { page: n, page_size: CYCLE_PAGE, arrays: false }, signal });
    for (const c of pageData.items) cycles.push({ cycle_index: c.cycle_index, soh: c.soh, rul: c.rul });
    loading.textContent = pageData.meta.total_pages > 1 && n < pageData.meta.total_pages
      ? `Loading cycles: ${cycles.length} of ${pageData.meta.total}…` : `${pageData.meta.total} cycles`;
    const xs = cycles.map((c) => c.cycle_index);
    const data = [xs, cycles.map((c) => (c.soh === null ? null : c.soh * 100)),
      xs.map(() => battery.eol_threshold * 100), cycles.map((c) => c.rul)];
    if (!plot) {
      plot = staticPlot(plotEl, { data, xLabel: "cycle", yLabel: "SoH %", rightLabel: "RUL label, cycles", series: [
        { label: "SoH", stroke: "#2563eb", width: 1.5, points: { show: false } },
        { label: `end of life ${fmt(battery.eol_threshold * 100, 0)} %`, stroke: "#dc2626", dash: [4, 4], points: { show: false } },
        { label: "RUL label", stroke: "#9333ea", width: 1, scale: "right", points: { show: false } },
      ] });
    } else plot.plot.setData(data);
    plotEl.dataset.points = String(cycles.filter((c) => c.soh !== null).length);
    if (n >= pageData.meta.total_pages) break;
  }
  const s = fadeSummary(cycles, battery.eol_threshold);
  fill(labels,
    h("dt", {}, "Cycles"), h("dd", {}, String(battery.total_cycles)),
    h("dt", {}, "Nominal capacity"), h("dd", {}, fmt(battery.nominal_capacity, 3, "Ah")),
    h("dt", {}, "End of life"), h("dd", {}, `SoH below ${fmt(s.threshold * 100, 0)} %`),
    h("dt", {}, "SoH, first cycle"), h("dd", {}, s.first ? `${fmt(s.first.soh * 100, 1)} % (cycle ${s.first.cycle_index})` : "–"),
    h("dt", {}, "SoH, last cycle"), h("dd", {}, s.last ? `${fmt(s.last.soh * 100, 1)} % (cycle ${s.last.cycle_index})` : "–"),
    h("dt", {}, "End of life reached"), h("dd", {}, s.eolCycle === null ? "not within the data" : `cycle ${s.eolCycle}`),
    h("dt", {}, "RUL label, first cycle"), h("dd", {}, s.startRul === null ? "– (never reached end of life)" : `${fmt(s.startRul, 0)} cycles`),
    h("dt", {}, "Stated cycle life"), h("dd", {}, battery.stated_cycle_life === null ? "–" : String(battery.stated_cycle_life)),
    h("dt", {}, "Chemistry / make"), h("dd", {}, [battery.chemistry, battery.manufacturer].filter(Boolean).join(" · ") || "–"));
  await predicted;
  ctx.ready("research-detail");
}
