/**
 * JSON-RPC 2.0 over the page's one WebSocket (`/api/current`), with events and
 * reconnection.  docs/protocol.rst is the contract.
 * @module rpc
 */

/** The delays between reconnection attempts, in ms; the last one repeats. */
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

/**
 * The close code and reason of a connection that did not log in within the
 * daemon's `[limits] login_timeout`.  Nothing was lost: the page stays idle
 * and connects again when it needs to (see {@link RpcClient#opened}).
 */
const LOGIN_TIMEOUT = { code: 1008, reason: "Login timeout" };

/** The error a call fails with when the daemon answers with an error. */
export class RpcError extends Error {
  /**
   * @param {string} method
   * @param {{code: number, message: string, data?: any}} error
   */
  constructor(method, error) {
    const data = error.data ?? null;
    super(data?.reason || error.message);
    this.name = "RpcError";
    this.method = method;
    this.code = error.code;
    /** The errno name, such as `ENOENT` or `ENOTAUTHENTICATED`, when the daemon gave one. */
    this.errname = data?.errname ?? null;
    this.data = data;
  }
}

/** The error a call fails with when the connection ends before its answer. */
export class ConnectionLost extends Error {
  constructor() {
    super("The connection to the daemon was lost");
    this.name = "ConnectionLost";
  }
}

/**
 * @callback EventHandler
 * @param {{msg: string, collection: string, id: any, fields?: any}} params the `collection_update` params
 * @param {number} received `performance.now()` when the message arrived
 */

/**
 * One subscription to an event name.  It outlives the connection: after a
 * reconnection, {@link RpcClient#resubscribe} makes it again.
 */
export class Subscription {
  /**
   * @param {RpcClient} client
   * @param {string} name
   * @param {EventHandler} onEvent
   * @param {{onStart?: () => void, onEnd?: (error: any) => void}} hooks
   *   `onStart` runs just before each `core.subscribe` is sent (events of the
   *   new subscription may arrive before its answer); `onEnd` when the daemon ends it.
   */
  constructor(client, name, onEvent, hooks = {}) {
    this.client = client;
    this.name = name;
    this.onEvent = onEvent;
    this.onStart = hooks.onStart ?? (() => {});
    this.onEnd = hooks.onEnd ?? (() => {});
    /** @type {string | null} the daemon's id of the subscription on this connection */
    this.id = null;
    this.active = true;
  }

  /** End the subscription. */
  async unsubscribe() {
    await this.client.unsubscribe(this);
  }
}

/**
 * The page's connection to the daemon.
 *
 * Dispatches `state` events (`detail`: `{state, attempt, delay, quiet}`) where
 * state is `connecting`, `open`, `reconnecting`, or `idle` (closed by the
 * daemon for not logging in in time: not an error, and not retried until
 * {@link RpcClient#opened} is called).  `quiet` is true for a connection
 * made again from `idle`: nothing to tell the user.
 */
export class RpcClient extends EventTarget {
  /** @param {string} url the WebSocket URL */
  constructor(url) {
    super();
    this.url = url;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.state = "connecting";
    this.nextId = 1;
    /** @type {Map<number, {method: string, resolve: (v: any) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    /** @type {Map<string, Set<Subscription>>} */
    this.subscriptions = new Map();
    this.attempt = 0;
    /** @type {number | null} */
    this.retryTimer = null;
    this.stopped = false;
  }

