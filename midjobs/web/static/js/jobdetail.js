/**
 * One job: its arguments, result or error with the traceback, its log (the
 * excerpt, or the live log while it runs), the whole log as a download, and
 * an abort button when the user may abort it (else a word why not), and for a
 * full administrator a force-abort button on a job that cannot be aborted.
 * Both ask for confirmation first and then say how it went.
 * @module jobdetail
 */

import { abortVerdict, mayForceAbort } from "./access.js";
import { confirmAction } from "./confirm.js";
import { byId, saveUrl, setText } from "./dom.js";
import {
  dateMs, displayJson, formatDuration, formatTime, isCutOff, jobDuration, waitedFor,
} from "./format.js";
import { LiveLog } from "./joblog.js";
import { ProgressView } from "./progress.js";
import { FINISHED, StateBadge, shownState } from "./states.js";

/** What the page says of the times of a job cut off by a stop or crash of the daemon. */
const CUT_OFF_DURATION = "Unknown: the job was cut off when the daemon stopped";

/**
 * How an abort that was asked for went, once the job has ended.
 * @param {import("./jobstore.js").JobRecord} job
 * @returns {string}
 */
function abortOutcome(job) {
  const state = shownState(job);
  return state === "ABORTED"
    ? `Job ${job.id} was aborted.`
    : `Job ${job.id} ended (${state.toLowerCase()}) before the abort took effect.`;
}

