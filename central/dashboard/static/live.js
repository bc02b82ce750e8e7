// The Socket.IO feed: one connection for the session, rooms counted per page, token renewal.
import { io } from "./vendor/socket.io.esm.min.js";
import { refreshAccess, session } from "./api.js";

const REFUSED = "Could not validate credentials";

export class Live {
  /** `onState(connected)` reports the connection; `onSignedOut()` when the token cannot be renewed. */
  constructor(onState, onSignedOut, onError) {
    this.onState = onState;
    this.onSignedOut = onSignedOut;
    this.onError = onError;
    this.socket = null;
    this.rooms = new Map(); // "battery:ID" -> how many holders
    this.renewDelay = 1000;
    this.renewTimer = null;
  }

  start() {
    if (this.socket) return;
    // auth as a function: every (re)connection sends the current access token.
    const socket = io({ path: "/socket.io", auth: (cb) => cb({ token: session.access }) });
    this.socket = socket;
    socket.on("connect", () => {
      this.renewDelay = 1000;
      this.onState(true);
      for (const key of this.rooms.keys()) this._emit("subscribe", key);
    });
    socket.on("disconnect", (reason) => {
      this.onState(false);
      // The server closed it (credentials no longer hold): the client will not retry by itself.
      if (reason === "io server disconnect") this._renew();
    });
    socket.on("connect_error", () => {
      this.onState(false);
      if (!socket.active) this._renew(); // refused by the server, not a network failure
    });
    socket.on("error", (data) => {
      const message = data && data.message;
      if (message && message !== REFUSED) this.onError(`Live feed: ${message}`);
    });
  }

  stop() {
    clearTimeout(this.renewTimer);
    if (this.socket) {
      this.socket.off();
      this.socket.disconnect();
    }
    this.socket = null;
    this.rooms.clear();
    this.onState(false);
  }

  _renew() {
    clearTimeout(this.renewTimer);
    const delay = this.renewDelay;
    this.renewDelay = Math.min(this.renewDelay * 2, 30000);
    this.renewTimer = setTimeout(async () => {
      if (!this.socket) return;
      if (!(await refreshAccess())) { this.onSignedOut(); return; }
      if (this.socket && !this.socket.connected) this.socket.connect();
    }, delay);
  }

  _emit(action, key) {
    const [kind, id] = [key.slice(0, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
    if (this.socket && this.socket.connected) this.socket.emit(`${action}_${kind}`, { [`${kind}_id`]: id });
  }

  /** Join a room ("battery" or "location"); returns the function that leaves it. */
  subscribe(kind, id) {
    const key = `${kind}:${id}`;
    const count = this.rooms.get(key) || 0;
    this.rooms.set(key, count + 1);
    if (count === 0) this._emit("subscribe", key);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = (this.rooms.get(key) || 1) - 1;
      if (left > 0) { this.rooms.set(key, left); return; }
      this.rooms.delete(key);
      this._emit("unsubscribe", key);
    };
  }

  /** Listen to a server event; returns the function that stops listening. */
  on(event, fn) {
    if (!this.socket) return () => {};
    const socket = this.socket;
    socket.on(event, fn);
    return () => socket.off(event, fn);
  }
}
