/**
 * Who may do what, as the daemon decides it (`midjobs/access.py`): which
 * methods the logged-in user may call, and whether they may abort a job.
 * The page offers only what the daemon would allow; the daemon still decides.
 * @module access
 */

/** May do anything. */
export const FULL_ADMIN = "FULL_ADMIN";
/** May read everything (and call read-only methods), change nothing of others. */
export const READONLY_ADMIN = "READONLY_ADMIN";

/**
 * The logged-in user, from the `user_info` of `auth.login_ex` or `auth.me`:
 * `{pw_name, privilege: {roles}, credentials: {type, data: {username, user_id?}}}`.
 */
export class Identity {
  /** @param {any} info a `user_info` */
  constructor(info) {
    /** @type {string | null} */
    this.username = info?.pw_name ?? null;
    /** @type {Set<string>} */
    this.roles = new Set(info?.privilege?.roles ?? []);
    const id = info?.credentials?.data?.user_id;
    /** @type {number | null} the stored user's id: what owns jobs (never the name) */
    this.userId = typeof id === "number" ? id : null;
  }

  get isFullAdmin() {
    return this.roles.has(FULL_ADMIN);
  }

  /**
   * Whether the user may call a method (its `core.get_methods` entry):
   * full administrators any; everyone a `no_authz_required` one;
   * read-only administrators a `read_only` one; else one of its roles.
   * @param {{no_auth_required?: boolean, no_authz_required?: boolean, read_only?: boolean, roles?: string[]}} info
   * @returns {boolean}
   */
  mayCall(info) {
    if (info.no_auth_required || info.no_authz_required || this.isFullAdmin) return true;
    if (info.read_only && this.roles.has(READONLY_ADMIN)) return true;
    return (info.roles ?? []).some((role) => this.roles.has(role));
  }

  /**
   * Whether the user started a job: its stored owner's id is the user's.
   * @param {{credentials?: any}} job a whole record (with `credentials`)
   * @returns {boolean}
   */
  owns(job) {
    const owner = job.credentials?.data?.user_id;
    return this.userId !== null && typeof owner === "number" && owner === this.userId;
  }
}

/**
 * Whether `identity` may abort `job` now, and if not, why (for the page to say).
 * @param {Identity | null} identity
 * @param {Record<string, any>} job a whole record (with `credentials`)
 * @returns {{may: boolean, why: string}} `why` is empty when the question does not arise (a finished job)
 */
export function abortVerdict(identity, job) {
  if (job.state === "SUCCESS" || job.state === "FAILED" || job.state === "ABORTED") return { may: false, why: "" };
  if (!job.abortable) {
    return { may: false, why: `This job cannot be aborted: ${job.method ?? "its method"} does not allow it.` };
  }
  if (identity && (identity.isFullAdmin || identity.owns(job))) return { may: true, why: "" };
  const owner = job.credentials?.data?.username;
  const by = job.credentials ? (owner ? `${owner}, who started it,` : "the user who started it") : "";
  return {
    may: false,
    why: job.credentials
      ? `Only ${by} or a full administrator may abort this job.`
      : "The daemon started this job: only a full administrator may abort it.",
  };
}

/**
 * Whether `identity` may force the abort of `job` (`core.job_abort` with
 * `{"force": true}`): only a full administrator, and the page offers it only
 * for a running or waiting job that cannot be aborted otherwise.
 * @param {Identity | null} identity
 * @param {Record<string, any>} job
 * @returns {boolean}
 */
export function mayForceAbort(identity, job) {
  const live = job.state === "RUNNING" || job.state === "WAITING";
  return live && !job.abortable && Boolean(identity?.isFullAdmin);
}
