/**
 * The job list: one page of the jobs that match the filters, in the chosen
 * order, as the daemon answers them (jobstore.js), with the filter form, the
 * sortable column headers, the pager, the count and the summary above it.
 *
 * In a cluster of daemons each job ran on one node: the list has a Node
 * column and a node filter, and the cluster line above it lists the nodes
 * (cluster.js).  They show once the page knows of more than one node (from
 * `cluster.nodes` or from the jobs it listed), or the list is of one node: a
 * daemon alone, whose jobs all ran on it, shows neither.
 *
 * What the list shows is a {@link ListQuery}, kept in the URL's fragment:
 * every control writes the fragment, and the page shows what the fragment
 * says (main.js hands it to {@link JobListView#apply}).
 *
 * Each frame it touches only the rows of the jobs that changed, and in those
 * only the cells whose text changed.  The rows are an ARIA table of CSS grid
 * rows, not a `<table>`: a change in one row then lays out that row alone.
 * @module joblist
 */

import { ClusterLine } from "./cluster.js";
import { byId, el, setText } from "./dom.js";
import { dateMs, formatDuration, formatTime, isCutOff, jobDuration } from "./format.js";
import { PAGE_SIZE, SORTS, isFiltered, queryHash, queryTitle } from "./listquery.js";
import { ProgressView } from "./progress.js";
import { StateBadge, shownState } from "./states.js";

/**
 * The cells of one row, and the values they show.
 * @typedef {{
 *   tr: HTMLElement, method: HTMLElement, description: HTMLElement, descText: HTMLElement, error: HTMLElement,
 *   state: StateBadge, progress: ProgressView, started: HTMLTimeElement, duration: HTMLElement,
 *   node: HTMLElement, user: HTMLElement, startedMs: number | null
 * }} Row
 * @typedef {import("./listquery.js").ListQuery} ListQuery
 */

/** The column labels, shown beside each value when rows become cards at phone width. */
const LABELS = {
  id: "ID", method: "Method", description: "Description", state: "State",
  progress: "Progress", started: "Started", duration: "Duration", node: "Node", user: "Started by",
};

/** Columns sorted newest or largest first on their first click. */
const DESCENDING_FIRST = new Set(["id", "started"]);

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

/**
 * `1,234`
 * @param {number} n
 * @returns {string}
 */
const num = (n) => n.toLocaleString("en-US");

/**
 * A `datetime-local` value for a time (local time, to the minute).
 * @param {number} ms
 * @returns {string}
 */
