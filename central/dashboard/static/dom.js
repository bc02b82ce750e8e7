// DOM helpers, formatting, toasts, and the Scope that undoes everything a page set up.

/** Build an element: h("a", {href, class, testid, "data-x": 1, onclick}, child, ...). Text is never HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "testid") el.dataset.testid = value;
    else if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmt(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const text = Number(value).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return unit ? `${text} ${unit}` : text;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

export function label(snake) {
  return String(snake).replaceAll("_", " ");
}

export function badge(text, cls) {
  return h("span", { class: `badge ${cls}` }, label(text));
}

/** An error or notice in the corner; errors stay until dismissed or 10 s have passed. */
export function toast(message, kind = "error") {
  const box = document.getElementById("toasts");
  const close = h("button", { type: "button", "aria-label": "Dismiss" }, "×");
  const el = h("div", { class: `toast ${kind}`, testid: "toast", role: kind === "error" ? "alert" : "status" },
    h("div", {}, message), close);
  close.addEventListener("click", () => el.remove());
  box.append(el);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => el.remove(), kind === "error" ? 10000 : 5000);
}

/**
 * What one page holds: listeners, live subscriptions, timers, observers. dispose() undoes them
 * all and aborts the page's requests, so nothing leaks from page to page.
 */
export class Scope {
  constructor() {
    this.controller = new AbortController();
    this.cleanups = [];
  }
  get signal() { return this.controller.signal; }
  get alive() { return !this.controller.signal.aborted; }
  add(cleanup) { this.cleanups.push(cleanup); return cleanup; }
  listen(target, type, fn, options) {
    target.addEventListener(type, fn, options);
    this.add(() => target.removeEventListener(type, fn, options));
  }
  dispose() {
    this.controller.abort();
    for (const cleanup of this.cleanups.splice(0).reverse()) {
      try { cleanup(); } catch (err) { console.error(err); }
    }
  }
}
