/**
 * The jobs of the list's window, and the jobs a view watches, kept live from
 * `core.get_jobs` and its events.
 *
 * The list shows one page of the jobs that match its query (listquery.js):
 * the daemon filters, sorts and pages, so the page holds at most
 * {@link PAGE_SIZE} rows whatever the size of the history.  Events update the
 * rows of that window in place; a new job that matches the query comes at
 * the top of the first page when new jobs come first; the counts follow.
 * When an event may change which jobs the window holds (a job starts or stops
 * matching, one is deleted), the window and the counts are asked for again,
 * at most once a second.
 *
 * Changes are applied to the store as they arrive and told to the views once
 * per animation frame, with the set of jobs that changed: however many events
 * come in, a view does one DOM update per frame, and only for those jobs.
 * @module jobstore
 */

import {
  PAGE_SIZE, emptyQuery, isFiltered, matches, newestFirst, queryFilters, queryHash, queryOrder,
} from "./listquery.js";
import { shownState } from "./states.js";

export { PAGE_SIZE };

/** The fields the list needs; the store keeps only these for each job of the window. */
export const LIST_FIELDS = [
  "id", "method", "description", "state", "progress", "time_started", "time_finished",
  "abortable", "logs_path", "error", "exc_info", "credentials", "node",
];

/** The least time between two fetches of the window and counts that events ask for (ms). */
const REFRESH_MS = 1000;

/**
 * @typedef {Record<string, any>} JobRecord
 * @typedef {import("./listquery.js").ListQuery} ListQuery
 * @callback FrameListener
 * @param {Set<number>} ids the jobs that changed (added, changed or removed) since the last frame
 * @param {number[]} received when each event applied in this frame arrived (`performance.now()`)
 */

/**
 * @param {JobRecord} record
 * @returns {JobRecord}
 */
function slim(record) {
  /** @type {JobRecord} */
  const out = {};
  for (const key of LIST_FIELDS) if (key in record) out[key] = record[key];
  return out;
}

/**
 * @param {ListQuery} query
 * @param {JobRecord} job
 * @returns {boolean}
 */
const fits = (query, job) => matches(query, job, shownState);

export class JobStore {
  /** @param {import("./rpc.js").RpcClient} rpc */
  constructor(rpc) {
    this.rpc = rpc;
    /** @type {Map<number, JobRecord>} the list's fields of the jobs in the window, and of watched jobs */
    this.jobs = new Map();
    /** @type {number[]} the ids of the window, in the query's order */
    this.window = [];
    /** @type {ListQuery} what the window shows */
    this.query = emptyQuery();
    /** @type {ListQuery | null} the query of the window's rows (until a new window comes, not `query`) */
    this.shown = null;
    /** @type {number | null} how many jobs match the query (null: not known yet) */
    this.total = null;
    /** @type {number | null} how many jobs the user may see in all */
    this.all = null;
    /**
     * The summary's counts, of the jobs of one node when the list is of that node (else `node` is "").
     * @type {{running: number, waiting: number, failed: number, node: string} | null}
     */
    this.summary = null;
    /**
     * Whole records of the jobs a view watches (the open job, an upload's job).
     * @type {Map<number, {record: JobRecord | null, count: number}>}
     */
    this.watched = new Map();
    /** @type {Set<FrameListener>} */
    this.listeners = new Set();
    /** @type {Set<number>} */
    this.dirty = new Set();
    /** @type {number[]} */
    this.received = [];
    this.frame = 0;
    /** Whether the first window is in (until then the list cannot say it is empty). */
    this.loaded = false;
    /** Whether the listeners must hear of the next frame even if no job changed (a window came). */
    this.news = false;
    /** @type {Set<number> | null} jobs told by events while a window is on its way */
    this.touched = null;
    /** Counts each fetch of the window: an answer to an older one is dropped. */
    this.generation = 0;
    /** @type {Promise<void>} the newest fetch of the window */
    this.loading = Promise.resolve();
    /** @type {number} a refresh asked for by events (a timer), or 0 */
    this.refreshTimer = 0;
    /** Whether the next refresh fetches the rows too (else the counts alone). */
    this.refreshRows = false;
    this.lastRefresh = 0;
    /** @type {Map<number, string>} the last state events told of jobs that have not ended */
    this.states = new Map();
    /** @type {import("./rpc.js").Subscription | null} */
    this.subscription = null;
  }

  /** @param {FrameListener} listener */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Subscribe to `core.get_jobs` and load the window.  The subscription
   * comes first, so no change falls between the window and the events.
   */
  async start() {
    if (this.subscription === null) {
      this.subscription = await this.rpc.subscribe("core.get_jobs", (params, received) =>
        this.event(params, received));
    }
    await this.load();
  }

