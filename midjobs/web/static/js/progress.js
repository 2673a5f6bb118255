/**
 * A job's progress: a bar, the percentage as text, and the progress description.
 * @module progress
 */

import { el, setText } from "./dom.js";

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
    this.text = el("span", "progress-text");
    this.root.replaceChildren(this.bar, this.pct, this.text);
    /** @type {number | null | undefined} */
    this.percent = undefined;
    /** @type {boolean | undefined} */
    this.indeterminate = undefined;
  }

  /**
   * @param {{state?: string, progress?: {percent?: number | null, description?: string | null}}} job
   */
  update(job) {
    const progress = job.progress ?? {};
    const percent = typeof progress.percent === "number" ? progress.percent : null;
    const indeterminate = percent === null && job.state === "RUNNING";
    if (indeterminate !== this.indeterminate) {
      // A <progress> without a value is indeterminate: the job reports no percentage.
      if (indeterminate) this.bar.removeAttribute("value");
      this.indeterminate = indeterminate;
      this.percent = undefined;
    }
    if (!indeterminate && percent !== this.percent) {
      this.bar.value = percent ?? 0;
      this.percent = percent;
    }
    setText(this.pct, percent === null ? "" : `${percent}%`);
    setText(this.text, progress.description ?? "");
    const state = (job.state ?? "").toLowerCase();
    if (this.root.dataset.state !== state) this.root.dataset.state = state;
  }
}