export class JobDetailView {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {import("./jobstore.js").JobStore} store
   * @param {import("./session.js").Session} session who is logged in (what they may do)
   */
  constructor(rpc, store, session) {
    this.rpc = rpc;
    this.store = store;
    this.session = session;
    /** @type {number | null} */
    this.id = null;
    this.e = {
      id: byId("job-id"),
      status: byId("job-status"),
      abort: /** @type {HTMLButtonElement} */ (byId("job-abort")),
      forceAbort: /** @type {HTMLButtonElement} */ (byId("job-force-abort")),
      abortNote: byId("job-abort-note"),
      record: byId("job-record"),
      stateBadge: byId("job-state"),
      method: byId("job-method"),
      description: byId("job-description"),
      started: byId("job-started"),
      finished: byId("job-finished"),
      duration: byId("job-duration"),
      owner: byId("job-owner"),
      node: byId("job-node"),
      nodeFact: byId("job-node-fact"),
      arguments: byId("job-arguments"),
      resultBox: byId("job-result-box"),
      result: byId("job-result"),
      errorBox: byId("job-error-box"),
      error: byId("job-error"),
      tracebackBox: byId("job-traceback-box"),
      traceback: byId("job-traceback"),
      logsBox: byId("job-logs-box"),
      follow: /** @type {HTMLButtonElement} */ (byId("job-follow")),
      followState: byId("job-follow-state"),
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
    /** Whether "Abort requested." stands, to be cleared once the job has ended. */
    this.abortRequested = false;

    store.listen((ids) => {
      if (this.id !== null && ids.has(this.id)) this.render();
    });
    this.e.abort.addEventListener("click", () => this.abort(false));
    this.e.forceAbort.addEventListener("click", () => this.abort(true));
    this.e.download.addEventListener("click", () => this.downloadLog());
    this.e.follow.addEventListener("click", () => this.toggleFollow());
    setInterval(() => {
      const job = this.id !== null ? this.store.full(this.id) : null;
      if (job && (job.state === "RUNNING" || job.state === "WAITING") && !document.hidden) this.drawTimes(job);
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
    this.abortRequested = false;
    setText(this.e.id, String(id));
    setText(this.e.status, "");
    this.clear();
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

  /**
   * Empty every part that shows a job, so that nothing of the job shown
   * before stays under another job's heading.
   */
  clear() {
    const e = this.e;
    e.record.hidden = true;
    e.stateBadge.hidden = true;
    e.abort.hidden = true;
    e.forceAbort.hidden = true;
    for (const node of [e.method, e.description, e.started, e.finished, e.duration, e.owner, e.node, e.arguments,
      e.result, e.error, e.traceback, e.logsNote, e.abortNote]) {
      setText(node, "");
    }
    e.resultBox.hidden = true;
    e.errorBox.hidden = true;
    e.logsBox.hidden = true;
    this.log.clear();
  }

  render() {
    if (this.id === null) return;
    const job = this.store.full(this.id);
    const e = this.e;
    if (!job) {
      // No such job (or not yet loaded): nothing of any job shows.
      e.record.hidden = true;
      e.stateBadge.hidden = true;
      e.abort.hidden = true;
      e.forceAbort.hidden = true;
      return;
    }
    e.record.hidden = false;
    e.stateBadge.hidden = false;
    const state = shownState(job);
    this.state.set(state);
    this.progress.update(job, state);
    setText(e.method, job.method ?? "");
    setText(e.description, job.description ?? "");
    this.drawTimes(job);
    const owner = job.credentials?.data?.username;
    setText(e.owner, owner ?? (job.credentials === null ? "the daemon" : ""));
    // The node of the cluster that ran it (records written before nodes were recorded have none).
    setText(e.node, job.node ?? "");
    e.nodeFact.hidden = !job.node;
    if ("arguments" in job) setText(e.arguments, displayJson(job.arguments));
    const finished = FINISHED.has(job.state);
    this.drawAbort(job, finished);
    if (this.drawnState !== state && "arguments" in job) {
      this.drawnState = state;
      this.drawOutcome(job, finished);
    }
    this.drawLogs(job, finished);
  }

  /**
   * Started, finished and duration.  A waiting job has not started (its
   * `time_started` is when it was queued); a job cut off by a restart has no
   * known end (its `time_finished` is the restart's).
   * @param {import("./jobstore.js").JobRecord} job
   */
  drawTimes(job) {
    const e = this.e;
    const at = dateMs(job.time_started);
    if (job.state === "WAITING") {
      setText(e.started, at === null ? "Not yet" : `Not yet (queued ${formatTime(at)})`);
      setText(e.finished, "");
      setText(e.duration, `Waiting for ${formatDuration(waitedFor(job))}`);
      return;
    }
    setText(e.started, formatTime(at));
    if (isCutOff(job)) {
      setText(e.finished, `Unknown (the daemon recorded the cut-off at its restart, ${formatTime(dateMs(job.time_finished))})`);
      setText(e.duration, CUT_OFF_DURATION);
      return;
    }
    setText(e.finished, formatTime(dateMs(job.time_finished)));
    setText(e.duration, formatDuration(jobDuration(job)));
  }

  /**
   * The abort button, offered only when the user may abort the job (the
   * daemon's rules, see access.js); else, while the job runs, why not.
   * @param {import("./jobstore.js").JobRecord} job
   * @param {boolean} finished
   */
  drawAbort(job, finished) {
    const e = this.e;
    if (finished && this.abortRequested) {
      // The request was heard: say how the job ended.
      this.abortRequested = false;
      setText(e.status, abortOutcome(job));
    }
    // The owner is known from the whole record only.
    const whole = "credentials" in job;
    const verdict = whole ? abortVerdict(this.session.identity, job) : { may: false, why: "" };
    e.abort.hidden = !verdict.may;
    e.forceAbort.hidden = !(whole && mayForceAbort(this.session.identity, job));
    setText(e.abortNote, verdict.why);
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
    this.drawFollow();
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
    }).finally(() => this.drawFollow());
  }

  /**
   * The follow button's state: pressed (`aria-pressed`) and visibly on or
   * off (the word On or Off beside the label, and its colours).
   */
  drawFollow() {
    const on = this.log.following;
    this.e.follow.setAttribute("aria-pressed", String(on));
    setText(this.e.followState, on ? "On" : "Off");
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
    this.drawFollow();
  }

  /**
   * Ask, then abort the job (by force: `core.job_abort` with `{"force": true}`);
   * say that the abort was requested, and once the job ends how it ended, or
   * the daemon's error.
   * @param {boolean} force
   */
  async abort(force) {
    if (this.id === null) return;
    const id = this.id;
    const job = this.store.full(id);
    const what = `job ${id}${job?.method ? ` (${job.method})` : ""}`;
    const confirmed = await confirmAction(force ? {
      title: `Force the abort of job ${id}?`,
      message: `Abort ${what}, although its method does not allow aborting.`,
      risk: "Its method does not expect to be stopped: whatever it was changing may be left half done " +
        "(partial files, inconsistent state), and its lock is freed for the next job.",
      confirm: "Force abort",
    } : {
      title: `Abort job ${id}?`,
      message: `Abort ${what}. It stops where it is and cannot be resumed.`,
      confirm: "Abort job",
    });
    if (!confirmed || this.id !== id) return;
    const button = force ? this.e.forceAbort : this.e.abort;
    button.disabled = true;
    try {
      await this.rpc.call("core.job_abort", force ? [id, { force: true }] : [id]);
      if (this.id !== id) return;
      const now = this.store.full(id);
      if (now && FINISHED.has(now.state)) {
        setText(this.e.status, abortOutcome(now));
        return;
      }
      this.abortRequested = true;
      setText(this.e.status, "Abort requested.");
    } catch (error) {
      if (this.id === id) setText(this.e.status, `Could not abort: ${error.message}`);
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
