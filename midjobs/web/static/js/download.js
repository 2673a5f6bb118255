/**
 * The download form: a method with an output pipe, its parameters and a
 * file name; `core.download` starts the job and gives the `/_download` URL,
 * which the browser then saves.
 * @module download
 */

import { byId, saveUrl, setText } from "./dom.js";
import { JobFollow } from "./jobfollow.js";
import { MethodChoice } from "./methods.js";
import { validationErrors } from "./params.js";

/**
 * How long a streamed download's job may run without any sign (a progress,
 * the size it will send) before the browser is handed the URL anyway: a job
 * that writes without reporting anything blocks until the browser reads.
 */
export const GRACE_MS = 1500;

/**
 * A download started, not yet handed to the browser.
 * @typedef {{id: number, method: string, url: string, filename: string, buffered: boolean, grace: number | null}} PendingSave
 */

/**
 * Whether a running job shows that it is sending: it reported a
 * percentage or the transfer fields (`progress.extra.total_bytes`,
 * `bytes`) that `filesystem.get` and other senders set once the file is open.
 * @param {import("./jobstore.js").JobRecord} job
 * @returns {boolean}
 */
function sending(job) {
  const progress = job.progress ?? {};
  const extra = progress.extra ?? {};
  return (typeof progress.percent === "number" && progress.percent > 0) ||
    typeof extra.total_bytes === "number" || (typeof extra.bytes === "number" && extra.bytes > 0);
}

export class DownloadView {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {import("./jobstore.js").JobStore} store
   */
  constructor(rpc, store) {
    this.rpc = rpc;
    this.form = /** @type {HTMLFormElement} */ (byId("download-form"));
    this.filename = /** @type {HTMLInputElement} */ (byId("download-filename"));
    this.buffered = /** @type {HTMLInputElement} */ (byId("download-buffered"));
    this.error = byId("download-error");
    this.submit = /** @type {HTMLButtonElement} */ (byId("download-submit"));
    this.status = byId("download-status");
    this.choice = new MethodChoice("download", (info) => info.downloadable);
    this.job = new JobFollow(store, byId("download-job"));
    /** @type {PendingSave | null} a download whose job has not yet shown it will deliver */
    this.waiting = null;
    store.listen((ids) => {
      if (this.waiting !== null && ids.has(this.waiting.id)) this.check();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
  }

  /**
   * @param {Record<string, import("./methods.js").MethodInfo>} methods
   * @param {import("./access.js").Identity | null} identity who is logged in
   */
  setMethods(methods, identity) {
    const offered = this.choice.fill(
      methods, identity, "You may not call any method that gives a download: an administrator can give you a role that allows one.",
    );
    this.submit.disabled = offered === 0;
  }

  /**
   * Hand the download to the browser once its job shows it will deliver,
   * or say on the page why it will not: a job that fails before sending
   * anything (a missing file) never becomes a failed download in the browser.
   * A streamed download's job gets {@link GRACE_MS} to show a sign; a
   * buffered one's file is fetched once the job succeeded.
   */
  check() {
    const waiting = this.waiting;
    if (waiting === null) return;
    const job = this.job.store.jobs.get(waiting.id);
    if (!job) return;
    if (job.state === "FAILED" || job.state === "ABORTED") {
      this.forget();
      const errors = validationErrors(job);
      if (errors.length) {
        const rest = this.choice.params.showErrors(waiting.method, errors);
        setText(this.error, `The download failed: the daemon refused ${rest.length ? rest.join("; ") : "the parameters marked"}.`);
      } else setText(this.error, `The download failed: ${job.error ?? job.state}`);
      return;
    }
    const ready = job.state === "SUCCESS" || (!waiting.buffered && job.state === "RUNNING" && sending(job));
    if (ready) {
      this.forget();
      saveUrl(waiting.url, waiting.filename);
      return;
    }
    if (!waiting.buffered && job.state === "RUNNING" && waiting.grace === null) {
      waiting.grace = setTimeout(() => {
        if (this.waiting !== waiting) return;
        this.forget();
        saveUrl(waiting.url, waiting.filename);
      }, GRACE_MS);
    }
  }

  /** Drop the download waiting to be handed to the browser, if any. */
  forget() {
    if (this.waiting?.grace != null) clearTimeout(this.waiting.grace);
    this.waiting = null;
  }

  async start() {
    setText(this.error, "");
    const method = this.choice.select.value;
    const filename = this.filename.value.trim();
    let params;
    try {
      if (!method) throw new Error("Choose a method.");
      params = this.choice.params.value();
      if (!filename) throw new Error("Give the file a name.");
    } catch (error) {
      setText(this.error, error.message);
      return;
    }
    this.submit.disabled = true;
    this.forget();
    try {
      const buffered = this.buffered.checked;
      const [jobId, url] = await this.rpc.call("core.download", [method, params, filename, buffered]);
      this.status.hidden = false;
      this.job.follow(jobId);
      // The browser is handed the URL only once the job shows it will deliver (check()).
      this.waiting = { id: jobId, method, url, filename, buffered, grace: null };
      this.job.store.mark(jobId);
      this.job.store.schedule();
    } catch (error) {
      const errors = validationErrors(error);
      const rest = this.choice.params.showErrors(method, errors);
      setText(this.error, errors.length
        ? `Could not start the download: the daemon refused ${rest.length ? rest.join("; ") : "the parameters marked"}.`
        : `Could not start the download: ${error.message}`);
    } finally {
      this.submit.disabled = false;
    }
  }
}
