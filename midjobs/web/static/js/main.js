/**
 * The task manager's page: one connection, the login, the views and the
 * routes between them (`#jobs` or `#jobs?<filters, sort and page>`,
 * `#job/<id>`, `#upload`, `#download`).  The page's title names the view.
 * @module main
 */

import { ClusterNodes } from "./cluster.js";
import { DownloadView } from "./download.js";
import { byId, setText } from "./dom.js";
import { JobDetailView } from "./jobdetail.js";
import { JobListView } from "./joblist.js";
import { JobStore } from "./jobstore.js";
import { parseQuery, queryHash } from "./listquery.js";
import { ConnectionLost, RpcClient } from "./rpc.js";
import { LoginRefused, Session } from "./session.js";
import { UploadView } from "./upload.js";

const VIEWS = ["login", "jobs", "job", "upload", "download"];
const TITLES = { login: "Log in", upload: "Upload", download: "Download" };

class App {
  constructor() {
    this.rpc = new RpcClient(RpcClient.defaultUrl());
    this.session = new Session(this.rpc);
    this.store = new JobStore(this.rpc);
    this.list = new JobListView(this.store, (query, replace) => this.navigate(query, replace));
    this.nodes = new ClusterNodes(this.rpc, (nodes) => this.list.setNodes(nodes));
    /** The fragment of the list last shown (where "All jobs" goes back to). */
    this.listHash = "jobs";
    /**
     * Where the list was scrolled, for each list fragment left for a job: the
     * first row on screen and how far from the top it was (rows off screen are
     * not laid out, so a pixel offset alone would not land on the same rows).
     * @type {Map<string, {id: number, top: number, y: number}>}
     */
    this.scrolls = new Map();
    this.detail = new JobDetailView(this.rpc, this.store, this.session);
    this.upload = new UploadView(this.session, this.store);
    this.download = new DownloadView(this.rpc, this.store);
    /** Whether the user is logged in (on this connection, or on the one being restored). */
    this.loggedIn = false;
    /** @type {string | null} */
    this.view = null;
    this.e = {
      nav: byId("nav"),
      who: byId("who"),
      whoName: byId("who-name"),
      connection: byId("connection"),
      connectionText: byId("connection-text"),
      reconnect: /** @type {HTMLButtonElement} */ (byId("reconnect-now")),
      loginForm: /** @type {HTMLFormElement} */ (byId("login-form")),
      username: /** @type {HTMLInputElement} */ (byId("login-username")),
      password: /** @type {HTMLInputElement} */ (byId("login-password")),
      loginError: byId("login-error"),
      loginSubmit: /** @type {HTMLButtonElement} */ (byId("login-submit")),
    };

    this.rpc.addEventListener("state", (event) => {
      this.connectionChanged(/** @type {CustomEvent} */ (event).detail).catch(() => {});
    });
    this.e.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.login();
    });
    byId("logout").addEventListener("click", () => this.logout());
    // Logged out in another tab: the session is over here too.
    this.session.addEventListener("ended", () => {
      if (!this.loggedIn) return;
      this.leave("You logged out in another tab.")
        .then(() => this.session.logoutConnection())
        .catch(() => {});
    });
    this.e.reconnect.addEventListener("click", () => this.rpc.reconnectNow());
    window.addEventListener("hashchange", () => this.route());
    // The page restores the list's scroll position itself, once its rows are in.
    if ("scrollRestoration" in history) history.scrollRestoration = "manual";
    window.addEventListener("online", () => this.rpc.reconnectNow());
    this.rpc.connect();
  }

  /**
   * @param {{state: string, attempt: number, delay?: number, quiet?: boolean}} detail
   */
  async connectionChanged({ state, attempt, delay, quiet }) {
    document.body.dataset.connection = state;
    if (state === "idle") {
      // The daemon closed a connection that was not logged in in time.
      this.banner(null);
      // Logged in here, it was logged out there: the session ended (its
      // time ran out, or its user was locked or deleted, or a page no tab
      // hears of logged it out).  The list on screen is stale.
      if (this.loggedIn) await this.leave("You were logged out: log in again.");
      // Otherwise the login form stays as it is, and submitting it connects again.
      return;
    }
    if (state === "reconnecting") {
      const seconds = delay !== undefined ? Math.max(1, Math.round(delay / 1000)) : 0;
      this.banner(
        delay !== undefined
          ? `Connection lost. Reconnecting in ${seconds} s (attempt ${attempt})…`
          : `Reconnecting (attempt ${attempt})…`,
        true,
      );
      return;
    }
    if (state === "connecting") {
      if (!quiet) this.banner("Connecting…", false);
      return;
    }
    // Open: log in with the browser's session, if it has one that lasts.
    const wasIn = this.loggedIn;
    if (wasIn) this.banner("Reconnected; logging back in…", false);
    let resumed = false;
    try {
      resumed = await this.session.resume();
    } catch (error) {
      if (error instanceof ConnectionLost) return;
    }
    if (resumed) {
      this.banner(null);
      await this.enter(wasIn);
      return;
    }
    this.banner(null);
    // The login form was sent meanwhile (after an idle close): it logged this connection in.
    if (this.loggedIn && !wasIn) return;
    if (wasIn) await this.leave("Your session has expired: log in again.");
    else this.showLogin();
  }

  /**
   * @param {string | null} text null hides the banner
   * @param {boolean} [retry] offer "Retry now"
   */
  banner(text, retry = false) {
    this.e.connection.hidden = text === null;
    setText(this.e.connectionText, text ?? "");
    this.e.reconnect.hidden = !retry;
  }

  async login() {
    const username = this.e.username.value.trim();
    const password = this.e.password.value;
    // The password goes to the daemon once and is kept nowhere.
    this.e.password.value = "";
    setText(this.e.loginError, "");
    if (!username || !password) {
      setText(this.e.loginError, "Give a user name and a password.");
      return;
    }
    this.e.loginSubmit.disabled = true;
    try {
      await this.rpc.opened();
      await this.session.login(username, password);
      await this.enter(false);
    } catch (error) {
      let message = `Could not log in: ${error.message}`;
      if (error instanceof LoginRefused) message = "Wrong user name or password.";
      if (error instanceof ConnectionLost) message = "Not connected to the daemon: try again once the connection is back.";
      setText(this.e.loginError, message);
      this.e.password.focus();
    } finally {
      this.e.loginSubmit.disabled = false;
    }
  }

  /**
   * The connection is logged in: show the jobs (again).
   * @param {boolean} reconnected the page was logged in before the connection was lost
   */
  async enter(reconnected) {
    this.loggedIn = true;
    document.body.dataset.auth = "in";
    setText(this.e.whoName, this.session.username ?? "");
    this.e.who.hidden = false;
    this.e.nav.hidden = false;
    this.route();
    try {
      if (reconnected) {
        this.store.forgetWatched();
        await this.rpc.resubscribe();
        await this.store.reload();
        this.restoreScroll();
        await this.store.refreshWatched();
      } else {
        await this.store.start();
        this.restoreScroll();
      }
      const methods = await this.rpc.call("core.get_methods");
      this.list.setMethods(methods);
      await this.nodes.start();
      this.upload.setMethods(methods, this.session.identity);
      this.download.setMethods(methods, this.session.identity);
      document.body.dataset.ready = "true";
    } catch (error) {
      // A lost connection: the next one logs in and loads again.
      if (!(error instanceof ConnectionLost)) this.banner(`Could not load the jobs: ${error.message}`);
    }
  }

  async logout() {
    await this.leave(null);
    await this.session.logout();
  }

  /**
   * Back to the login form, forgetting the jobs.
   * @param {string | null} message why
   */
  async leave(message) {
    this.loggedIn = false;
    this.nodes.stop();
    this.detail.hide();
    this.upload.job.stop();
    this.download.job.stop();
    await this.store.stop();
    await this.rpc.unsubscribeAll();
    this.session.forget();
    this.showLogin();
    setText(this.e.loginError, message ?? "");
  }

  showLogin() {
    this.loggedIn = false;
    document.body.dataset.auth = "out";
    delete document.body.dataset.ready;
    this.e.who.hidden = true;
    this.e.nav.hidden = true;
    this.show("login");
  }

  /** Show the view the URL's fragment names. */
  route() {
    if (!this.loggedIn) {
      this.show("login");
      return;
    }
    const raw = location.hash.slice(1);
    const hash = decodeURIComponent(raw);
    const job = /^job\/(\d+)$/.exec(hash);
    if (this.view === "jobs") this.saveScroll();
    if (job) {
      this.show("job");
      document.title = `Job ${job[1]} · midjobs`;
      byId("job-back").setAttribute("href", `#${this.listHash}`);
      this.detail.show(Number(job[1]));
      return;
    }
    this.detail.hide();
    if (hash === "upload" || hash === "download") {
      this.show(hash);
      document.title = `${TITLES[hash]} · midjobs`;
      return;
    }
    const list = /^jobs(?:\?(.*))?$/.exec(raw);
    const query = parseQuery(list?.[1] ?? "");
    this.listHash = queryHash(query);
    this.show("jobs");
    this.list.apply(query).then(() => this.restoreScroll()).catch(() => {});
    this.restoreScroll();
  }

  /**
   * Show another list (filters, sort or page): through the URL's fragment,
   * so that back and forward go through the lists seen.
   * @param {import("./listquery.js").ListQuery} query
   * @param {boolean} [replace] replace the history entry (typing a search) instead of adding one
   */
  navigate(query, replace = false) {
    const hash = queryHash(query);
    if (replace) {
      history.replaceState(null, "", `#${hash}`);
      this.route();
    } else if (location.hash !== `#${hash}`) {
      location.hash = hash;
    } else {
      this.route();
    }
  }

  /** Leaving the list: remember its first row on screen. */
  saveScroll() {
    for (const id of this.store.window) {
      const tr = this.list.rows.get(id)?.tr;
      if (!tr) continue;
      const rect = tr.getBoundingClientRect();
      if (rect.bottom > 0) {
        this.scrolls.set(this.listHash, { id, top: rect.top, y: window.scrollY });
        return;
      }
    }
    this.scrolls.delete(this.listHash);
  }

  /**
   * Back on a list left for a job: scroll so that the row that was first on
   * screen is where it was, once the rows are there.
   */
  restoreScroll() {
    if (this.view !== "jobs" || !this.store.loaded) return;
    const saved = this.scrolls.get(this.listHash);
    if (saved === undefined) return;
    const tr = this.list.rows.get(saved.id)?.tr;
    if (!tr) {
      if (this.store.window.length > 0 && !this.store.window.includes(saved.id)) this.scrolls.delete(this.listHash);
      return; // its rows are not in yet (or it is gone: the list starts at the top)
    }
    this.scrolls.delete(this.listHash);
    const align = () => window.scrollBy(0, tr.getBoundingClientRect().top - saved.top);
    window.scrollTo(0, saved.y);
    align();
    // Rows laid out for the first time may differ from their estimated height: once more after the frame.
    requestAnimationFrame(align);
  }

  /** @param {string} name */
  show(name) {
    if (this.view === name) return;
    for (const view of VIEWS) byId(`view-${view}`).hidden = view !== name;
    for (const link of this.e.nav.querySelectorAll("a")) {
      if (link.dataset.view === name || (name === "job" && link.dataset.view === "jobs")) {
        link.setAttribute("aria-current", "page");
      } else {
        link.removeAttribute("aria-current");
      }
    }
    const first = this.view === null;
    this.view = name;
    document.body.dataset.view = name;
    if (name === "login") {
      document.title = `${TITLES.login} · midjobs`;
      this.e.username.focus();
    } else if (!first) {
      // Tell keyboard and screen-reader users where they are now (the list
      // keeps its scroll position: restoreScroll() sees to it).
      byId(`view-${name}`).querySelector("h1")?.focus({ preventScroll: true });
      if (!(name === "jobs" && this.scrolls.has(this.listHash))) window.scrollTo(0, 0);
    }
  }
}

new App();
