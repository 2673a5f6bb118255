/**
 * A line that follows one job started from a form (an upload, a download):
 * a link to it, its state and its progress, and its error if it fails.
 * @module jobfollow
 */

import { el, setText } from "./dom.js";
import { ProgressView } from "./progress.js";
import { StateBadge, shownState } from "./states.js";

export class JobFollow {
  /**
   * @param {import("./jobstore.js").JobStore} store
   * @param {HTMLElement} root
   * @param {(job: import("./jobstore.js").JobRecord) => void} [ended] told once when the job has ended
   */
  constructor(store, root, ended) {
    this.store = store;
    this.root = root;
    this.ended = ended ?? null;
    /** Whether the job followed was seen ended (and `ended` told). */
    this.seenEnd = false;
    /** @type {number | null} */
    this.id = null;
    this.link = /** @type {HTMLAnchorElement} */ (el("a"));
    this.state = new StateBadge();
    this.progress = new ProgressView(undefined, "Job progress");
    this.error = el("p", "error-text");
    this.error.hidden = true;
    const head = el("p", "job-follow-head");
    head.append(this.link, " ", this.state.root);
    root.replaceChildren(head, this.progress.root, this.error);
    root.hidden = true;
    store.listen((ids) => {
      if (this.id !== null && ids.has(this.id)) this.render();
    });
  }

  /**
   * Follow job `id` (and stop following the one before).
   * @param {number} id
   */
  follow(id) {
    this.stop();
    this.id = id;
    this.seenEnd = false;
    this.link.href = `#job/${id}`;
    setText(this.link, `Job ${id}`);
    this.root.hidden = false;
    this.root.dataset.jobId = String(id);
    this.render();
    this.store.watch(id).then(() => this.render(), () => {});
  }

  stop() {
    if (this.id !== null) this.store.unwatch(this.id);
    this.id = null;
    this.root.hidden = true;
    delete this.root.dataset.jobId;
  }

  render() {
    if (this.id === null) return;
    const job = this.store.full(this.id);
    if (!job) return;
    const state = shownState(job);
    this.state.set(state);
    this.progress.update(job, state);
    const failed = state === "FAILED" || state === "ABORTED";
    this.error.hidden = !failed;
    setText(this.error, failed ? job.error ?? "" : "");
    if (!this.seenEnd && (failed || state === "SUCCESS")) {
      this.seenEnd = true;
      this.ended?.(job);
    }
  }
}