  /** The URL of the daemon's WebSocket for a page served by that daemon. */
  static defaultUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/current`;
  }

  /**
   * Open the connection (and keep reopening it until {@link stop}).
   * @param {boolean} [quiet] a connection made again after `idle`
   */
  connect(quiet = false) {
    this.stopped = false;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.socket) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting", { quiet });
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setState("open", { quiet });
    });
    socket.addEventListener("message", (event) => this.received(event.data, performance.now()));
    socket.addEventListener("close", (event) => this.closed(socket, event));
  }

  /** Try again at once instead of waiting for the next attempt. */
  reconnectNow() {
    if (this.socket === null && !this.stopped && this.state !== "idle") this.connect();
  }

  /** Close for good. */
  stop() {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.socket?.close();
  }

  /**
   * @param {string} state
   * @param {object} [extra]
   */
  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt, ...extra } }));
  }

  /**
   * An open connection, made again if the daemon closed an idle one.
   * @returns {Promise<void>}
   * @throws {ConnectionLost} the connection is down (or failed to open)
   */
  opened() {
    if (this.state === "open") return Promise.resolve();
    if (this.state !== "idle") return Promise.reject(new ConnectionLost());
    return new Promise((resolve, reject) => {
      /** @param {Event} event */
      const changed = (event) => {
        const { state } = /** @type {CustomEvent} */ (event).detail;
        if (state === "connecting") return;
        this.removeEventListener("state", changed);
        if (state === "open") resolve();
        else reject(new ConnectionLost());
      };
      this.addEventListener("state", changed);
      this.connect(true);
    });
  }

  /**
   * @param {WebSocket} socket
   * @param {CloseEvent} [event]
   */
  closed(socket, event) {
    if (this.socket !== socket) return;
    this.socket = null;
    for (const call of this.pending.values()) call.reject(new ConnectionLost());
    this.pending.clear();
    for (const set of this.subscriptions.values()) {
      for (const sub of set) sub.id = null;
    }
    if (this.stopped) return;
    if (event?.code === LOGIN_TIMEOUT.code && event.reason === LOGIN_TIMEOUT.reason) {
      this.attempt = 0;
      this.setState("idle");
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.setState("reconnecting", { delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * Call a method; resolves with its result.
   * @param {string} method
   * @param {any[]} [params]
   * @returns {Promise<any>}
   */
  call(method, params = []) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionLost());
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  /**
   * Subscribe to an event; the subscription is made again after each reconnection.
   * @param {string} name
   * @param {EventHandler} onEvent
   * @param {{onStart?: () => void, onEnd?: (error: any) => void}} [hooks]
   * @returns {Promise<Subscription>}
   */
  async subscribe(name, onEvent, hooks) {
    const sub = new Subscription(this, name, onEvent, hooks);
    let set = this.subscriptions.get(name);
    if (!set) this.subscriptions.set(name, (set = new Set()));
    set.add(sub);
    try {
      await this.establish(sub);
    } catch (error) {
      this.forget(sub);
      throw error;
    }
    return sub;
  }

  /** @param {Subscription} sub */
  async establish(sub) {
    sub.onStart();
    const id = await this.call("core.subscribe", [sub.name]);
    if (sub.active) {
      sub.id = id;
    } else {
      // Ended while the answer was on its way.
      this.call("core.unsubscribe", [id]).catch(() => {});
    }
  }

  /**
   * Make every subscription again on a new connection (after logging in).
   * @returns {Promise<void>}
   */
  async resubscribe() {
    const all = [...this.subscriptions.values()].flatMap((set) => [...set]);
    await Promise.all(all.map((sub) => (sub.id === null ? this.establish(sub) : null)));
  }

  /** @param {Subscription} sub */
  forget(sub) {
    sub.active = false;
    const set = this.subscriptions.get(sub.name);
    set?.delete(sub);
    if (set && set.size === 0) this.subscriptions.delete(sub.name);
  }

  /** @param {Subscription} sub */
  async unsubscribe(sub) {
    this.forget(sub);
    const id = sub.id;
    sub.id = null;
    if (id !== null && this.socket) {
      try {
        await this.call("core.unsubscribe", [id]);
      } catch {
        // The connection went, and the subscription with it.
      }
    }
  }

  /** End every subscription, locally and on the daemon. */
  async unsubscribeAll() {
    const all = [...this.subscriptions.values()].flatMap((set) => [...set]);
    await Promise.all(all.map((sub) => this.unsubscribe(sub)));
  }

  /**
   * @param {string} text
   * @param {number} received
   */
  received(text, received) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.method === "collection_update") {
      const params = message.params ?? {};
      const set = this.subscriptions.get(params.collection);
      if (set) for (const sub of set) sub.onEvent(params, received);
      return;
    }
    if (message.method === "notify_unsubscribed") {
      const params = message.params ?? {};
      const set = this.subscriptions.get(params.collection);
      if (set) {
        for (const sub of [...set]) {
          this.forget(sub);
          sub.onEnd(params.error ?? null);
        }
      }
      return;
    }
    const call = this.pending.get(message.id);
    if (!call) return;
    this.pending.delete(message.id);
    if (message.error) call.reject(new RpcError(call.method, message.error));
    else call.resolve(message.result);
  }
}
