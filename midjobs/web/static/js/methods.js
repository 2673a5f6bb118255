/**
 * The methods a form can start (from `core.get_methods`), and the parts the
 * upload and download forms share: the method choice with its documentation,
 * and its parameters (a form, or a JSON array: {@link ParamsEditor}).
 * @module methods
 */

import { byId, el, setText } from "./dom.js";
import { renderDoc } from "./doctext.js";
import { ParamsEditor } from "./params.js";

/**
 * @typedef {{description: string | null, accepts: {name: string, required: boolean, type: string[] | null}[],
 *   uploadable: boolean, downloadable: boolean}} MethodInfo
 */

/**
 * `name(a, b?)`: a method's parameters as a hint.
 * @param {string} name
 * @param {MethodInfo} info
 * @returns {string}
 */
export function signature(name, info) {
  const params = (info.accepts ?? []).map((p) => {
    const type = Array.isArray(p.type) ? `: ${p.type.join(" | ")}` : "";
    return `${p.name}${p.required ? "" : "?"}${type}`;
  });
  return `${name}(${params.join(", ")})`;
}

/**
 * A method `<select>` filled with the methods that pass a test, showing the
 * chosen one's signature and documentation, and keeping the parameters typed
 * for each method.
 */
export class MethodChoice {
  /**
   * @param {string} prefix the ids' prefix of the view (`upload`, `download`):
   *   `<prefix>-method`, `<prefix>-method-doc`, `<prefix>-params-hint` and those of {@link ParamsEditor}
   * @param {(info: MethodInfo) => boolean} test
   */
  constructor(prefix, test) {
    this.select = /** @type {HTMLSelectElement} */ (byId(`${prefix}-method`));
    this.doc = byId(`${prefix}-method-doc`);
    this.hint = byId(`${prefix}-params-hint`);
    this.params = new ParamsEditor(prefix);
    this.test = test;
    /** @type {Record<string, MethodInfo>} */
    this.methods = {};
    /** @type {Map<string, any[] | string>} parameters typed, by method */
    this.typed = new Map();
    this.current = "";
    /** What the documentation line says when no method is offered. */
    this.none = "";
    this.select.addEventListener("change", () => this.chosen());
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
    if (this.current) this.typed.set(this.current, this.params.current());
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
    if (this.current) this.typed.set(this.current, this.params.current());
    const name = this.select.value;
    this.current = name;
    const info = this.methods[name];
    if (info) this.doc.replaceChildren(renderDoc(info.description ?? null));
    else setText(this.doc, this.none);
    setText(this.hint, info ? `Parameters of ${signature(name, info)}` : "");
    this.params.show(name, info, this.typed.get(name) ?? []);
  }
}
