// The REST API: tokens in sessionStorage, one refresh-and-retry on 401, the error envelope as ApiError.

const KEY = "brm.session";
const NEXT = "brm.next";
const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, message, code = null, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  read() {
    try { return JSON.parse(sessionStorage.getItem(KEY)) || null; } catch { return null; }
  },
  get access() { return this.read()?.access_token || null; },
  get user() { return this.read()?.user || null; },
  save(data) { sessionStorage.setItem(KEY, JSON.stringify({ ...this.read(), ...data })); },
  clear() { sessionStorage.removeItem(KEY); },
  /** The route to open after the next login (where the user was sent to log in from). */
  returnTo(hash) { if (hash && hash !== "#/login") sessionStorage.setItem(NEXT, hash); },
  takeReturn() {
    const hash = sessionStorage.getItem(NEXT);
    sessionStorage.removeItem(NEXT);
    return hash || "#/fleet";
  },
};

let onSignedOut = () => {};
/** What to do when the session cannot be renewed (the app goes to #/login); called with `true`. */
export function setSignedOutHandler(fn) { onSignedOut = fn; }

let refreshing = null;
/** A new access token from the refresh token; concurrent callers share one request. */
export function refreshAccess() {
  if (!refreshing) {
    refreshing = (async () => {
      const token = session.read()?.refresh_token;
      if (!token) return false;
      const res = await fetch(`${BASE}/auth/refresh`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: token }),
      });
      if (!res.ok) return false;
      const body = await res.json();
      session.save({ access_token: body.access_token });
      return true;
    })().catch(() => false).finally(() => { refreshing = null; });
  }
  return refreshing;
}

function query(params) {
  if (!params) return "";
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** The envelope's message (fleet clients read `detail`, research ones `error.message`). */
function errorFrom(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  const message = (error && error.message) || (body && body.detail) || `Request failed (HTTP ${status})`;
  const details = (error && Array.isArray(error.details) ? error.details : [])
    .map((d) => d.issue || d.msg).filter(Boolean);
  const full = details.length && !message.includes(details[0]) ? `${message}: ${details.join("; ")}` : message;
  return new ApiError(status, full, error ? error.code : null, error ? error.details : []);
}

async function parse(res) {
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return { detail: text.slice(0, 200) }; }
}

/** Call the API; resolves to the JSON body, rejects with ApiError (or AbortError). */
export async function api(path, { method = "GET", body, params, signal } = {}) {
  const send = () => fetch(`${BASE}${path}${query(params)}`, {
    method,
    signal,
    headers: {
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...(session.access ? { Authorization: `Bearer ${session.access}` } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  let res = await send();
  if (res.status === 401 && (await refreshAccess())) res = await send();
  const data = await parse(res);
  if (res.status === 401) {
    session.clear();
    onSignedOut(true);
  }
  if (!res.ok) throw errorFrom(res.status, data);
  return data;
}

/** Every item of a skip/limit list, page by page (`key` names the list in each answer). */
export async function allPages(path, key, params, signal, limit = 1000) {
  const items = [];
  for (let skip = 0; ; skip += limit) {
    const page = await api(path, { params: { ...params, skip, limit }, signal });
    items.push(...page[key]);
    if (page[key].length < limit || items.length >= page.total) return items;
  }
}

/** POST a form with upload progress (fetch cannot report it); one refresh-and-retry on 401. */
export function upload(path, form, onProgress, signal) {
  const attempt = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${BASE}${path}`);
    if (session.access) xhr.setRequestHeader("Authorization", `Bearer ${session.access}`);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = { detail: xhr.responseText.slice(0, 200) }; }
      resolve({ status: xhr.status, data });
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "Upload failed: the connection was lost")));
    xhr.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    if (signal) signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(form);
  });
  return (async () => {
    let { status, data } = await attempt();
    if (status === 401 && (await refreshAccess())) ({ status, data } = await attempt());
    if (status === 401) { session.clear(); onSignedOut(true); }
    if (status < 200 || status >= 300) throw errorFrom(status, data);
    return data;
  })();
}

/** Log in; the tokens and the user go to sessionStorage. Rejects with ApiError (no redirect). */
export async function login(username, password) {
  const res = await fetch(`${BASE}/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const data = await parse(res);
  if (!res.ok) throw errorFrom(res.status, data);
  session.save({ access_token: data.access_token, refresh_token: data.refresh_token, user: data.user });
  return data.user;
}

/** What a role may see: engineers and admins change alerts and upload; admins manage users. */
export const roles = {
  canEdit: (user) => Boolean(user) && (user.role === "engineer" || user.role === "admin"),
  isAdmin: (user) => Boolean(user) && user.role === "admin",
};