  /**
   * Show another query: fetch its window (and then its counts).
   * @param {ListQuery} query
   */
  async setQuery(query) {
    this.query = query;
    this.total = null;
    if (this.subscription === null) return; // not logged in yet: start() loads it
    await this.load();
  }

  /**
   * After a reconnection (events were missed): the window, and every count, again.
   */
  async reload() {
    this.all = null;
    this.summary = null;
    await this.load();
  }

  /**
   * Fetch the window of the query (after a reconnection too: the
   * subscription was made again by then), then its counts.
   * @param {boolean} [counts] fetch the counts as well
   */
  load(counts = true) {
    const generation = ++this.generation;
    this.loading = this.fetchWindow(generation, counts);
    return this.loading;
  }

  /**
   * @param {number} generation
   * @param {boolean} counts
   * @returns {Promise<void>} settled once the window of the newest fetch is in
   */
  async fetchWindow(generation, counts) {
    const query = this.query;
    this.touched = new Set();
    let records;
    try {
      const keyset = this.keyset(query);
      if (keyset) {
        records = await this.rpc.call("core.get_jobs", [keyset.filters, {
          order_by: keyset.order_by, limit: PAGE_SIZE, select: LIST_FIELDS,
        }]);
        if (keyset.reverse) records.reverse();
      } else {
        records = await this.rpc.call("core.get_jobs", [queryFilters(query), {
          order_by: queryOrder(query), offset: query.page * PAGE_SIZE, limit: PAGE_SIZE, select: LIST_FIELDS,
        }]);
      }
    } finally {
      if (generation === this.generation) this.touched = null;
    }
    if (generation !== this.generation) return this.loading; // a newer fetch went out: wait for it
    this.shown = query;
    this.snapshot(records, this.touched ?? new Set());
    if (query.page === 0 && records.length < PAGE_SIZE) {
      // All of them are here: no need to count.
      this.total = records.length;
      if (!isFiltered(query)) this.all = records.length;
    }
    this.lastRefresh = performance.now();
    if (counts) this.loadCounts().catch(() => {});
  }

  /**
   * The next or previous page in id order, asked for from the ids of the
   * page shown (`["id", "<", last]`, no offset) rather than with an offset:
   * the store answers it from its index at any depth, where an offset of
   * 50,000 makes it read 50,000 jobs first.  Null for any other move.
   * @param {ListQuery} query
   * @returns {{filters: any[], order_by: string[], reverse: boolean} | null}
   */
  keyset(query) {
    const shown = this.shown;
    if (shown === null || (query.sort !== "-id" && query.sort !== "id") || this.window.length === 0) return null;
    if (queryHash({ ...shown, page: 0 }) !== queryHash({ ...query, page: 0 })) return null;
    const descending = query.sort === "-id";
    const first = this.window[0];
    const last = this.window[this.window.length - 1];
    if (query.page === shown.page + 1 && this.window.length === PAGE_SIZE) {
      return {
        filters: [...queryFilters(query), ["id", descending ? "<" : ">", last]],
        order_by: queryOrder(query),
        reverse: false,
      };
    }
    if (query.page === shown.page - 1 && query.page > 0) {
      return {
        filters: [...queryFilters(query), ["id", descending ? ">" : "<", first]],
        order_by: [descending ? "id" : "-id"],
        reverse: true,
      };
    }
    return null;
  }

  /**
   * Fetch how many jobs match, and how many there are in all (once: events
   * keep it), one query after the other: the daemon runs at most two
   * queries of a connection at once, and a slow count must leave room for
   * the rows of the next filter.  The summary's counts follow.
   */
  async loadCounts() {
    const generation = this.generation;
    const query = this.query;
    const filtered = isFiltered(query);
    const total = await this.rpc.call("core.get_jobs", [queryFilters(query), { count: true }]);
    if (generation !== this.generation) return;
    this.total = total;
    if (!filtered) this.all = total;
    else if (this.all === null) {
      const all = await this.rpc.call("core.get_jobs", [[], { count: true }]);
      if (this.all === null) this.all = all;
    }
    this.news = true;
    this.schedule();
    if (this.summary === null || this.summary.node !== query.node) await this.loadSummary();
  }

