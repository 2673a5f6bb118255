/**
 * Logging in and out.  The page never keeps a password, nor anything else in
 * the browser's storage: the password goes once to `auth.login_ex`, then a
 * single-use token of that login starts a session (`POST /_session`), which
 * gives the browser a cookie that scripts cannot read (HttpOnly,
 * SameSite=Strict).  Each new connection logs in with a single-use token the
 * cookie is traded for (`POST /_session/token`, then `auth.login_with_token`).  So a reload, a new
 * tab, a lost connection and a restart of the daemon find the login again
 * while the session lasts; logging out (`POST /_session/logout`) ends it for every
 * tab, which hear of it at once (a BroadcastChannel) or at their next login.
 * Every connection, the one the password logged in included, logs in through
 * the session, so its end (a logout, its expiry) logs them out on the daemon,
 * whether or not their script runs.
 * @module session
 */

import { Identity } from "./access.js";
import { ConnectionLost } from "./rpc.js";

const SESSION_URL = "/_session";
/** Tells the other tabs of the page that the session ended. */
const CHANNEL = "midjobs.session";

/** How long the token that starts a session lives, in seconds (it is single-use, and used at once). */
const SESSION_TOKEN_TTL = 60;
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
   * Log the connection in with a password, then start a session with a
   * single-use token of that login (`POST /_session`), which keeps the
   * login for the other tabs and the next connections.
   * @param {string} username
   * @param {string} password
   * @throws {LoginRefused}
   * @throws {ConnectionLost}
   */
  async login(username, password) {
    const answer = await this.rpc.call("auth.login_ex", [
      { mechanism: "PASSWORD_PLAIN", username, password },
    ]);
    if (answer?.response_type !== "SUCCESS") throw new LoginRefused();
    this.username = answer.user_info?.pw_name ?? username;
    this.identity = new Identity(answer.user_info);
    const token = await this.rpc.call("auth.generate_token", [SESSION_TOKEN_TTL, {}, true, true]);
    const { status, body } = await sessionRequest("POST", SESSION_URL, { Authorization: `Token ${token}` });
    // Without a session this tab works on; a reload asks for the password again.
    if (status !== 200) throw new Error(body.error ?? `HTTP ${status}`);
    // This connection too goes with the session from now on.
    try {
      await this.resume();
    } catch {
      // It stays logged in by password (a lost connection logs in again through the session).
    }
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
