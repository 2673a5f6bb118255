/**
 * A job's progress: a bar, the percentage as text, and the progress description.
 *
 * Every job starts with `progress.percent` 0 and only a job that reports a
 * percentage moves it, so a running job at 0% (or with no percentage, null)
 * is one that has not said how far it is: it gets an indeterminate, moving
 * bar and no percentage, never "0%" forever.  A waiting job gets no bar: the
 * reason it waits (the daemon's "Waiting for lock <name>") stands instead.
 * A job that moves bytes has its transfer figures after the bar (see
 * {@link transferText}).
 * @module progress
 */

import { el, setText } from "./dom.js";
import { transferText } from "./format.js";

/**
 * How a job's progress is drawn.
 * @typedef {"waiting" | "indeterminate" | "determinate"} ProgressMode
 */

/**
 * @param {{state?: string, progress?: {percent?: number | null}}} job
 * @returns {ProgressMode}
 */
export function progressMode(job) {
  if (job.state === "WAITING") return "waiting";
  const percent = job.progress?.percent;
  const reported = typeof percent === "number" && percent > 0;
  return job.state === "RUNNING" && !reported ? "indeterminate" : "determinate";
}

/**
 * The progress of one job, updated in place: only what changed is written.
 */
export class ProgressView {
  /**
   * @param {HTMLElement} [root] an element to fill, else a new `<div>`
   * @param {string} [label] the bar's accessible name
   */
  constructor(root, label = "Progress") {
    this.root = root ?? el("div");
    this.root.classList.add("progress-cell");
    this.bar = /** @type {HTMLProgressElement} */ (el("progress"));
    this.bar.max = 100;
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", label);
    this.pct = el("span", "pct");
    this.transfer = el("span", "transfer");
    this.text = el("span", "progress-text");
    this.root.replaceChildren(this.bar, this.pct, this.transfer, this.text);
    /** @type {number | null | undefined} */
    this.percent = undefined;
    /** @type {ProgressMode | undefined} */
    this.mode = undefined;
  }

  /**
   * @param {{state?: string, progress?: {percent?: number | null, description?: string | null, extra?: unknown}}} job
   * @param {string} [state] the state to show, if not the job's own
   */
  update(job, state = job.state) {
    const progress = job.progress ?? {};
    const percent = typeof progress.percent === "number" ? progress.percent : null;
    const mode = progressMode({ ...job, state });
    if (mode !== this.mode) {
      // A <progress> without a value is indeterminate: the job reports no percentage.
      if (mode === "indeterminate") this.bar.removeAttribute("value");
      this.bar.hidden = mode === "waiting";
      this.pct.hidden = mode === "waiting";
      this.root.dataset.mode = mode;
      this.mode = mode;
      this.percent = undefined;
    }
    if (mode === "determinate" && percent !== this.percent) {
      this.bar.value = percent ?? 0;
      this.percent = percent;
    }
    setText(this.pct, mode === "determinate" && percent !== null ? `${percent}%` : "");
    setText(this.transfer, mode === "waiting" ? "" : transferText(progress.extra));
    const description = progress.description ?? "";
    setText(this.text, description || (mode === "waiting" ? "Waiting to start" : ""));
    const shown = (state ?? "").toLowerCase();
    if (this.root.dataset.state !== shown) this.root.dataset.state = shown;
  }
}
