// Charts over uPlot (loaded as the global `uPlot` by index.html): a fixed-size ring of points for
// live series, and plain x/y plots for histories.

/** The newest `capacity` points of one x column and `width` y columns, in fixed typed arrays,
 * kept in x order: a reading that arrives late (another ingest worker's batch, a gap fetched
 * after a reconnection) goes to its place. */
export class Ring {
  constructor(capacity, width) {
    this.capacity = capacity;
    this.xs = new Float64Array(capacity);
    this.ys = Array.from({ length: width }, () => new Float64Array(capacity));
    this.start = 0;
    this.length = 0;
  }
  get last() { return this.length ? this.xs[this._slot(this.length - 1)] : null; }
  _slot(i) { return (this.start + i) % this.capacity; }
  /** Add a point (null y values are gaps); returns false for an x already held, or one older
   * than all of a full ring. */
  push(x, values) {
    let at = this.length; // the index the point takes: after every x below it
    while (at > 0 && this.xs[this._slot(at - 1)] >= x) {
      if (this.xs[this._slot(at - 1)] === x) return false;
      at -= 1;
    }
    if (this.length === this.capacity) {
      if (at === 0) return false;
      this.start = this._slot(1); // the oldest makes room
      this.length -= 1;
      at -= 1;
    }
    for (let i = this.length; i > at; i--) this._copy(i - 1, i);
    const slot = this._slot(at);
    this.xs[slot] = x;
    values.forEach((v, k) => { this.ys[k][slot] = v === null || v === undefined ? NaN : v; });
    this.length += 1;
    return true;
  }
  _copy(from, to) {
    const a = this._slot(from), b = this._slot(to);
    this.xs[b] = this.xs[a];
    for (const y of this.ys) y[b] = y[a];
  }
  /** uPlot's columns, oldest first (gaps as null). */
  columns() {
    const out = [new Array(this.length), ...this.ys.map(() => new Array(this.length))];
    for (let i = 0; i < this.length; i++) {
      const slot = (this.start + i) % this.capacity;
      out[0][i] = this.xs[slot];
      for (let k = 0; k < this.ys.length; k++) {
        const v = this.ys[k][slot];
        out[k + 1][i] = Number.isNaN(v) ? null : v;
      }
    }
    return out;
  }
}

const HEIGHT = 210;

function makePlot(el, opts, data) {
  const width = Math.max(el.clientWidth, 200);
  const plot = new window.uPlot({ width, height: HEIGHT, ...opts }, data, el);
  const observer = new ResizeObserver(() => {
    const w = Math.max(el.clientWidth, 200);
    if (w !== plot.width) plot.setSize({ width: w, height: HEIGHT });
  });
  observer.observe(el);
  return { plot, destroy() { observer.disconnect(); plot.destroy(); } };
}

/** A live time series: bounded, and its element says how many points it plots, the oldest time
 * and the newest. */
export class LiveChart {
  /** `scale` multiplies the API's values for display (Ω to mΩ); `range` fixes the y axis. */
  constructor(el, { label, color, capacity = 1800, digits = 2, scale = 1, range = null }) {
    this.el = el;
    this.scale = scale;
    this.ring = new Ring(capacity, 1);
    this.chart = makePlot(el, {
      scales: { x: { time: true }, y: range ? { range } : {} },
      series: [{}, { label, stroke: color, width: 1.5, spanGaps: false }],
      axes: [{}, { size: 64, values: (u, splits) => splits.map((v) => v.toFixed(digits)) }],
      legend: { show: false }, // the panel's title and current value say it
      cursor: { drag: { x: true, y: false } },
    }, [[], []]);
    this._mark();
  }
  /** Add readings [{ts: RFC 3339, value}] (oldest first); returns whether any was new. */
  add(points) {
    let added = false;
    for (const p of points) {
      const v = p.value === null || p.value === undefined ? null : p.value * this.scale;
      added = this.ring.push(Date.parse(p.ts) / 1000, [v]) || added;
    }
    if (added) {
      this.chart.plot.setData(this.ring.columns());
      this._mark();
    }
    return added;
  }
  _mark() {
    const { ring } = this;
    this.el.dataset.points = String(ring.length);
    const first = ring.length ? ring.xs[ring.start] : null;
    this.el.dataset.firstTs = first === null ? "" : new Date(first * 1000).toISOString();
    const last = ring.last;
    this.el.dataset.lastTs = last === null ? "" : new Date(last * 1000).toISOString();
  }
  destroy() { this.chart.destroy(); }
}

/** A static plot: `data` are uPlot columns, `series` uPlot series options after x; a series
 * with `scale: "right"` is drawn against a second axis labelled `rightLabel`. */
export function staticPlot(el, { data, series, time = false, yLabel = "", xLabel = "", rightLabel = "" }) {
  const axes = [{ label: xLabel || undefined }, { label: yLabel || undefined, size: 60 }];
  if (rightLabel) axes.push({ scale: "right", side: 1, label: rightLabel, size: 60, grid: { show: false } });
  const scales = { x: { time }, right: { range: (u, min, max) => [0, Math.max(max, 1)] } };
  const legend = { live: false }; // the series' names only, no "--" values off hover
  return makePlot(el, { scales, series: [{ label: xLabel }, ...series], axes, legend }, data);
}
