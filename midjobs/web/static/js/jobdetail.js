/**
 * One job: its arguments, result or error with the traceback, its log (the
 * excerpt, or the live log while it runs), the whole log as a download, and
 * an abort button when it can be aborted.
 * @module jobdetail
 */

import { byId, saveUrl, setText } from "./dom.js";
import { dateMs, displayJson, formatDuration, formatTime, jobDuration } from "./format.js";
import { LiveLog } from "./joblog.js";
import { ProgressView } from "./progress.js";
import { FINISHED, StateBadge } from "./states.js";

export class JobDetailView {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {import("./jobstore.js").JobStore} store
   */
  constructor(rpc, store) {
    this.rpc = rpc;
    this.store = store;
    /** @type {number | null} */
    this.id = null;
    this.e = {
      id: byId("job-id"),
      status: byId("job-status"),
      abort: /** @type {HTMLButtonElement} */ (byId("job-abort")),
      method: byId("job-method"),
      description: byId("job-description"),
      started: byId("job-started"),
      finished: byId("job-finished"),
      duration: byId("job-duration"),
      owner: byId("job-owner"),
      arguments: byId("job-arguments"),
      resultBox: byId("job-result-box"),
      result: byId("job-result"),
      errorBox: byId("job-error-box"),
      error: byId("job-error"),
      tracebackBox: byId("job-traceback-box"),
      traceback: byId("job-traceback"),
      logsBox: byId("job-logs-box"),
      follow: /** @type {HTMLButtonElement} */ (byId("job-follow")),
      download: /** @type {HTMLButtonElement} */ (byId("job-logs-download")),
      logsNote: byId("job-logs-note"),
      logs: byId("job-logs"),
    };
    this.state = new StateBadge(byId("job-state"));
    this.progress = new ProgressView(byId("job-progress"), "Job progress");
    this.log = new LiveLog(rpc, this.e.logs, (text) => setText(this.e.logsNote, text));
    /** @type {string | null} the state the result/error/log sections were last drawn for */
    this.drawnState = null;
    /** Whether the user turned following off for this job. */
    this.followOff = false;

    store.listen((ids) => {
      if (this.id !== null && ids.has(this.id)) this.render();
    });
    this.e.abort.addEventListener("click", () => this.abort());
    this.e.download.addEventListener("click", () => this.downloadLog());
    this.e.follow.addEventListener("click", () => this.toggleFollow());
    setInterval(() => {
      const job = this.id !== null ? this.store.full(this.id) : null;
      if (job && job.state === "RUNNING" && !document.hidden) {
        setText(this.e.duration, formatDuration(jobDuration(job)));
      }
    }, 1000);
  }

  /**
   * Show job `id`.
   * @param {number} id
   */
  async show(id) {
    if (this.id === id) return;
    this.hide();
    this.id = id;
    this.drawnState = null;
    this.followOff = false;
    setText(this.e.id, String(id));
    setText(this.e.status, "");
    setText(this.e.logsNote, "");
    this.log.clear();
    this.render();
    try {
      const record = await this.store.watch(id);
      if (this.id !== id) return;
      if (record === null) setText(this.e.status, `There is no job ${id}, or it is not yours to see.`);
      this.render();
    } catch (error) {
      if (this.id === id) setText(this.e.status, `Could not load job ${id}: ${error.message}`);
    }
  }

  /** Leave the job: stop watching it and its log. */
  hide() {
    if (this.id === null) return;
    this.store.unwatch(this.id);
    this.id = null;
    this.log.stop().catch(() => {});
  }

  render() {
    if (this.id === null) return;
    const job = this.store.full(this.id);
    if (!job) return;
    const e = this.e;
    this.state.set(job.state);
    this.progress.update(job);
    setText(e.method, job.method ?? "");
    setText(e.description, job.description ?? "");
    setText(e.started, formatTime(dateMs(job.time_started)));
    setText(e.finished, formatTime(dateMs(job.time_finished)));
    setText(e.duration, formatDuration(jobDuration(job)));
    const owner = job.credentials?.data?.username;
    setText(e.owner, owner ?? (job.credentials === null ? "the daemon" : ""));
    if ("arguments" in job) setText(e.arguments, displayJson(job.arguments));
    const finished = FINISHED.has(job.state);
    e.abort.hidden = !(job.abortable && !finished);
    if (this.drawnState !== job.state && "arguments" in job) {
      this.drawnState = job.state;
      this.drawOutcome(job, finished);
    }
    this.drawLogs(job, finished);
  }

  /**
   * @param {import("./jobstore.js").JobRecord} job
   * @param {boolean} finished
   */
  drawOutcome(job, finished) {
    const e = this.e;
    const failed = finished && job.state !== "SUCCESS";
    e.resultBox.hidden = !(finished && job.state === "SUCCESS");
    if (!e.resultBox.hidden) setText(e.result, displayJson(job.result));
    e.errorBox.hidden = !failed;
    if (failed) {
      setText(e.error, job.error ?? job.state);
      e.tracebackBox.hidden = !job.exception;
      setText(e.traceback, job.exception ?? "");
    }
  }

  /**
   * @param {import("./jobstore.js").JobRecord} job
   * @param {boolean} finished
   */
  drawLogs(job, finished) {
    const e = this.e;
    const hasLogs = Boolean(job.logs_path);
    e.logsBox.hidden = !hasLogs;
    if (!hasLogs) return;
    // The live log while the job runs (unless turned off); else the excerpt.
    if (!finished && !this.followOff && !this.log.following) this.startFollowing();
    e.follow.hidden = finished && !this.log.following;
    e.follow.setAttribute("aria-pressed", String(this.log.following));
    if (!this.log.following && this.log.length === 0 && typeof job.logs_excerpt === "string") {
      setText(e.logs, job.logs_excerpt);
    }
  }

  startFollowing() {
    const id = /** @type {number} */ (this.id);
    this.log.follow(id).catch((error) => {
      if (this.id !== id) return;
      // Not again for this job, unless the user asks.
      this.followOff = true;
      setText(this.e.logsNote, `The live log is not available: ${error.message}`);
      this.render();
    }).finally(() => this.e.follow.setAttribute("aria-pressed", String(this.log.following)));
  }

  async toggleFollow() {
    if (this.id === null) return;
    if (this.log.following) {
      this.followOff = true;
      await this.log.stop();
    } else {
      this.followOff = false;
      setText(this.e.logsNote, "");
      this.startFollowing();
    }
    this.e.follow.setAttribute("aria-pressed", String(this.log.following));
  }

  async abort() {
    if (this.id === null) return;
    const button = this.e.abort;
    button.disabled = true;
    try {
      await this.rpc.call("core.job_abort", [this.id]);
      setText(this.e.status, "Abort requested.");
    } catch (error) {
      setText(this.e.status, `Could not abort: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async downloadLog() {
    if (this.id === null) return;
    const filename = `job-${this.id}.log`;
    try {
      const url = await this.rpc.call("core.job_download_logs", [this.id, filename]);
      saveUrl(url, filename);
    } catch (error) {
      setText(this.e.status, `Could not download the log: ${error.message}`);
    }
  }
}
