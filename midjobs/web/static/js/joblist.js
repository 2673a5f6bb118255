/**
 * The job list: rows newest first, filtered by state and method and
 * searched in descriptions.  Each frame it touches only the rows of the jobs
 * that changed, and in those only the cells whose text changed.  The rows are
 * an ARIA table of CSS grid rows, not a `<table>`: a change in one row then
 * lays out that row alone, and rows off screen are not rendered at all.
 * @module joblist
 */

import { byId, el, setText } from "./dom.js";
import { dateMs, formatDuration, formatTime, isCutOff, jobDuration } from "./format.js";
import { ProgressView } from "./progress.js";
import { StateBadge, shownState } from "./states.js";

/**
 * The cells of one row, and the values they show.
 * @typedef {{
 *   tr: HTMLElement, method: HTMLElement, description: HTMLElement,
 *   state: StateBadge, progress: ProgressView, started: HTMLTimeElement, duration: HTMLElement,
 *   startedMs: number | null, visible: boolean
 * }} Row
 */

/** The column labels, shown beside each value when rows become cards at phone width. */
const LABELS = {
  id: "ID", method: "Method", description: "Description", state: "State",
  progress: "Progress", started: "Started", duration: "Duration",
};

/**
 * @param {string} className
 * @param {string} label
 * @returns {HTMLElement}
 */
function cell(className, label) {
  const td = el("div", className);
  td.setAttribute("role", "cell");
  td.dataset.label = label;
  return td;
}

/** What the list says when the user has no jobs at all. */
const NO_JOBS =
  "No jobs yet. The jobs you start (from Upload or Download here, or with midclt or any other client) " +
  "appear here as soon as they are queued.";

/**
 * The duration cell's text: the time run, or why there is none.
 * @param {import("./jobstore.js").JobRecord} job
 * @returns {string}
 */
function durationText(job) {
  if (isCutOff(job)) return "unknown";
  return formatDuration(jobDuration(job));
}

export class JobListView {
  /** @param {import("./jobstore.js").JobStore} store */
  constructor(store) {
    this.store = store;
    this.body = byId("jobs-body");
    this.table = byId("jobs-table");
    this.count = byId("jobs-count");
    this.empty = byId("jobs-empty");
    this.older = /** @type {HTMLButtonElement} */ (byId("jobs-older"));
    this.stateFilter = /** @type {HTMLSelectElement} */ (byId("filter-state"));
    this.methodFilter = /** @type {HTMLSelectElement} */ (byId("filter-method"));
    this.search = /** @type {HTMLInputElement} */ (byId("filter-search"));
    /** @type {Map<number, Row>} */
    this.rows = new Map();
    /** @type {number[]} the ids of the rows, in their order (descending) */
    this.order = [];
    /** @type {Set<number>} the rows whose duration runs on */
    this.running = new Set();
    /** @type {Set<string>} */
    this.methods = new Set();
    this.visibleCount = 0;
    this.filter = { state: "", method: "", text: "" };

    store.listen((ids) => this.update(ids));
    this.stateFilter.addEventListener("change", () => this.readFilters());
    this.methodFilter.addEventListener("change", () => this.readFilters());
    /** @type {number | null} */
    let typing = null;
    this.search.addEventListener("input", () => {
      if (typing !== null) clearTimeout(typing);
      typing = setTimeout(() => {
        typing = null;
        this.readFilters();
      }, 120);
    });
    byId("filters").addEventListener("submit", (event) => event.preventDefault());
    this.older.addEventListener("click", () => this.loadOlder());
    setInterval(() => this.tick(), 1000);
  }

  /**
   * Bring the rows of these jobs up to date.
   * @param {Set<number>} ids
   */
  update(ids) {
    for (const id of ids) {
      const job = this.store.jobs.get(id);
      if (job) this.render(id, job);
      else this.remove(id);
    }
    this.showCount();
  }

  /**
   * @param {number} id
   * @param {import("./jobstore.js").JobRecord} job
   */
  render(id, job) {
    let row = this.rows.get(id);
    if (!row) row = this.add(id);
    setText(row.method, job.method ?? "");
    setText(row.description, job.description ?? "");
    const state = shownState(job);
    row.state.set(state);
    row.progress.update(job, state);
    // A waiting job has not started: its time_started is when it was queued.
    const started = job.state === "WAITING" ? null : dateMs(job.time_started);
    if (started !== row.startedMs) {
      row.startedMs = started;
      row.started.dateTime = started === null ? "" : new Date(started).toISOString();
      setText(row.started, formatTime(started));
    }
    setText(row.duration, durationText(job));
    const why = isCutOff(job) ? "Cut off when the daemon stopped: how long it ran is not known" : "";
    if (row.duration.title !== why) row.duration.title = why;
    if (job.state === "RUNNING") this.running.add(id);
    else this.running.delete(id);
    if (job.method && !this.methods.has(job.method)) this.addMethod(job.method);
    this.setVisible(row, this.matches(job));
  }

