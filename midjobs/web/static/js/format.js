/**
 * Turning wire values into text for people.
 * @module format
 */

/**
 * The milliseconds since the epoch of a wire datetime (`{"$date": ms}`), or null.
 * @param {unknown} value
 * @returns {number | null}
 */
export function dateMs(value) {
  if (value && typeof value === "object" && typeof value.$date === "number") {
    return value.$date;
  }
  return null;
}

const pad = (n) => String(n).padStart(2, "0");

/**
 * A local date and time, `YYYY-MM-DD HH:MM:SS`.
 * @param {number | null} ms
 * @returns {string}
 */
export function formatTime(ms) {
  if (ms === null) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/**
 * A duration such as `4 s`, `3 min 05 s` or `2 h 03 min`.
 * @param {number | null} ms
 * @returns {string}
 */
export function formatDuration(ms) {
  if (ms === null || !Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} min`;
  return `${Math.floor(s / 86400)} d ${pad(Math.floor(s / 3600) % 24)} h`;
}

/**
 * The error the daemon records for a job that was waiting or running when
 * it stopped or died (`midjobs.store.history.CUT_OFF`).  Such a job's
 * `time_finished` is when the daemon noticed, at its next start, not when
 * the job stopped: how long it ran is not known.
 */
export const CUT_OFF_ERROR = "The daemon stopped while this job was running";

/**
 * Whether a job was cut off by a stop or a crash of the daemon.
 * @param {{state?: string, error?: string | null}} job
 * @returns {boolean}
 */
export function isCutOff(job) {
  return job.state === "ABORTED" && job.error === CUT_OFF_ERROR;
}

/**
 * How long a job ran, or has been running: null while it waits (its
 * `time_started` is when it was queued), and for a job cut off by a restart
 * (its `time_finished` is the restart's, see {@link CUT_OFF_ERROR}).
 * @param {{time_started?: unknown, time_finished?: unknown, state?: string, error?: string | null}} job
 * @param {number} [now]
 * @returns {number | null}
 */
export function jobDuration(job, now = Date.now()) {
  const started = dateMs(job.time_started);
  if (started === null || job.state === "WAITING" || isCutOff(job)) return null;
  const finished = dateMs(job.time_finished);
  return (finished ?? now) - started;
}

/**
 * How long a waiting job has waited so far (since it was queued), else null.
 * @param {{time_started?: unknown, state?: string}} job
 * @param {number} [now]
 * @returns {number | null}
 */
export function waitedFor(job, now = Date.now()) {
  const queued = dateMs(job.time_started);
  return job.state === "WAITING" && queued !== null ? now - queued : null;
}

/**
 * A byte count such as `1.5 MiB`.
 * @param {number} n
 * @returns {string}
 */
export function formatBytes(n) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let value = n;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * JSON for reading: indented, datetimes as ISO text.
 * @param {unknown} value
 * @returns {string}
 */
export function displayJson(value) {
  if (value === undefined) return "";
  return JSON.stringify(value, (key, v) => {
    const ms = dateMs(v);
    return ms === null ? v : new Date(ms).toISOString();
  }, 2);
}

/** Binary units, as midclt counts (`midjobs/client/_progress.py`). */
const SIZE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/**
 * A finite, non-negative number, else null.
 * @param {unknown} value
 * @returns {number | null}
 */
function amount(value) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : null;
}

/**
 * A size in binary units with three significant digits at most, as midclt
 * writes it: `512 B`, `1.5 KiB`, `12.3 MiB`, `1 GiB`.
 * @param {number} size bytes
 * @returns {string}
 */
export function formatSize(size) {
  let value = size;
  let unit = 0;
  while (unit < SIZE_UNITS.length - 1 && Math.round(value) >= 1024) {
    value /= 1024;
    unit += 1;
  }
  // Python's "{:.3g}": three significant digits, trailing zeros dropped.
  const text = unit === 0 || value >= 100 ? value.toFixed(0) : String(Number(value.toPrecision(3)));
  return `${text} ${SIZE_UNITS[unit]}`;
}

/**
 * Seconds rounded up, as midclt writes a time left: `3 s`, `2 min 5 s`, `1 h 4 min`.
 * @param {number} seconds
 * @returns {string}
 */
export function formatSecondsLeft(seconds) {
  const whole = Math.ceil(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  const secs = whole % 60;
  if (minutes < 60) return secs ? `${minutes} min ${secs} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  const mins = minutes % 60;
  return mins ? `${hours} h ${mins} min` : `${hours} h`;
}

/**
 * The transfer figures of a job's `progress.extra` (the daemon's standard
 * fields `bytes`, `total_bytes`, `rate` in bytes a second, `eta_seconds`),
 * as `512 MiB of 1 GiB, 172 MiB/s, 3 s left`: each part only when the extra
 * has it, as midclt shows them; "" without `bytes`.
 * @param {unknown} extra
 * @returns {string}
 */
export function transferText(extra) {
  if (!extra || typeof extra !== "object") return "";
  const fields = /** @type {Record<string, unknown>} */ (extra);
  const moved = amount(fields.bytes);
  if (moved === null) return "";
  let text = formatSize(moved);
  const total = amount(fields.total_bytes);
  if (total !== null) text += ` of ${formatSize(total)}`;
  const rate = amount(fields.rate);
  if (rate !== null) text += `, ${formatSize(rate)}/s`;
  const eta = amount(fields.eta_seconds);
  if (eta !== null) text += `, ${formatSecondsLeft(eta)} left`;
  return text;
}
