/**
 * The parameters of a form's method: the form built from the method's
 * signature ({@link ParamsForm}) or the raw JSON array, one toggle between
 * them, each written from the other at the switch; JSON that does not parse
 * is said at once, and nothing is sent until it does.  Errors of the daemon's
 * validation go beside the field they name.
 * @module params
 */

import { byId, setText } from "./dom.js";
import { ParamsForm } from "./paramform.js";
import { parametersOf } from "./schema.js";

/**
 * A parameters text as an array.
 * @param {string} text
 * @returns {any[]}
 * @throws {Error} with a message for the user
 */
export function parseParams(text) {
  const trimmed = text.trim();
  if (trimmed === "") return [];
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw new Error(`The parameters are not valid JSON: ${error.message}`);
  }
  if (!Array.isArray(value)) throw new Error("The parameters must be a JSON array, such as [\"/path\", {}].");
  return value;
}

/**
 * The errors of the daemon's validation in an error or a failed job, as
 * `[attribute, message]` pairs: a call's `data.extra` (`[[attribute, message,
 * errno], ...]`, docs/protocol.rst), a failed job's `exc_info` of type
 * `VALIDATION`, or the `[EINVAL] attribute: message` parts of a refused
 * upload's reason.
 * @param {any} source an `RpcError`, a job record or a reason text
 * @returns {[string, string][]}
 */
export function validationErrors(source) {
  /** @type {any} */
  let extra = null;
  if (typeof source === "string") {
    // One a line, or one after another on one line ("... failed while uploading: [EINVAL] a: ... [EINVAL] b: ...").
    const each = /\[[A-Z0-9_]+\] ([^\s:]+): (.+?)(?=\s+\[[A-Z0-9_]+\] [^\s:]+: |\n|$)/g;
    return [...source.matchAll(each)].map((m) => /** @type {[string, string]} */ ([m[1], m[2]]));
  }
  if (source?.exc_info) extra = source.exc_info.type === "VALIDATION" ? source.exc_info.extra : null;
  else if (source?.data) extra = source.data.extra;
  if (!Array.isArray(extra)) return [];
  return extra
    .filter((e) => Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "string")
    .map((e) => /** @type {[string, string]} */ ([e[0], e[1]]));
}

/** The two ways to give the parameters. */
export const Mode = Object.freeze({ FORM: "form", JSON: "json" });

export class ParamsEditor {
  /**
   * @param {string} prefix the ids' prefix of the view (`upload`, `download`)
   */
  constructor(prefix) {
    this.prefix = prefix;
    this.box = byId(`${prefix}-params-form`);
    this.jsonBox = byId(`${prefix}-params-json`);
    this.text = /** @type {HTMLTextAreaElement} */ (byId(`${prefix}-params`));
    this.jsonError = byId(`${prefix}-params-json-error`);
    this.toggle = /** @type {HTMLButtonElement} */ (byId(`${prefix}-params-mode`));
    this.toggleState = byId(`${prefix}-params-mode-state`);
    this.note = byId(`${prefix}-params-note`);
    /** @type {ParamsForm | null} the form of the chosen method, if its signature is described */
    this.form = null;
    /** The mode the user chose; a method with no described signature is given as JSON whatever it is. */
    this.chosen = Mode.FORM;
    /** @type {string} the method whose parameters are shown */
    this.method = "";
    this.toggle.addEventListener("click", () => this.switchTo(this.mode === Mode.JSON ? Mode.FORM : Mode.JSON));
    this.text.addEventListener("input", () => this.checkJson());
  }

  /** @returns {"form" | "json"} how the parameters are given now */
  get mode() {
    return this.form === null ? Mode.JSON : this.chosen;
  }

  /**
   * Show the parameters of `method` (none: an empty box), with `params` in them.
   * @param {string} method
   * @param {import("./methods.js").MethodInfo | undefined} info
   * @param {any[] | string} params the values, or a JSON text kept as typed
   */
  show(method, info, params) {
    this.method = method;
    const parameters = info && info.variadic !== true ? parametersOf(info.accepts) : null;
    this.form = parameters ? new ParamsForm(parameters, `${this.prefix}-p`) : null;
    this.box.replaceChildren(...(this.form ? [this.form.root] : []));
    this.text.value = typeof params === "string" ? params : JSON.stringify(params);
    if (this.form && this.chosen === Mode.FORM) {
      // Kept text that no longer fits goes back to the JSON it was typed as.
      let values = null;
      try {
        values = typeof params === "string" ? parseParams(params) : params;
      } catch {
        values = null;
      }
      if (values === null || this.form.write(values) !== null) this.chosen = Mode.JSON;
    }
    setText(this.note, !info ? "" : this.form === null
      ? "This method does not describe its parameters: give them as a JSON array."
      : "");
    this.showJsonError("");
    this.render();
    this.checkJson();
  }

