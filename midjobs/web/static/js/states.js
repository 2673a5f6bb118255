/**
 * The job states: their labels and icons, and a badge that shows them with
 * colour, icon and text together (never colour alone).
 * @module states
 */

import { el, icon, setText } from "./dom.js";

/** @type {Record<string, {label: string, icon: string}>} */
export const STATES = {
  WAITING: { label: "Waiting", icon: "waiting" },
  RUNNING: { label: "Running", icon: "running" },
  SUCCESS: { label: "Success", icon: "success" },
  FAILED: { label: "Failed", icon: "failed" },
  ABORTED: { label: "Aborted", icon: "aborted" },
};

/** The states of a job that has ended. */
export const FINISHED = new Set(["SUCCESS", "FAILED", "ABORTED"]);

/** `ECONNABORTED`: the errno of a job whose upload's client went away (`UploadInterrupted`). */
const ECONNABORTED = 103;
/** What the daemon's error says when the client of an upload disconnected (`midjobs.http._upload`). */
const UPLOAD_CANCELLED = "The client disconnected before the upload ended";

/**
 * Whether a job failed only because the client of its upload went away:
 * a cancelled upload.  The daemon records it FAILED (`ECONNABORTED`); the
 * page lists it as Aborted, for it was stopped on purpose, not broken.
 * @param {{state?: string, error?: string | null, exc_info?: any}} job
 * @returns {boolean}
 */
export function isCancelledUpload(job) {
  return job.state === "FAILED" && job.exc_info?.errno === ECONNABORTED &&
    typeof job.error === "string" && job.error.includes(UPLOAD_CANCELLED);
}

/**
 * The state the page shows for a job: its own, except that a cancelled
 * upload shows as ABORTED (see {@link isCancelledUpload}).
 * @param {{state?: string, error?: string | null, exc_info?: any}} job
 * @returns {string}
 */
export function shownState(job) {
  return isCancelledUpload(job) ? "ABORTED" : job.state ?? "";
}

/**
 * A state badge that can be updated in place.
 */
export class StateBadge {
  /** @param {HTMLElement} [root] an existing element to fill, else a new `<span>` */
  constructor(root) {
    this.root = root ?? el("span");
    this.root.classList.add("state");
    const { svg, use } = icon("waiting");
    this.use = use;
    this.text = el("span", "state-text");
    this.root.replaceChildren(svg, this.text);
    /** @type {string | null} */
    this.state = null;
  }

  /** @param {string} state */
  set(state) {
    if (state === this.state) return;
    const meta = STATES[state] ?? { label: state, icon: "waiting" };
    if (this.state) this.root.classList.remove(`state-${this.state.toLowerCase()}`);
    this.root.classList.add(`state-${state.toLowerCase()}`);
    this.root.dataset.state = state;
    this.use.setAttribute("href", `#i-${meta.icon}`);
    setText(this.text, meta.label);
    this.state = state;
  }
}
