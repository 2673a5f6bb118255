/**
 * The jobs the user may see, kept live from `core.get_jobs` and its events.
 *
 * Changes are applied to the store as they arrive and told to the views once
 * per animation frame, with the set of jobs that changed: however many events
 * come in, a view does one DOM update per frame, and only for those jobs.
 * @module jobstore
 */

import { FINISHED } from "./states.js";

/** The fields the list needs; the store keeps only these for each job. */
export const LIST_FIELDS = [
  "id", "method", "description", "state", "progress", "time_started", "time_finished",
  "abortable", "logs_path", "error", "exc_info",
];

/** How many jobs the first `core.get_jobs` asks for (the newest). */
export const FIRST_PAGE = 2000;
/** How many more each "load older" asks for. */
export const OLDER_PAGE = 1000;

/**
 * @typedef {Record<string, any>} JobRecord
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

export class JobStore {
  /** @param {import("./rpc.js").RpcClient} rpc */
  constructor(rpc) {
    this.rpc = rpc;
    /** @type {Map<number, JobRecord>} the list's fields of each job */
    this.jobs = new Map();
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
    /** The most jobs kept: the oldest finished ones go past it. */
    this.capacity = FIRST_PAGE;
    /** Whether older jobs than those listed may exist. */
    this.mayHaveOlder = false;
    /** Whether the first snapshot is in (until then the list cannot say it is empty). */
    this.loaded = false;
    /** Whether the listeners must hear of the next frame even if no job changed (a snapshot came). */
    this.news = false;
    /** @type {Set<number> | null} jobs told by events while a snapshot is on its way */
    this.touched = null;
    /** @type {import("./rpc.js").Subscription | null} */
    this.subscription = null;
  }

  /** @param {FrameListener} listener */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Subscribe to `core.get_jobs` and load the newest jobs.  The subscription
   * comes first, so no change falls between the snapshot and the events.
   */
  async start() {
    if (this.subscription === null) {
      this.subscription = await this.rpc.subscribe("core.get_jobs", (params, received) =>
        this.event(params, received));
    }
    await this.load();
  }

  /**
   * Load the newest jobs again (after a reconnection; the subscription was
   * made again by then).
   */
  async load() {
    this.touched = new Set();
    try {
      const records = await this.rpc.call("core.get_jobs", [
        [], { order_by: ["-id"], limit: this.capacity, select: LIST_FIELDS },
      ]);
      this.mayHaveOlder = records.length >= this.capacity;
      this.snapshot(records);
    } finally {
      this.touched = null;
    }
  }

  /** Load the next page of older jobs than those listed. */
  async loadOlder() {
    let oldest = Infinity;
    for (const id of this.jobs.keys()) oldest = Math.min(oldest, id);
    const filters = oldest === Infinity ? [] : [["id", "<", oldest]];
    const records = await this.rpc.call("core.get_jobs", [
      filters, { order_by: ["-id"], limit: OLDER_PAGE, select: LIST_FIELDS },
    ]);
    this.mayHaveOlder = records.length >= OLDER_PAGE;
    this.capacity += records.length;
    this.snapshot(records);
  }

  /**
   * Apply records from `core.get_jobs`.  A job that an event told about
   * meanwhile keeps the event's record: every change sends an event, so the
   * last event of a job is never older than the snapshot's record.
   * @param {JobRecord[]} records
   */
  snapshot(records) {
    this.loaded = true;
    this.news = true;
    for (const record of records) {
      if (this.touched?.has(record.id)) continue;
      this.jobs.set(record.id, slim(record));
      this.mark(record.id);
    }
    this.schedule();
  }

  /**
   * One `collection_update` of `core.get_jobs`.
   * @param {{msg: string, id: number, fields?: JobRecord}} params
   * @param {number} received
   */
  event(params, received) {
    const id = params.id;
    if (typeof id !== "number") return;
    this.touched?.add(id);
    if (params.msg === "removed") {
      this.jobs.delete(id);
    } else if (params.fields) {
      const fields = params.fields;
      const previous = this.jobs.get(id);
      this.jobs.set(id, previous ? Object.assign(previous, slim(fields)) : slim(fields));
      const watch = this.watched.get(id);
      if (watch) watch.record = { ...(watch.record ?? {}), ...fields };
    }
    this.mark(id);
    this.received.push(received);
    this.schedule();
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
    this.evict();
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

  /** Drop the oldest finished jobs beyond the capacity (the history keeps them). */
  evict() {
    let excess = this.jobs.size - this.capacity;
    if (excess <= 0) return;
    const ids = [...this.jobs.keys()].sort((a, b) => a - b);
    for (const id of ids) {
      if (excess <= 0) break;
      if (this.watched.has(id) || !FINISHED.has(this.jobs.get(id)?.state)) continue;
      this.jobs.delete(id);
      this.dirty.add(id);
      this.mayHaveOlder = true;
      excess -= 1;
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
    this.jobs.clear();
    this.watched.clear();
    this.capacity = FIRST_PAGE;
    this.mayHaveOlder = false;
    this.loaded = false;
    this.news = true;
    this.schedule();
  }
}
