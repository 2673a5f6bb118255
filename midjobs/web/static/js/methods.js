/**
 * The methods a form can start (from `core.get_methods`), and the parts the
 * upload and download forms share: the method choice with its documentation,
 * and the parameters as a JSON array.
 * @module methods
 */

import { el, setText } from "./dom.js";

/**
 * @typedef {{description: string | null, accepts: {name: string, required: boolean, type: string[] | null}[],
 *   uploadable: boolean, downloadable: boolean}} MethodInfo
 */

/**
 * A docstring for reading: epytext markup such as `C{path}` becomes `path`.
 * @param {string | null} text
 * @returns {string}
 */
export function plainDoc(text) {
  return (text ?? "").replace(/\b[BCILMU]\{([^{}]*)\}/g, "$1");
}

/**
 * `name(a, b?)`: a method's parameters as a hint.
 * @param {string} name
 * @param {MethodInfo} info
 * @returns {string}
 */
export function signature(name, info) {
  const params = (info.accepts ?? []).map((p) => {
    const type = p.type ? `: ${p.type.join(" | ")}` : "";
    return `${p.name}${p.required ? "" : "?"}${type}`;
  });
  return `${name}(${params.join(", ")})`;
}

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
 * A method `<select>` filled with the methods that pass a test, showing the
 * chosen one's signature and documentation, and keeping the parameters typed
 * for each method.
 */
export class MethodChoice {
  /**
   * @param {HTMLSelectElement} select
   * @param {HTMLTextAreaElement} params
   * @param {HTMLElement} doc
   * @param {HTMLElement} hint
   * @param {(info: MethodInfo) => boolean} test
   */
  constructor(select, params, doc, hint, test) {
    this.select = select;
    this.params = params;
    this.doc = doc;
    this.hint = hint;
    this.test = test;
    /** @type {Record<string, MethodInfo>} */
    this.methods = {};
    /** @type {Map<string, string>} parameters typed, by method */
    this.typed = new Map();
    this.current = "";
    /** What the documentation line says when no method is offered. */
    this.none = "";
    select.addEventListener("change", () => this.chosen());
  }

  /**
   * Offer the methods that pass the test and that the user may call (no
   * choice that the daemon would refuse after the upload was sent).  None is
   * chosen unless there is only one: the user picks, the page does not guess.
   * @param {Record<string, MethodInfo>} methods all of `core.get_methods`
   * @param {import("./access.js").Identity | null} identity who is logged in
   * @param {string} none what to say when the user may call none of them
   * @returns {number} how many methods are offered
   */
  fill(methods, identity, none) {
    const previous = this.select.value;
    this.methods = {};
    const options = [];
    for (const [name, info] of Object.entries(methods)) {
      if (!this.test(info) || !(identity?.mayCall(info) ?? false)) continue;
      this.methods[name] = info;
      const option = /** @type {HTMLOptionElement} */ (el("option", "", name));
      option.value = name;
      options.push(option);
    }
    this.none = options.length === 0 ? none : "";
    if (options.length !== 1) {
      const placeholder = /** @type {HTMLOptionElement} */ (
        el("option", "", options.length === 0 ? "(none you may call)" : "Choose a method…"));
      placeholder.value = "";
      options.unshift(placeholder);
    }
    this.select.replaceChildren(...options);
    this.select.disabled = options.length === 1 && this.select.options[0]?.value === "";
    this.select.value = previous in this.methods ? previous : options[0].value;
    this.current = "";
    this.chosen();
    return Object.keys(this.methods).length;
  }

  chosen() {
    if (this.current) this.typed.set(this.current, this.params.value);
    const name = this.select.value;
    this.current = name;
    const info = this.methods[name];
    setText(this.doc, info ? plainDoc(info.description ?? null) : this.none);
    setText(this.hint, info ? `Parameters of ${signature(name, info)}` : "");
    this.params.value = this.typed.get(name) ?? "[]";
  }
}
