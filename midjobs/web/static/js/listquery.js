/**
 * What the job list shows, as one value: the filters, the sort and the page.
 * It is written in the URL's fragment (`#jobs?state=FAILED&sort=method&page=2`),
 * so that a reload, the back button, a bookmark or a shared link shows the
 * same list, and it is turned into the `core.get_jobs` query the daemon
 * answers: filtering, sorting and paging all happen there, never over rows
 * the page would have to hold.
 * @module listquery
 */

/** Rows on one page of the list. */
export const PAGE_SIZE = 100;

/** The default sort: newest first. */
export const DEFAULT_SORT = "-id";

/**
 * @typedef {{
 *   state: string, method: string, user: string, node: string, from: string, to: string,
 *   q: string, sort: string, page: number
 * }} ListQuery
 * `node` is the name of a node of the cluster (the jobs that ran there);
 * `from` and `to` are local date-times as a `datetime-local` field gives them
 * (`2026-12-05T13:00`); `sort` is a column key, `-` first for descending;
 * `page` counts from 0.
 */

/**
 * The sortable columns: their key in the URL, the record's field the daemon
 * sorts on, and the label said in the page's title.
 * @type {Record<string, {field: string, label: string}>}
 */
export const SORTS = {
  id: { field: "id", label: "ID" },
  method: { field: "method", label: "method" },
  description: { field: "description", label: "description" },
  state: { field: "state", label: "state" },
  started: { field: "time_started", label: "start time" },
  user: { field: "credentials.data.username", label: "user" },
  node: { field: "node", label: "node" },
};

/** @returns {ListQuery} */
export function emptyQuery() {
  return { state: "", method: "", user: "", node: "", from: "", to: "", q: "", sort: DEFAULT_SORT, page: 0 };
}

const STATES = new Set(["WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED"]);

/**
 * The list's query from a fragment's query string (what follows `jobs?`).
 * Anything unknown or malformed is left at its default.
 * @param {string} search
 * @returns {ListQuery}
 */
export function parseQuery(search) {
  const params = new URLSearchParams(search);
  const query = emptyQuery();
  const state = params.get("state") ?? "";
  if (STATES.has(state)) query.state = state;
  for (const key of /** @type {const} */ (["method", "user", "node", "q"])) query[key] = params.get(key) ?? "";
  for (const key of /** @type {const} */ (["from", "to"])) {
    const value = params.get(key) ?? "";
    if (/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(value)) query[key] = value;
  }
  const sort = params.get("sort") ?? "";
  if (sort && SORTS[sort.replace(/^-/, "")]) query.sort = sort;
  const page = Number(params.get("page") ?? "1");
  if (Number.isInteger(page) && page >= 1) query.page = page - 1;
  return query;
}

/**
 * The fragment for a query: `jobs`, or `jobs?` with what differs from the defaults.
 * @param {ListQuery} query
 * @returns {string}
 */
export function queryHash(query) {
  const params = new URLSearchParams();
  for (const key of /** @type {const} */ (["state", "method", "user", "node", "from", "to", "q"])) {
    if (query[key]) params.set(key, query[key]);
  }
  if (query.sort !== DEFAULT_SORT) params.set("sort", query.sort);
  if (query.page > 0) params.set("page", String(query.page + 1));
  const text = params.toString();
  return text ? `jobs?${text}` : "jobs";
}

/**
 * Whether the query filters anything (else it lists every job the user may see).
 * @param {ListQuery} query
 * @returns {boolean}
 */
export function isFiltered(query) {
  return Boolean(query.state || query.method || query.user || query.node || query.from || query.to || query.q.trim());
}

/** `ECONNABORTED`, the errno of a cancelled upload (see states.js). */
const ECONNABORTED = 103;

/**
 * A regular expression (RE2) that finds `text` literally.
 * @param {string} text
 * @returns {string}
 */
export function literalRegex(text) {
  return text.replace(/[\\^$.|?*+()[\]{}]/g, "\\$&");
}

/**
 * A wire datetime from a `datetime-local` value (local time).
 * @param {string} value
 * @returns {{$date: number} | null}
 */
function wireDate(value) {
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? { $date: ms } : null;
}

/**
 * The filters of `core.get_jobs` for a query.  State, method, user and node are
 * plain conditions (state and method are answered from the store's
 * indexes); the search is an OR of case-insensitive RE2 searches for the
 * text taken literally.
 * @param {ListQuery} query
 * @returns {any[]}
 */