  /** Show the mode: one of the form and the JSON, and the toggle's state. */
  render() {
    const json = this.mode === Mode.JSON;
    this.box.hidden = json;
    this.jsonBox.hidden = !json && this.form !== null;
    this.toggle.hidden = this.form === null;
    this.toggle.setAttribute("aria-pressed", String(json));
    setText(this.toggleState, json ? "On" : "Off");
  }

  /**
   * Go to `mode`, carrying the values over.  JSON that does not parse, or
   * that the form cannot show, keeps the JSON, saying why.
   * @param {"form" | "json"} mode
   * @returns {boolean} whether the mode is now `mode`
   */
  switchTo(mode) {
    if (this.form === null || mode === this.mode) return mode === this.mode;
    if (mode === Mode.JSON) {
      this.text.value = JSON.stringify(this.form.read().params);
      this.chosen = Mode.JSON;
      this.checkJson();
    } else {
      let values;
      try {
        values = parseParams(this.text.value);
      } catch (error) {
        this.showJsonError(`${error.message} The form shows it once it is.`);
        return false;
      }
      const wrong = this.form.write(values);
      if (wrong) {
        this.showJsonError(`The form cannot show these parameters: ${wrong}.`);
        return false;
      }
      this.chosen = Mode.FORM;
      this.showJsonError("");
    }
    this.render();
    return true;
  }

  /**
   * What the parameters are now, as typed: the values, or the JSON text
   * that does not parse (kept for when the method is chosen again).
   * @returns {any[] | string}
   */
  current() {
    if (this.mode === Mode.FORM && this.form) return this.form.read().params;
    return this.text.value;
  }

  /** Say at once whether the JSON parses. */
  checkJson() {
    if (this.mode !== Mode.JSON) return;
    try {
      parseParams(this.text.value);
      this.showJsonError("");
    } catch (error) {
      this.showJsonError(error.message);
    }
  }

  /** @param {string} message */
  showJsonError(message) {
    setText(this.jsonError, message);
    if (message) this.text.setAttribute("aria-invalid", "true");
    else this.text.removeAttribute("aria-invalid");
  }

  /**
   * The parameters to send.  Problems are shown where they are (the field,
   * or the JSON) and the first gets the focus.
   * @returns {any[]}
   * @throws {Error} saying that the parameters cannot be sent, and why
   */
  value() {
    this.clearErrors();
    if (this.mode === Mode.JSON || !this.form) {
      try {
        return parseParams(this.text.value);
      } catch (error) {
        this.showJsonError(error.message);
        throw error;
      }
    }
    const { params, problems } = this.form.read();
    if (problems.length) {
      for (const { field, message } of problems) field.setError(message);
      problems[0].field.focusTarget.focus();
      const names = [...new Set(problems.map((p) => p.field.path))].join(", ");
      throw new Error(`Some parameters need attention: ${names}.`);
    }
    return params;
  }

  clearErrors() {
    this.form?.clearErrors();
    this.showJsonError("");
  }

  /**
   * Show the daemon's validation errors of a call of `method` at the
   * fields they name.  An attribute names a parameter (`count`), a member or
   * item in one (`options.level`, `paths.0`), maybe after the method's name
   * (`backup.run.count`) or `params`.
   * @param {string} method
   * @param {[string, string][]} errors
   * @returns {string[]} the errors no field shows, as `attribute: message`
   */
  showErrors(method, errors) {
    const rest = [];
    let first = null;
    for (const [attribute, message] of errors) {
      let path = attribute;
      if (path.startsWith(`${method}.`)) path = path.slice(method.length + 1);
      else if (path.startsWith("params.")) path = path.slice("params.".length);
      const field = method === this.method && this.mode === Mode.FORM ? this.form?.fieldAt(path) : null;
      if (field) {
        field.setError(message);
        first ??= field;
      } else rest.push(`${attribute}: ${message}`);
    }
    first?.focusTarget.focus();
    return rest;
  }
}
