/**
 * The download form: a method with an output pipe, its parameters and a
 * file name; `core.download` starts the job and gives the `/_download` URL,
 * which the browser then saves.
 * @module download
 */

import { byId, saveUrl, setText } from "./dom.js";
import { JobFollow } from "./jobfollow.js";
import { MethodChoice, parseParams } from "./methods.js";

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
    this.choice = new MethodChoice(
      /** @type {HTMLSelectElement} */ (byId("download-method")),
      /** @type {HTMLTextAreaElement} */ (byId("download-params")),
      byId("download-method-doc"),
      byId("download-params-hint"),
      (info) => info.downloadable,
    );
    this.job = new JobFollow(store, byId("download-job"));
    /** @type {{id: number, url: string, filename: string} | null} a buffered download waiting for its job to end */
    this.waiting = null;
    store.listen((ids) => {
      const waiting = this.waiting;
      if (waiting === null || !ids.has(waiting.id)) return;
      const state = store.jobs.get(waiting.id)?.state;
      if (state === "SUCCESS") saveUrl(waiting.url, waiting.filename);
      if (state === "SUCCESS" || state === "FAILED" || state === "ABORTED") this.waiting = null;
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
  }

  /** @param {Record<string, import("./methods.js").MethodInfo>} methods */
  setMethods(methods) {
    this.choice.fill(methods);
  }

  async start() {
    setText(this.error, "");
    const method = this.choice.select.value;
    const filename = this.filename.value.trim();
    let params;
    try {
      if (!method) throw new Error("Choose a method.");
      params = parseParams(this.choice.params.value);
      if (!filename) throw new Error("Give the file a name.");
    } catch (error) {
      setText(this.error, error.message);
      return;
    }
    this.submit.disabled = true;
    try {
      const [jobId, url] = await this.rpc.call("core.download", [method, params, filename, this.buffered.checked]);
      this.status.hidden = false;
      this.job.follow(jobId);
      if (this.buffered.checked) {
        // The job writes to a spool at its own pace; the file is fetched once it ended.
        this.waiting = { id: jobId, url, filename };
        this.job.store.mark(jobId);
        this.job.store.schedule();
      } else {
        // The job writes only as fast as the browser reads.
        this.waiting = null;
        saveUrl(url, filename);
      }
    } catch (error) {
      setText(this.error, `Could not start the download: ${error.message}`);
    } finally {
      this.submit.disabled = false;
    }
  }
}