  /**
   * A new row, in its place (newest first).
   * @param {number} id
   * @returns {Row}
   */
  add(id) {
    const tr = el("div", "jobs-row");
    tr.setAttribute("role", "row");
    tr.dataset.id = String(id);
    const idCell = cell("c-id", LABELS.id);
    const link = /** @type {HTMLAnchorElement} */ (el("a", "", String(id)));
    link.href = `#job/${id}`;
    link.setAttribute("aria-label", `Job ${id}: details`);
    idCell.append(link);
    const method = cell("c-method", LABELS.method);
    const description = cell("c-desc", LABELS.description);
    const stateCell = cell("c-state", LABELS.state);
    const state = new StateBadge();
    stateCell.append(state.root);
    const progressCell = cell("c-progress", LABELS.progress);
    const progress = new ProgressView(undefined, `Job ${id} progress`);
    progressCell.append(progress.root);
    const startedCell = cell("c-start", LABELS.started);
    const started = /** @type {HTMLTimeElement} */ (el("time"));
    startedCell.append(started);
    const duration = cell("c-duration", LABELS.duration);
    tr.append(idCell, method, description, stateCell, progressCell, startedCell, duration);

    // Binary search for the first row with a smaller id.
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.order[mid] > id) lo = mid + 1;
      else hi = mid;
    }
    const before = lo < this.order.length ? this.rows.get(this.order[lo])?.tr ?? null : null;
    this.body.insertBefore(tr, before);
    this.order.splice(lo, 0, id);
    /** @type {Row} */
    const row = { tr, method, description, state, progress, started, duration, startedMs: null, visible: true };
    this.rows.set(id, row);
    this.visibleCount += 1;
    return row;
  }

  /** @param {number} id */
  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    row.tr.remove();
    this.rows.delete(id);
    this.running.delete(id);
    if (row.visible) this.visibleCount -= 1;
    const at = this.order.indexOf(id);
    if (at >= 0) this.order.splice(at, 1);
  }

  /**
   * @param {Row} row
   * @param {boolean} visible
   */
  setVisible(row, visible) {
    if (row.visible === visible) return;
    row.visible = visible;
    row.tr.hidden = !visible;
    this.visibleCount += visible ? 1 : -1;
  }

  /**
   * @param {import("./jobstore.js").JobRecord} job
   * @returns {boolean}
   */
  matches(job) {
    const { state, method, text } = this.filter;
    if (state && shownState(job) !== state) return false;
    if (method && job.method !== method) return false;
    if (text && !(job.description ?? "").toLowerCase().includes(text)) return false;
    return true;
  }

  readFilters() {
    this.filter = {
      state: this.stateFilter.value,
      method: this.methodFilter.value,
      text: this.search.value.trim().toLowerCase(),
    };
    for (const [id, row] of this.rows) {
      const job = this.store.jobs.get(id);
      if (job) this.setVisible(row, this.matches(job));
    }
    this.showCount();
  }

  /** @param {string} method */
  addMethod(method) {
    this.methods.add(method);
    const option = /** @type {HTMLOptionElement} */ (el("option", "", method));
    option.value = method;
    const after = [...this.methodFilter.options].slice(1).find((o) => o.value > method);
    this.methodFilter.insertBefore(option, after ?? null);
  }

  showCount() {
    if (!this.store.loaded) {
      // Nothing to count yet: say so rather than show an empty list.
      setText(this.count, "Loading jobs…");
      this.empty.hidden = true;
      this.table.hidden = this.rows.size === 0;
      this.older.hidden = true;
      return;
    }
    const total = this.rows.size;
    const shown = this.visibleCount;
    const jobs = total === 1 ? "job" : "jobs";
    setText(this.count, shown === total ? `${total} ${jobs}` : `${shown} of ${total} ${jobs}`);
    // No bare column headers: the table shows only with rows in it.
    this.table.hidden = shown === 0;
    this.empty.hidden = shown > 0;
    setText(this.empty, total === 0 ? NO_JOBS : "No jobs match the filters.");
    this.older.hidden = !this.store.mayHaveOlder;
  }

  /** Let the durations of running jobs run on. */
  tick() {
    if (document.hidden) return;
    const now = Date.now();
    for (const id of this.running) {
      const job = this.store.jobs.get(id);
      const row = this.rows.get(id);
      if (job && row) setText(row.duration, formatDuration(jobDuration(job, now)));
    }
  }

  async loadOlder() {
    this.older.disabled = true;
    try {
      await this.store.loadOlder();
    } catch {
      // The connection went; the button stays for another try.
    } finally {
      this.older.disabled = false;
    }
  }
}
