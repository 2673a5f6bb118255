/**
 * A job's live log: the `core.job_log:<id>` event gives everything written
 * so far, then each new piece as it is written.  Text is appended once per
 * animation frame, and only the tail is kept on the page.
 * @module joblog
 */

/** The most characters of log the page shows; the whole log is a download away. */
export const MAX_LOG_CHARS = 512 * 1024;

export class LiveLog {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {HTMLElement} pre where the text goes
   * @param {(note: string) => void} note tells the user about trimming or failures
   */
  constructor(rpc, pre, note) {
    this.rpc = rpc;
    this.pre = pre;
    this.note = note;
    /** @type {import("./rpc.js").Subscription | null} */
    this.subscription = null;
    /** @type {string[]} */
    this.pending = [];
    this.frame = 0;
    this.length = 0;
    this.trimmed = false;
    /** @type {number | null} */
    this.jobId = null;
    this.appends = 0;
  }

  /** Whether a log is followed (or its subscription is on its way). */
  get following() {
    return this.jobId !== null;
  }

  /**
   * Follow the log of job `id` (replacing what the element shows).
   * @param {number} id
   * @throws {Error} the daemon refused the subscription
   */
  async follow(id) {
    // Following from now on (so the page can say so at once), then end the last subscription.
    const previous = this.subscription;
    this.subscription = null;
    this.jobId = id;
    if (previous) await previous.unsubscribe();
    if (this.jobId !== id) return;
    const name = `core.job_log:${id}`;
    /** @type {import("./rpc.js").Subscription} */
    let sub;
    try {
      sub = await this.rpc.subscribe(name, (params) => this.event(params), {
        // Each (re)subscription starts with everything written so far.
        onStart: () => this.clear(),
        onEnd: (error) => {
          if (this.subscription === sub) {
            this.subscription = null;
            this.jobId = null;
          }
          if (error) this.note(`The live log ended: ${error.reason ?? "error"}`);
        },
      });
    } catch (error) {
      if (this.jobId === id) this.jobId = null;
      throw error;
    }
    if (this.jobId !== id || !sub.active) {
      await sub.unsubscribe();
      return;
    }
    this.subscription = sub;
  }

  /** Stop following; the text stays. */
  async stop() {
    this.jobId = null;
    const sub = this.subscription;
    this.subscription = null;
    if (sub) await sub.unsubscribe();
  }

  clear() {
    this.pending = [];
    this.pre.textContent = "";
    this.length = 0;
    this.trimmed = false;
  }

  /** @param {{fields?: {data?: unknown}}} params */
  event(params) {
    const data = params.fields?.data;
    if (typeof data !== "string" || data === "") return;
    this.pending.push(data);
    if (this.frame === 0) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const text = this.pending.join("");
    this.pending = [];
    if (!text) return;
    const pre = this.pre;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    if (this.length + text.length > MAX_LOG_CHARS) {
      const kept = (pre.textContent + text).slice(-Math.floor(MAX_LOG_CHARS * 0.75));
      pre.textContent = kept;
      this.length = kept.length;
      if (!this.trimmed) {
        this.trimmed = true;
        this.note("Only the end of the log is shown here; download the whole log to read all of it.");
      }
    } else {
      pre.append(text);
      this.length += text.length;
      // One text node per frame's worth of log; merge them now and then.
      if (++this.appends % 256 === 0) pre.normalize();
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}