export function localInput(ms) {
  const d = new Date(ms);
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export class JobListView {
  /**
   * @param {import("./jobstore.js").JobStore} store
   * @param {(query: ListQuery, replace?: boolean) => void} navigate show another query (through the URL)
   */
  constructor(store, navigate) {
    this.store = store;
    this.navigate = navigate;
    this.body = byId("jobs-body");
    this.table = byId("jobs-table");
    this.count = byId("jobs-count");
    this.empty = byId("jobs-empty");
    this.pager = byId("jobs-pager");
    this.pageText = byId("jobs-page");
    this.first = /** @type {HTMLButtonElement} */ (byId("jobs-first"));
    this.prev = /** @type {HTMLButtonElement} */ (byId("jobs-prev"));
    this.next = /** @type {HTMLButtonElement} */ (byId("jobs-next"));
    this.stateFilter = /** @type {HTMLSelectElement} */ (byId("filter-state"));
    this.methodFilter = /** @type {HTMLSelectElement} */ (byId("filter-method"));
    this.userFilter = /** @type {HTMLInputElement} */ (byId("filter-user"));
    this.nodeFilter = /** @type {HTMLSelectElement} */ (byId("filter-node"));
    this.nodeField = byId("filter-node-field");
    this.fromFilter = /** @type {HTMLInputElement} */ (byId("filter-from"));
    this.toFilter = /** @type {HTMLInputElement} */ (byId("filter-to"));
    this.search = /** @type {HTMLInputElement} */ (byId("filter-search"));
    this.clear = /** @type {HTMLButtonElement} */ (byId("filter-clear"));
    this.summary = {
      running: /** @type {HTMLAnchorElement} */ (byId("summary-running")),
      waiting: /** @type {HTMLAnchorElement} */ (byId("summary-waiting")),
      failed: /** @type {HTMLAnchorElement} */ (byId("summary-failed")),
    };
    this.summaryScope = byId("summary-scope");
    this.cluster = new ClusterLine();
    /** @type {import("./cluster.js").ClusterNode[]} the nodes of the cluster, as last fetched */
    this.nodes = [];
    /** @type {Set<string>} the node names the filter offers: the cluster's, and those of the jobs listed */
    this.nodeNames = new Set();
    /** @type {Map<number, Row>} */
    this.rows = new Map();
    /** @type {Set<number>} the rows whose duration runs on */
    this.running = new Set();
    /** @type {Set<string>} */
    this.methods = new Set();
    /** @type {number | null} the job last opened from the list, marked when back */
    this.selected = null;

    store.listen((ids) => this.update(ids));
    for (const control of [
      this.stateFilter, this.methodFilter, this.userFilter, this.nodeFilter, this.fromFilter, this.toFilter,
    ]) {
      control.addEventListener("change", () => this.readFilters(false));
    }
    /** @type {number | null} */
    let typing = null;
    this.search.addEventListener("input", () => {
      if (typing !== null) clearTimeout(typing);
      typing = setTimeout(() => {
        typing = null;
        // Typing replaces the history entry: back leaves the search, not each letter of it.
        this.readFilters(this.store.query.q !== "");
      }, 200);
    });
    byId("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      this.readFilters(false);
    });
    this.clear.addEventListener("click", () => {
      this.navigate({ ...this.store.query, state: "", method: "", user: "", node: "", from: "", to: "", q: "", page: 0 });
    });
    for (const header of this.table.querySelectorAll("[data-sort]")) {
      const button = header.querySelector("button");
      button?.addEventListener("click", () => this.sortBy(/** @type {HTMLElement} */ (header).dataset.sort ?? "id"));
    }
    this.first.addEventListener("click", () => this.toPage(0));
    this.prev.addEventListener("click", () => this.toPage(this.store.query.page - 1));
    this.next.addEventListener("click", () => this.toPage(this.store.query.page + 1));
    this.body.addEventListener("click", (event) => {
      const link = /** @type {HTMLElement} */ (event.target).closest?.("a[data-job]");
      if (!link) return;
      // Mark the job opened, so that it stands out when back on the list.
      if (this.selected !== null) this.rows.get(this.selected)?.tr.classList.remove("selected");
      this.selected = Number(/** @type {HTMLElement} */ (link).dataset.job);
      this.rows.get(this.selected)?.tr.classList.add("selected");
    });
    setInterval(() => this.tick(), 1000);
  }

  /**
   * Show a query: the controls say it, the store fetches it.
   * @param {ListQuery} query
   * @returns {Promise<void>}
   */
  apply(query) {
    this.stateFilter.value = query.state;
    if (query.method && !this.methods.has(query.method)) this.addMethod(query.method);
    this.methodFilter.value = query.method;
    if (document.activeElement !== this.userFilter) this.userFilter.value = query.user;
    if (query.node && !this.nodeNames.has(query.node)) this.addNode(query.node);
    this.nodeFilter.value = query.node;
    this.showNodes(query);
    this.fromFilter.value = query.from;
    this.toFilter.value = query.to;
    if (document.activeElement !== this.search) this.search.value = query.q;
    this.clear.hidden = !isFiltered(query);
    for (const header of this.table.querySelectorAll("[data-sort]")) {
      const key = /** @type {HTMLElement} */ (header).dataset.sort;
      const sort = query.sort.replace(/^-/, "");
      if (key === sort) header.setAttribute("aria-sort", query.sort.startsWith("-") ? "descending" : "ascending");
      else header.setAttribute("aria-sort", "none");
    }
    this.table.setAttribute("aria-label", `Jobs, by ${SORTS[query.sort.replace(/^-/, "")]?.label ?? "ID"}`);
    document.title = queryTitle(query);
    const same = queryHash(query) === queryHash(this.store.query) && this.store.loaded;
    if (same) {
      this.showCount();
      return Promise.resolve();
    }
    this.table.setAttribute("aria-busy", "true");
    return this.store.setQuery(query)
      .catch((error) => {
        // The daemon refused or the connection went: say so (a reconnection loads again).
        setText(this.count, `Could not load the jobs: ${error.message}`);
      })
      .finally(() => this.table.removeAttribute("aria-busy"));
  }

  /** @returns {string} the title of the list as it is now */
  title() {
    return queryTitle(this.store.query);
  }

  /** @param {boolean} replace */
  readFilters(replace) {
    this.navigate({
      ...this.store.query,
      state: this.stateFilter.value,
      method: this.methodFilter.value,
      user: this.userFilter.value.trim(),
      node: this.nodeFilter.value,
      from: this.fromFilter.value,
      to: this.toFilter.value,
      q: this.search.value.trim(),
      page: 0,
    }, replace);
  }

  /** @param {string} key */
  sortBy(key) {
    const current = this.store.query.sort;
    let sort;
    if (current.replace(/^-/, "") === key) sort = current.startsWith("-") ? key : `-${key}`;
    else sort = DESCENDING_FIRST.has(key) ? `-${key}` : key;
    this.navigate({ ...this.store.query, sort, page: 0 });
  }

  /** @param {number} page */
  toPage(page) {
    this.navigate({ ...this.store.query, page: Math.max(0, page) });
    window.scrollTo(0, 0);
  }

  /**
   * Bring the rows of these jobs up to date, and put the rows in the window's order.
   * @param {Set<number>} ids
   */
  update(ids) {
    const store = this.store;
    const inWindow = new Set(store.window);
    for (const id of ids) {
      const job = store.jobs.get(id);
      if (job && inWindow.has(id)) this.render(id, job);
      else this.remove(id);
    }
    // Order: move only the rows out of place (none, for a change of progress).
    let expected = this.body.firstElementChild;
    for (const id of store.window) {
      const row = this.rows.get(id);
      if (!row) continue;
      if (row.tr !== expected) this.body.insertBefore(row.tr, expected);
      else expected = expected.nextElementSibling;
    }
    this.showCount();
    this.showSummary();
    // Which query the rows show (for tests and bench/webui.py: the filtered page is on screen).
    if (store.shown) this.table.dataset.query = queryHash(store.shown);
  }

  /**
   * @param {number} id
   * @param {import("./jobstore.js").JobRecord} job
   */
  render(id, job) {
    let row = this.rows.get(id);
    if (!row) row = this.add(id);
    setText(row.method, job.method ?? "");
    setText(row.descText, job.description ?? "");
    const state = shownState(job);
    row.state.set(state);
    row.progress.update(job, state);
    // A failed job's error, in the list.
    const error = state === "FAILED" ? job.error ?? "" : "";
    setText(row.error, error);
    row.error.hidden = error === "";
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
    setText(row.node, job.node ?? "");
    if (job.node && !this.nodeNames.has(job.node)) {
      this.addNode(job.node);
      this.showNodes(this.store.query);
    }
    setText(row.user, job.credentials?.data?.username ?? (job.credentials ? "" : "the daemon"));
    row.tr.classList.toggle("selected", id === this.selected);
    if (job.state === "RUNNING") this.running.add(id);
    else this.running.delete(id);
    if (job.method && !this.methods.has(job.method)) this.addMethod(job.method);
  }

  /**
   * A new row (update() puts it in its place).
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
    link.dataset.job = String(id);
    link.setAttribute("aria-label", `Job ${id}: details`);
    idCell.append(link);
    const method = cell("c-method", LABELS.method);
    const description = cell("c-desc", LABELS.description);
    const descText = el("span", "desc-text");
    const error = el("span", "row-error");
    error.hidden = true;
    description.append(descText, error);
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
    const node = cell("c-node", LABELS.node);
    const user = cell("c-user", LABELS.user);
    tr.append(idCell, method, description, stateCell, progressCell, startedCell, duration, node, user);
    this.body.append(tr);
    /** @type {Row} */
    const row = {
      tr, method, description, descText, error, state, progress, started, duration, node, user, startedMs: null,
    };
    this.rows.set(id, row);
    return row;
  }

  /** @param {number} id */
  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    row.tr.remove();
    this.rows.delete(id);
    this.running.delete(id);
  }

  /** @param {string} method */
  addMethod(method) {
    this.methods.add(method);
    const option = /** @type {HTMLOptionElement} */ (el("option", "", method));
    option.value = method;
    const after = [...this.methodFilter.options].slice(1).find((o) => o.value > method);
    this.methodFilter.insertBefore(option, after ?? null);
  }

  /** @param {string} name */
  addNode(name) {
    this.nodeNames.add(name);
    const option = /** @type {HTMLOptionElement} */ (el("option", "", name));
    option.value = name;
    const after = [...this.nodeFilter.options].slice(1).find((o) => o.value > name);
    this.nodeFilter.insertBefore(option, after ?? null);
  }

  /**
   * The nodes of the cluster (`cluster.nodes`): the filter offers them, the
   * cluster line lists them.
   * @param {import("./cluster.js").ClusterNode[]} nodes
   */
  setNodes(nodes) {
    this.nodes = nodes;
    for (const node of nodes) if (!this.nodeNames.has(node.name)) this.addNode(node.name);
    this.nodeFilter.value = this.store.query.node;
    this.showNodes(this.store.query);
  }

  /**
   * The Node column, the node filter and the cluster line: shown once more
   * than one node is known, or when the list is of one node.
   * @param {ListQuery} query
   */
  showNodes(query) {
    const shown = this.nodeNames.size > 1 || query.node !== "";
    this.table.classList.toggle("with-node", shown);
    this.nodeField.hidden = !shown;
    this.cluster.show(this.nodes, query);
  }

  /**
   * The job methods the filter offers (from `core.get_methods`), beside those seen in rows.
   * @param {Record<string, {job?: boolean}>} methods
   */
  setMethods(methods) {
    for (const [name, info] of Object.entries(methods)) {
      if (info.job && !this.methods.has(name)) this.addMethod(name);
    }
    this.methodFilter.value = this.store.query.method;
  }

  /** The count: what is shown, out of how many. */
  showCount() {
    const store = this.store;
    if (!store.loaded) {
      // Nothing to count yet: say so rather than show an empty list.
      setText(this.count, "Loading jobs…");
      this.empty.hidden = true;
      this.table.hidden = this.rows.size === 0;
      this.pager.hidden = true;
      return;
    }
    const query = store.query;
    const shown = store.window.length;
    const total = store.total;
    const filtered = isFiltered(query);
    const firstShown = query.page * PAGE_SIZE + 1;
    const lastShown = query.page * PAGE_SIZE + shown;
    /** @param {number} n */
    const jobs = (n) => (n === 1 ? "job" : "jobs");
    let text;
    if (total === null) {
      text = shown === 0 ? "Counting…" : `${num(firstShown)}–${num(lastShown)} of … jobs`;
    } else if (query.page === 0 && shown >= total) {
      // All of them on this page.
      if (!filtered) text = `${num(total)} ${jobs(total)}`;
      else text = `${num(total)} of ${store.all === null ? "…" : num(store.all)} ${jobs(store.all ?? 2)}`;
    } else if (shown === 0) {
      text = `None here: ${num(total)} ${jobs(total)}${filtered ? " matching" : ""}`;
    } else {
      text = `${num(firstShown)}–${num(lastShown)} of ${num(total)} ${jobs(total)}${filtered ? " matching" : ""}`;
    }
    setText(this.count, text);
    // No bare column headers: the table shows only with rows in it.
    this.table.hidden = shown === 0;
    this.empty.hidden = shown > 0;
    const none = !filtered && query.page === 0 && (store.all === 0 || total === 0);
    setText(this.empty, none ? NO_JOBS : query.page > 0 ? "No jobs on this page." : "No jobs match the filters.");
    // The pager.
    const pages = total === null ? null : Math.max(1, Math.ceil(total / PAGE_SIZE));
    const more = total === null ? shown >= PAGE_SIZE : lastShown < total;
    this.pager.hidden = query.page === 0 && !more;
    this.first.disabled = query.page === 0;
    this.prev.disabled = query.page === 0;
    this.next.disabled = !more;
    setText(this.pageText, pages === null ? `Page ${num(query.page + 1)}` : `Page ${num(query.page + 1)} of ${num(pages)}`);
  }

  /** The summary above the list: running, waiting, failed in the last 24 hours. */
  showSummary() {
    const summary = this.store.summary;
    byId("summary").hidden = summary === null;
    if (summary === null) return;
    // The counts are of the list's node, if it has one: so are the lists they link to.
    this.summaryScope.hidden = summary.node === "";
    setText(this.summaryScope, summary.node ? `On ${summary.node}:` : "");
    const base = { ...this.store.query, method: "", user: "", node: summary.node, from: "", to: "", q: "", page: 0 };
    const link = (/** @type {HTMLAnchorElement} */ a, /** @type {number} */ n, /** @type {any} */ query) => {
      setText(/** @type {HTMLElement} */ (a.querySelector(".n")), num(n));
      const href = `#${queryHash(query)}`;
      if (a.getAttribute("href") !== href) a.setAttribute("href", href);
    };
    link(this.summary.running, summary.running, { ...base, state: "RUNNING" });
    link(this.summary.waiting, summary.waiting, { ...base, state: "WAITING" });
    // The last 24 hours, to the minute (so the link stays the same for a minute).
    const since = localInput(Math.floor((Date.now() - 86400_000) / 60_000) * 60_000);
    link(this.summary.failed, summary.failed, { ...base, state: "FAILED", from: since });
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
}
