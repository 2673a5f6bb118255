/**
 * Logging in and out.  The page never keeps a password, nor anything else in
 * the browser's storage: the password goes once to `POST /_session` (HTTP
 * Basic), which starts a session and gives the browser a cookie that scripts
 * cannot read (HttpOnly, SameSite=Strict).  Each connection, the first one
 * included, logs in with a single-use token the cookie is traded for
 * (`POST /_session/token`, then `auth.login_with_token`).  So a reload, a new
 * tab, a lost connection and a restart of the daemon find the login again
 * while the session lasts, and the session's end (a logout, its expiry) logs
 * every connection out on the daemon, whether or not their script runs.
 * Logging out (`POST /_session/logout`) ends it for every tab, which hear of
 * it at once (a BroadcastChannel) or at their next login.
 * @module session
 */

import { Identity } from "./access.js";
import { ConnectionLost } from "./rpc.js";

const SESSION_URL = "/_session";
/** Tells the other tabs of the page that the session ended. */
const CHANNEL = "midjobs.session";

/** How long the token for one upload lives, in seconds (it is single-use). */
const TRANSFER_TOKEN_TTL = 300;

/** A login the daemon refused. */
export class LoginRefused extends Error {
  constructor(message = "Wrong user name or password") {
    super(message);
    this.name = "LoginRefused";
  }
}

/**
 * A request to `/_session`: its status and JSON answer.
 * @param {string} method
 * @param {string} path
 * @param {Record<string, string>} [headers]
 * @returns {Promise<{status: number, body: any}>}
 * @throws {ConnectionLost} the daemon could not be reached
 */
async function sessionRequest(method, path, headers = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      // A page from another site cannot send this header (the daemon requires it).
      headers: { "X-Requested-With": "midjobs", ...headers },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ConnectionLost();
  }
  let body = {};
  try {
    body = await response.json();
  } catch {
    // A proxy's error page: the status says enough.
  }
  return { status: response.status, body };
}

export class Session extends EventTarget {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   */
  constructor(rpc) {
    super();
    this.rpc = rpc;
    /** @type {string | null} who is logged in on the current connection */
    this.username = null;
    /** @type {Identity | null} their roles and user id (what the page may offer them) */
    this.identity = null;
    /** @type {BroadcastChannel | null} */
    this.channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL) : null;
    // Another tab logged out: so is this one ("ended" event).
    this.channel?.addEventListener("message", (event) => {
      if (event.data === "ended") this.dispatchEvent(new Event("ended"));
    });
  }

  /**
   * Start a session with a password (`POST /_session`, HTTP Basic), then log
   * the connection in through it, as every later connection of every tab
   * does: the session's end (a logout, its expiry) logs them all out on the
   * daemon, whether or not their script runs.
   * @param {string} username
   * @param {string} password
   * @throws {LoginRefused}
   * @throws {ConnectionLost}
   */
  async login(username, password) {
    const utf8 = new TextEncoder().encode(`${username}:${password}`);
    const basic = btoa(Array.from(utf8, (byte) => String.fromCharCode(byte)).join(""));
    const { status, body } = await sessionRequest("POST", SESSION_URL, { Authorization: `Basic ${basic}` });
    if (status === 401) throw new LoginRefused();
    if (status !== 200) throw new Error(body.error ?? `HTTP ${status}`);
    if (!(await this.resume())) throw new Error("the new session ended at once");
  }

  /**
   * Log the connection in with the session (after a load, a reload or a
   * reconnection).  False if there is no session, or it has ended.
   * @returns {Promise<boolean>}
   * @throws {ConnectionLost}
   */
  async resume() {
    const { status, body } = await sessionRequest("POST", `${SESSION_URL}/token`);
    if (status !== 200) throw new Error(body.error ?? `HTTP ${status}`);
    if (!body.token) return false;
    if (!(await this.rpc.call("auth.login_with_token", [body.token]))) return false;
    const me = await this.rpc.call("auth.me");
    this.username = me?.pw_name ?? body.username;
    this.identity = new Identity(me);
    return true;
  }

  /**
   * A single-use token for one HTTP transfer (`Authorization: Token ...`).
   * @returns {Promise<string>}
   */
  transferToken() {
    return this.rpc.call("auth.generate_token", [TRANSFER_TOKEN_TTL, {}, false, true]);
  }

  /** End the session (for every tab) and log the connection out. */
  async logout() {
    this.forget();
    try {
      // The daemon logs out every connection that logged in through the session, in any tab.
      await sessionRequest("POST", `${SESSION_URL}/logout`);
    } catch {
      // The daemon is out of reach: the session ends with its idle timeout.
    }
    this.channel?.postMessage("ended");
    await this.logoutConnection();
  }

  /** Log this connection out on the daemon (if connected). */
  async logoutConnection() {
    try {
      await this.rpc.call("auth.logout");
    } catch {
      // Not connected: there is no login to end on the daemon.
    }
  }

  /** Forget the login locally. */
  forget() {
    this.username = null;
    this.identity = null;
  }
}