  /**
   * The summary's counts: running, waiting, failed in the last 24 hours
   * (whatever the list's other filters; of its node when it has one).
   */
  async loadSummary() {
    const node = this.query.node;
    /** @type {any[]} */
    const scope = node ? [["node", "=", node]] : [];
    const count = (/** @type {any[]} */ filters) =>
      this.rpc.call("core.get_jobs", [[...filters, ...scope], { count: true }]);
    const dayAgo = { $date: Date.now() - 86400_000 };
    const running = await count([["state", "=", "RUNNING"]]);
    const waiting = await count([["state", "=", "WAITING"]]);
    const failed = await count([["state", "=", "FAILED"], ["exc_info.errno", "!=", 103], ["time_started", ">=", dayAgo]]);
    if (node !== this.query.node) return; // the list went to another node meanwhile: its own counts follow
    this.summary = { running, waiting, failed, node };
    this.news = true;
    this.schedule();
  }

  /**
   * The window from `core.get_jobs`.  A job that an event told about
   * meanwhile keeps the event's record: every change sends an event, so the
   * last event of a job is never older than the window's record.
   * @param {JobRecord[]} records
   * @param {Set<number>} touched
   */
  snapshot(records, touched) {
    this.loaded = true;
    this.news = true;
    const ids = records.map((r) => r.id);
    const keep = new Set(ids);
    for (const id of this.window) {
      if (!keep.has(id)) {
        if (!this.watched.has(id)) this.jobs.delete(id);
        this.mark(id);
      }
    }
    for (const record of records) {
      if (record.state === "WAITING" || record.state === "RUNNING") this.states.set(record.id, record.state);
      if (!(touched.has(record.id) && this.jobs.has(record.id))) this.jobs.set(record.id, slim(record));
      this.mark(record.id);
    }
    this.window = ids;
    this.schedule();
  }

  /**
   * Fetch the window (on the first page) and the counts again soon, at most
   * once every {@link REFRESH_MS}.
   * @param {boolean} rows
   */
  refreshSoon(rows) {
    if (rows && this.query.page === 0) this.refreshRows = true;
    if (this.refreshTimer !== 0) return;
    const wait = Math.max(0, this.lastRefresh + REFRESH_MS - performance.now());
    this.refreshTimer = window.setTimeout(() => {
      this.refreshTimer = 0;
      const rowsToo = this.refreshRows;
      this.refreshRows = false;
      this.lastRefresh = performance.now();
      const counts = rowsToo ? this.load(false).then(() => this.loadCounts()) : this.loadCounts();
      counts.then(() => this.loadSummary()).catch(() => {});
    }, wait);
  }

  /**
   * One `collection_update` of `core.get_jobs` (the whole record in `fields`).
   * @param {{msg: string, id: number, fields?: JobRecord}} params
   * @param {number} received
   */
  event(params, received) {
    const id = params.id;
    if (typeof id !== "number") return;
    this.touched?.add(id);
    const inWindow = this.window.includes(id);
    const fields = params.fields;
    if (params.msg === "removed") {
      if (inWindow) {
        this.window = this.window.filter((w) => w !== id);
        this.refreshSoon(true);
      } else {
        this.refreshSoon(false);
      }
      if (this.all !== null) this.all -= 1;
      this.jobs.delete(id);
      this.watched.delete(id);
    } else if (fields) {
      const watch = this.watched.get(id);
      if (watch) watch.record = { ...(watch.record ?? {}), ...fields };
      const previous = this.jobs.get(id);
      if (previous) Object.assign(previous, slim(fields));
      const record = previous ? { ...fields, ...previous } : fields;
      if (params.msg === "added") {
        if (this.all !== null) this.all += 1;
        if (fits(this.query, record)) {
          if (this.total !== null) this.total += 1;
          if (this.query.page === 0 && newestFirst(this.query) && !inWindow) this.addOnTop(id, fields);
        }
        this.news = true;
      } else {
        const now = fits(this.query, record);
        const before = this.states.get(id);
        const moved = this.stateChanged(id, record.state);
        if (moved) this.summaryChanged(before, record);
        if (inWindow ? !now : now && moved && (this.query.state || this.query.q)) this.refreshSoon(true);
        else if (moved) this.refreshSoon(false);
      }
      if (params.msg === "added") {
        this.stateChanged(id, record.state);
        this.summaryChanged("", record);
      }
      if (!previous && watch) this.jobs.set(id, slim(watch.record ?? fields));
    }
    this.mark(id);
    this.received.push(received);
    this.schedule();
  }

  /**
   * Whether a job's state is another than the last event said (or than the
   * window's record); the states of jobs that have not ended are kept for
   * this, those of ended ones dropped (they change no more).
   * @param {number} id
   * @param {string} state
   * @returns {boolean}
   */
  stateChanged(id, state) {
    const before = this.states.get(id);
    if (state === "WAITING" || state === "RUNNING") this.states.set(id, state);
    else this.states.delete(id);
    return before !== state;
  }