export function queryFilters(query) {
  /** @type {any[]} */
  const filters = [];
  if (query.state === "ABORTED") {
    // A cancelled upload is recorded FAILED but shown Aborted (states.js).
    filters.push(["state", "in", ["ABORTED", "FAILED"]]);
    filters.push(["OR", [["state", "=", "ABORTED"], ["exc_info.errno", "=", ECONNABORTED]]]);
  } else if (query.state === "FAILED") {
    filters.push(["state", "=", "FAILED"], ["exc_info.errno", "!=", ECONNABORTED]);
  } else if (query.state) {
    filters.push(["state", "=", query.state]);
  }
  if (query.method) filters.push(["method", "=", query.method]);
  if (query.user) filters.push(["credentials.data.username", "=", query.user]);
  if (query.node) filters.push(["node", "=", query.node]);
  const from = query.from ? wireDate(query.from) : null;
  const to = query.to ? wireDate(query.to) : null;
  if (from) filters.push(["time_started", ">=", from]);
  if (to) filters.push(["time_started", "<", to]);
  const text = query.q.trim();
  if (text) {
    const pattern = literalRegex(text);
    const fields = ["method", "description", "error", "arguments.0", "arguments.1", "arguments.2", "arguments.3"];
    filters.push(["OR", [
      ...fields.map((field) => [field, "C~", pattern]),
      ["arguments", "Crin", text],
    ]]);
  }
  return filters;
}

/**
 * The `order_by` of a query: its column, then the id in the same direction
 * (so equal values keep a stable order from page to page).
 * @param {ListQuery} query
 * @returns {string[]}
 */
export function queryOrder(query) {
  const descending = query.sort.startsWith("-");
  const key = query.sort.replace(/^-/, "");
  const field = SORTS[key]?.field ?? "id";
  const sign = descending ? "-" : "";
  return field === "id" ? [`${sign}id`] : [`${sign}${field}`, `${sign}id`];
}

/**
 * Whether a job (a whole record, as an `added` event brings it) matches the
 * query's filters: the same test the daemon makes, for showing a new job at
 * once.
 * @param {ListQuery} query
 * @param {Record<string, any>} job
 * @param {(job: Record<string, any>) => string} shownState
 * @returns {boolean}
 */
export function matches(query, job, shownState) {
  if (query.state && shownState(job) !== query.state) return false;
  if (query.method && job.method !== query.method) return false;
  if (query.user && job.credentials?.data?.username !== query.user) return false;
  if (query.node && job.node !== query.node) return false;
  const started = typeof job.time_started?.$date === "number" ? job.time_started.$date : null;
  const from = query.from ? wireDate(query.from) : null;
  const to = query.to ? wireDate(query.to) : null;
  if (from && (started === null || started < from.$date)) return false;
  if (to && (started === null || started >= to.$date)) return false;
  const text = query.q.trim().toLowerCase();
  if (text) {
    const args = Array.isArray(job.arguments) ? job.arguments : [];
    const texts = [job.method, job.description, job.error, ...args.slice(0, 4)];
    const found = texts.some((t) => typeof t === "string" && t.toLowerCase().includes(text)) ||
      args.some((a) => typeof a === "string" && a.toLowerCase() === text);
    if (!found) return false;
  }
  return true;
}

/**
 * Whether new jobs come first in this order (so a new job belongs at the top of the first page).
 * @param {ListQuery} query
 * @returns {boolean}
 */
export function newestFirst(query) {
  return query.sort === "-id" || query.sort === "-started";
}

/**
 * The page's title for a query: "Failed jobs · midjobs", "Jobs of alice
 * matching “backup” · midjobs".
 * @param {ListQuery} query
 * @returns {string}
 */
export function queryTitle(query) {
  const states = { WAITING: "Waiting", RUNNING: "Running", SUCCESS: "Successful", FAILED: "Failed", ABORTED: "Aborted" };
  let title = query.state ? `${states[query.state]} jobs` : "Jobs";
  if (query.method) title += ` of ${query.method}`;
  if (query.user) title += ` started by ${query.user}`;
  if (query.node) title += ` on ${query.node}`;
  if (query.from || query.to) title += " in a time range";
  if (query.q.trim()) title += ` matching “${query.q.trim()}”`;
  if (query.page > 0) title += `, page ${query.page + 1}`;
  return `${title} · midjobs`;
}
