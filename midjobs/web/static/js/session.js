/**
 * Logging in and out.  The page never keeps a password: it logs in once with
 * `auth.login_ex`, then keeps a token from `auth.generate_token` in
 * sessionStorage (this tab only) to log back in after a reload or a lost
 * connection with `auth.login_with_token`.
 * @module session
 */

import { Identity } from "./access.js";

const TOKEN_KEY = "midjobs.token";
const USER_KEY = "midjobs.user";

/** How long a session token lives, in seconds; it is renewed well before. */
export const TOKEN_TTL = 3600;
/** How long the token for one upload lives, in seconds (it is single-use). */
const TRANSFER_TOKEN_TTL = 300;

/** A login the daemon refused. */
export class LoginRefused extends Error {
  constructor(message = "Wrong user name or password") {
    super(message);
    this.name = "LoginRefused";
  }
}

export class Session {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {Storage} [storage]
   */
  constructor(rpc, storage = window.sessionStorage) {
    this.rpc = rpc;
    this.storage = storage;
    /** @type {string | null} who is logged in on the current connection */
    this.username = null;
    /** @type {Identity | null} their roles and user id (what the page may offer them) */
    this.identity = null;
    /** @type {number | null} */
    this.renewTimer = null;
  }

  /** Whether a token from an earlier login is kept. */
  get hasToken() {
    return this.storage.getItem(TOKEN_KEY) !== null;
  }

  /** The user name of the kept token's login, for display before it is used. */
  get rememberedUser() {
    return this.storage.getItem(USER_KEY);
  }

  /**
   * Log the connection in with a password, then keep a token instead of it.
   * @param {string} username
   * @param {string} password
   * @throws {LoginRefused}
   */
  async login(username, password) {
    const answer = await this.rpc.call("auth.login_ex", [
      { mechanism: "PASSWORD_PLAIN", username, password },
    ]);
    if (answer?.response_type !== "SUCCESS") throw new LoginRefused();
    this.username = answer.user_info?.pw_name ?? username;
    this.identity = new Identity(answer.user_info);
    this.storage.setItem(USER_KEY, this.username);
    await this.renewToken();
  }

  /**
   * Log the connection in with the kept token (after a reload or a
   * reconnection).  False, and the token forgotten, if it no longer works.
   * @returns {Promise<boolean>}
   */
  async resume() {
    const token = this.storage.getItem(TOKEN_KEY);
    if (token === null) return false;
    const ok = await this.rpc.call("auth.login_with_token", [token]);
    if (!ok) {
      this.forget();
      return false;
    }
    const me = await this.rpc.call("auth.me");
    this.username = me?.pw_name ?? this.rememberedUser;
    this.identity = new Identity(me);
    await this.renewToken();
    return true;
  }

  /** Replace the kept token with a fresh one, and renew it again before it expires. */
  async renewToken() {
    const token = await this.rpc.call("auth.generate_token", [TOKEN_TTL]);
    this.storage.setItem(TOKEN_KEY, token);
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => {
      this.renewTimer = null;
      // A failure (a lost connection) is retried at the next login with the token.
      this.renewToken().catch(() => {});
    }, (TOKEN_TTL * 1000) / 3);
  }

  /**
   * A single-use token for one HTTP transfer (`Authorization: Token ...`).
   * @returns {Promise<string>}
   */
  transferToken() {
    return this.rpc.call("auth.generate_token", [TRANSFER_TOKEN_TTL, {}, false, true]);
  }

  /** Log out on the daemon (if connected) and forget the token. */
  async logout() {
    this.forget();
    try {
      await this.rpc.call("auth.logout");
    } catch {
      // Not connected: there is no session to end on the daemon.
    }
  }

  /** Forget the login locally. */
  forget() {
    this.username = null;
    this.identity = null;
    this.storage.removeItem(TOKEN_KEY);
    this.storage.removeItem(USER_KEY);
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.renewTimer = null;
  }
}