  /**
   * A new job at the top of the window; the last row goes past its end.
   * @param {number} id
   * @param {JobRecord} fields
   */
  addOnTop(id, fields) {
    this.jobs.set(id, slim(fields));
    this.window.unshift(id);
    while (this.window.length > PAGE_SIZE) {
      const gone = /** @type {number} */ (this.window.pop());
      if (!this.watched.has(gone)) this.jobs.delete(gone);
      this.mark(gone);
    }
  }

  /**
   * A job that changed state counts in the summary at once (the refresh
   * that follows corrects anything this missed).
   * @param {string | undefined} before its state before (`""` for a new job; undefined: not known)
   * @param {JobRecord} after
   */
  summaryChanged(before, after) {
    const summary = this.summary;
    if (!summary || before === undefined) return;
    if (summary.node && after.node !== summary.node) return;
    if (before === "RUNNING") summary.running = Math.max(0, summary.running - 1);
    if (before === "WAITING") summary.waiting = Math.max(0, summary.waiting - 1);
    if (after.state === "RUNNING") summary.running += 1;
    if (after.state === "WAITING") summary.waiting += 1;
    if (shownState(after) === "FAILED" && after.state !== before) summary.failed += 1;
    this.news = true;
  }

  /** @param {number} id */
  mark(id) {
    this.dirty.add(id);
  }

  schedule() {
    if (this.frame === 0 && (this.dirty.size > 0 || this.news)) {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  /** Tell the listeners what changed since the last frame. */
  flush() {
    this.frame = 0;
    this.news = false;
    const ids = this.dirty;
    const received = this.received;
    this.dirty = new Set();
    this.received = [];
    for (const listener of this.listeners) listener(ids, received);
    if (received.length > 0) {
      // For measuring (bench/webui.py): the DOM now shows these events.
      document.dispatchEvent(new CustomEvent("midjobs:applied", { detail: { received, jobs: ids.size } }));
    }
  }

  /**
   * Keep the whole record of a job (for a view that shows more than the list)
   * until {@link unwatch}.  Fetches it; events keep it current.
   * @param {number} id
   * @returns {Promise<JobRecord | null>} the record, or null if there is no such job
   */
  async watch(id) {
    const watch = this.watched.get(id) ?? { record: null, count: 0 };
    watch.count += 1;
    this.watched.set(id, watch);
    const records = await this.rpc.call("core.get_jobs", [[["id", "=", id]]]);
    const current = this.watched.get(id);
    if (current && records.length > 0) {
      // Fields an event brought meanwhile are newer than the fetched ones.
      current.record = { ...records[0], ...(current.record ?? {}) };
      if (!this.jobs.has(id)) this.jobs.set(id, slim(current.record));
      this.mark(id);
      this.schedule();
    }
    return current?.record ?? null;
  }

  /**
   * After a reconnection: drop the watched records (events were missed
   * meanwhile), to fetch them again with {@link refreshWatched} once
   * subscribed again.  Call it before subscribing again: events that come
   * after are newer than anything before the connection was lost.
   */
  forgetWatched() {
    for (const watch of this.watched.values()) watch.record = null;
  }

  /** Fetch the watched jobs' records again (after {@link forgetWatched}). */
  async refreshWatched() {
    await Promise.all([...this.watched.keys()].map(async (id) => {
      const records = await this.rpc.call("core.get_jobs", [[["id", "=", id]]]);
      const watch = this.watched.get(id);
      if (watch && records.length > 0) {
        watch.record = { ...records[0], ...(watch.record ?? {}) };
        this.mark(id);
      }
    }));
    this.schedule();
  }

  /** @param {number} id */
  unwatch(id) {
    const watch = this.watched.get(id);
    if (!watch) return;
    watch.count -= 1;
    if (watch.count <= 0) this.watched.delete(id);
  }

  /**
   * The whole record of a watched job, else the list's fields.
   * @param {number} id
   * @returns {JobRecord | undefined}
   */
  full(id) {
    return this.watched.get(id)?.record ?? this.jobs.get(id);
  }

  /** Forget everything (logging out). */
  async stop() {
    const sub = this.subscription;
    this.subscription = null;
    if (sub) await sub.unsubscribe();
    for (const id of this.jobs.keys()) this.dirty.add(id);
    this.generation += 1;
    if (this.refreshTimer !== 0) clearTimeout(this.refreshTimer);
    this.refreshTimer = 0;
    this.jobs.clear();
    this.window = [];
    this.shown = null;
    this.states.clear();
    this.watched.clear();
    this.total = null;
    this.all = null;
    this.summary = null;
    this.loaded = false;
    this.news = true;
    this.schedule();
  }
}
