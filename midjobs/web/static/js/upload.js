/**
 * The upload form: a method with an input pipe, its parameters, one to five
 * files; `POST /_upload` with XMLHttpRequest for the bytes-sent progress,
 * then the job's own progress.
 * @module upload
 */

import { byId, el, setText } from "./dom.js";
import { formatBytes } from "./format.js";
import { JobFollow } from "./jobfollow.js";
import { MethodChoice } from "./methods.js";
import { validationErrors } from "./params.js";

/** The most files one upload carries (docs/protocol.rst, "POST /_upload"). */
export const MAX_FILES = 5;
/** Where uploads go. */
const UPLOAD_URL = "/_upload";

/**
 * The daemon's word on a refused upload: short and with the status for the
 * user, or its reason as it is.
 * @param {XMLHttpRequest} xhr
 * @param {boolean} forUser
 * @returns {string}
 */
function refusal(xhr, forUser) {
  let text = (xhr.responseText ?? "").trim();
  try {
    const body = JSON.parse(text);
    text = body?.error?.reason ?? body?.reason ?? body?.error ?? body?.message ?? text;
  } catch {
    // Not JSON: the text as it is.
  }
  if (typeof text !== "string") text = JSON.stringify(text);
  if (!forUser) return text;
  return `The daemon refused the upload (HTTP ${xhr.status})${text ? `: ${text.slice(0, 300)}` : "."}`;
}

export class UploadView {
  /**
   * @param {import("./session.js").Session} session
   * @param {import("./jobstore.js").JobStore} store
   */
  constructor(session, store) {
    this.session = session;
    this.form = /** @type {HTMLFormElement} */ (byId("upload-form"));
    this.input = /** @type {HTMLInputElement} */ (byId("upload-files"));
    this.drop = byId("upload-drop");
    this.list = byId("upload-files-list");
    this.error = byId("upload-error");
    this.submit = /** @type {HTMLButtonElement} */ (byId("upload-submit"));
    this.cancel = /** @type {HTMLButtonElement} */ (byId("upload-cancel"));
    this.status = byId("upload-status");
    this.statusTitle = byId("upload-status-title");
    this.bytes = /** @type {HTMLProgressElement} */ (byId("upload-bytes"));
    this.bytesText = byId("upload-bytes-text");
    this.choice = new MethodChoice("upload", (info) => info.uploadable);
    /** The method of the upload sent last. */
    this.method = "";
    this.job = new JobFollow(store, byId("upload-job"), (job) => this.ended(job));
    /** @type {File[]} */
    this.files = [];
    /** @type {XMLHttpRequest | null} */
    this.xhr = null;

    this.input.addEventListener("change", () => this.setFiles([...(this.input.files ?? [])]));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    this.cancel.addEventListener("click", () => this.xhr?.abort());
    for (const type of ["dragenter", "dragover"]) {
      this.form.addEventListener(type, (event) => {
        if (!event.dataTransfer?.types.includes("Files")) return;
        event.preventDefault();
        this.drop.classList.add("over");
      });
    }
    this.form.addEventListener("dragleave", (event) => {
      if (event.target === this.drop || !this.form.contains(/** @type {Node} */ (event.relatedTarget))) {
        this.drop.classList.remove("over");
      }
    });
    this.form.addEventListener("drop", (event) => {
      this.drop.classList.remove("over");
      if (!event.dataTransfer?.files.length) return;
      event.preventDefault();
      this.setFiles([...event.dataTransfer.files]);
    });
  }

  /**
   * @param {Record<string, import("./methods.js").MethodInfo>} methods
   * @param {import("./access.js").Identity | null} identity who is logged in
   */
  setMethods(methods, identity) {
    const offered = this.choice.fill(
      methods, identity, "You may not call any method that takes an upload: an administrator can give you a role that allows one.",
    );
    this.submit.disabled = offered === 0;
  }

  /** @param {File[]} files */
  setFiles(files) {
    this.files = files;
    const items = files.map((file) => el("li", "", `${file.name} (${formatBytes(file.size)})`));
    this.list.replaceChildren(...items);
    setText(this.error, "");
  }

  async start() {
    if (this.xhr) return;
    setText(this.error, "");
    const method = this.choice.select.value;
    let params;
    try {
      if (!method) throw new Error("Choose a method.");
      params = this.choice.params.value();
      if (this.files.length === 0) throw new Error("Choose at least one file.");
      if (this.files.length > MAX_FILES) throw new Error(`At most ${MAX_FILES} files go in one upload.`);
    } catch (error) {
      setText(this.error, error.message);
      return;
    }
    this.submit.disabled = true;
    this.job.stop();
    this.status.hidden = true;
    let token;
    try {
      token = await this.session.transferToken();
    } catch (error) {
      setText(this.error, `Could not start the upload: ${error.message}`);
      this.submit.disabled = false;
      return;
    }
    const body = new FormData();
    // The data part must come first (docs/protocol.rst, "POST /_upload"), then the files.
    body.append("data", JSON.stringify({ method, params }));
    this.method = method;
    for (const file of this.files) body.append("file", file, file.name);
    this.send(body, token);
  }

  /**
   * @param {FormData} body
   * @param {string} token
   */
  send(body, token) {
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    this.job.stop();
    this.status.hidden = false;
    this.cancel.hidden = false;
    setText(this.statusTitle, "Sending");
    this.bytes.value = 0;
    setText(this.bytesText, "");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.floor((100 * event.loaded) / event.total);
      this.bytes.value = percent;
      setText(this.bytesText, `${formatBytes(event.loaded)} of ${formatBytes(event.total)} (${percent}%)`);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 200) {
        let answer = null;
        try {
          answer = JSON.parse(xhr.responseText);
        } catch {
          // Handled below.
        }
        if (answer && typeof answer.job_id === "number") {
          this.bytes.value = 100;
          setText(this.statusTitle, "Sent");
          this.job.follow(answer.job_id);
        } else {
          setText(this.error, "The daemon's answer to the upload had no job id.");
        }
      } else {
        setText(this.statusTitle, "Refused");
        // Errors of the parameters' validation go beside their fields; the rest is said here.
        const errors = validationErrors(refusal(xhr, false));
        const rest = this.choice.params.showErrors(this.method, errors);
        setText(this.error, errors.length === 0 || rest.length ? refusal(xhr, true)
          : `The daemon refused the upload (HTTP ${xhr.status}): see the parameters marked.`);
      }
      this.done();
    });
    xhr.addEventListener("error", () => {
      setText(this.statusTitle, "Failed");
      setText(this.error, "The upload failed: the connection to the daemon was lost.");
      this.done();
    });
    xhr.addEventListener("abort", () => {
      setText(this.statusTitle, "Cancelled");
      setText(this.error, "The upload was cancelled.");
      this.done();
    });
    xhr.open("POST", UPLOAD_URL);
    xhr.setRequestHeader("Authorization", `Token ${token}`);
    xhr.send(body);
  }

  /**
   * The job that received the upload ended: errors of its validation go beside their fields.
   * @param {import("./jobstore.js").JobRecord} job
   */
  ended(job) {
    const errors = validationErrors(job);
    if (errors.length) this.choice.params.showErrors(this.method, errors);
  }

  done() {
    this.xhr = null;
    this.submit.disabled = false;
    this.cancel.hidden = true;
  }
}
