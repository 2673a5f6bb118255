/**
 * A method's parameters as a form: one labelled field a parameter, with the
 * control its {@link import("./schema.js").Schema} calls for (a text box, a
 * number box, a check box, a choice, a group of fields for a described
 * object, a list editor for a described array, JSON for anything else), read
 * into the positional `params` array a call sends and written back from one.
 *
 * Reading never throws: it gives the value and the problems found, each
 * naming its field, so that the page says what is wrong where it is wrong
 * before anything is sent.  Errors from the daemon's validation (an
 * attribute such as `options.level`) are shown at the field they name.
 * @module paramform
 */

import { el, setText } from "./dom.js";
import { describeType } from "./schema.js";

/** A field left empty: the call does not give it. */
export const EMPTY = Symbol("empty");

/**
 * @typedef {{field: Field, message: string}} Problem
 * @typedef {{prefix: string, count: number}} Ids where the ids of a form's controls come from
 */

/**
 * A new id for a control of the form.
 * @param {Ids} ids
 * @param {string} path
 * @returns {string}
 */
function newId(ids, path) {
  ids.count += 1;
  return `${ids.prefix}-${path.replace(/[^A-Za-z0-9_-]/g, "_")}-${ids.count}`;
}

/**
 * One parameter, or one member or item of one.
 */
class Field {
  /**
   * @param {Ids} ids
   * @param {string} path the dotted path the daemon's errors name it by
   * @param {string} label
   * @param {import("./schema.js").Schema} schema
   * @param {boolean} required
   */
  constructor(ids, path, label, schema, required) {
    this.ids = ids;
    this.path = path;
    this.label = label;
    this.schema = schema;
    this.required = required;
    this.id = newId(ids, path);
    this.errorNode = el("p", "field-error");
    this.errorNode.id = `${this.id}-error`;
    this.errorNode.hidden = true;
    this.hint = el("p", "hint");
    this.hint.id = `${this.id}-hint`;
    const type = describeType(schema);
    this.hint.append(el("span", "type", required ? type : `${type}; optional`));
    if (schema.description) this.hint.append(` — ${schema.description}`);
    /** @type {HTMLInputElement | null} the "null" check box of a nullable field */
    this.nullBox = null;
    /** @type {HTMLElement} */
    this.root = el("div");
  }

  /** The element the keyboard goes to when this field has a problem. */
  get focusTarget() {
    return this.root;
  }

  /**
   * Tie a control to the field: it is described by the hint and the error,
   * and a change to it takes the error away.
   * @param {HTMLElement} control
   */
  describe(control) {
    control.setAttribute("aria-describedby", `${this.hint.id} ${this.errorNode.id}`);
    control.addEventListener("input", () => {
      if (!this.errorNode.hidden) this.setError("");
    });
  }

  /**
   * A "null" check box beside the control, for a nullable field.
   * @param {HTMLElement} place where it goes
   */
  addNullBox(place) {
    const box = /** @type {HTMLInputElement} */ (el("input"));
    box.type = "checkbox";
    box.id = `${this.id}-null`;
    box.className = "null-box";
    const label = el("label", "null-label");
    label.htmlFor = box.id;
    label.append(el("span", "visually-hidden", `${this.label} is `), "null");
    const wrap = el("span", "null-choice");
    wrap.append(box, label);
    place.append(wrap);
    box.addEventListener("change", () => this.nullChanged());
    this.nullBox = box;
  }

  /** The null check box changed: the control is off while it is checked. */
  nullChanged() {}

  /**
   * The field's value, or {@link EMPTY}; problems go to `problems`.
   * @param {Problem[]} problems
   * @returns {any}
   */
  read(problems) {
    void problems;
    return EMPTY;
  }

  /**
   * Show `value` (`undefined`: empty).
   * @param {any} value
   * @returns {string | null} why the value does not fit the field, or null
   */
  write(value) {
    void value;
    return null;
  }

  /**
   * Show or clear the error at this field.
   * @param {string} message
   */
  setError(message) {
    setText(this.errorNode, message);
    this.errorNode.hidden = !message;
    for (const control of this.controls()) {
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    }
  }

  /** @returns {HTMLElement[]} the controls marked invalid with an error */
  controls() {
    return [];
  }

  clearErrors() {
    this.setError("");
  }

  /**
   * The field an error's path names: this one, or the deepest of its own that the path reaches.
   * @param {string[]} keys the path below this field
   * @returns {Field}
   */
  fieldAt(keys) {
    void keys;
    return this;
  }

  /**
   * Whether the value is null (the null box is checked).
   * @returns {boolean}
   */
  isNull() {
    return this.nullBox?.checked ?? false;
  }
}

/**
 * A string, a number, a boolean or a choice among values.
 */
class ScalarField extends Field {
  /**
   * @param {Ids} ids
   * @param {string} path
   * @param {string} label
   * @param {import("./schema.js").Schema} schema
   * @param {boolean} required
   */
  constructor(ids, path, label, schema, required) {
    super(ids, path, label, schema, required);
    const kind = schema.kind;
    this.root = el("div", "field");
    const labelNode = el("label", "", label);
    labelNode.htmlFor = this.id;
    if (!required) labelNode.append(el("span", "optional", " (optional)"));
    /** @type {HTMLInputElement | HTMLSelectElement} */
    let control;
    /** Whether a boolean is a check box (never empty) rather than a choice. */
    this.checkbox = kind === "boolean" && !schema.choices && (required || schema.hasDefault);
    if (schema.choices || (kind === "boolean" && !this.checkbox)) {
      const select = /** @type {HTMLSelectElement} */ (el("select"));
      const values = schema.choices ?? [true, false];
      const none = /** @type {HTMLOptionElement} */ (el("option", "", required ? "Choose…" : (
        schema.hasDefault ? `(default: ${JSON.stringify(schema.default)})` : "(not given)")));
      none.value = "";
      select.append(none);
      values.forEach((value, index) => {
        const option = /** @type {HTMLOptionElement} */ (el("option", "", typeof value === "string" ? value : JSON.stringify(value)));
        option.value = String(index);
        select.append(option);
      });
      this.values = values;
      control = select;
    } else {
      const input = /** @type {HTMLInputElement} */ (el("input"));
      if (this.checkbox) {
        input.type = "checkbox";
        input.checked = schema.hasDefault && schema.default === true;
        this.root.classList.add("check");
      } else if (kind === "integer" || kind === "number") {
        input.type = "number";
        input.step = kind === "integer" ? "1" : "any";
        input.inputMode = kind === "integer" ? "numeric" : "decimal";
      } else {
        input.type = "text";
        input.spellcheck = false;
        input.autocapitalize = "none";
      }
      if (schema.hasDefault && !this.checkbox && schema.default !== null) input.placeholder = String(schema.default);
      control = input;
    }
    control.id = this.id;
    control.name = path;
    if (required && !this.checkbox) control.setAttribute("aria-required", "true");
    this.describe(control);
    this.control = control;
    const line = el("div", "control-line");
    line.append(control);
    if (schema.nullable) this.addNullBox(line);
    if (this.checkbox) this.root.append(line, labelNode, this.hint, this.errorNode);
    else this.root.append(labelNode, line, this.hint, this.errorNode);
  }

  get focusTarget() {
    return this.control;
  }

  controls() {
    return [this.control];
  }

  nullChanged() {
    this.control.disabled = this.isNull();
  }

  /**
   * @param {Problem[]} problems
   * @returns {any}
   */
  read(problems) {
    if (this.isNull()) return null;
    const control = this.control;
    const kind = this.schema.kind;
    if (this.checkbox) {
      // An optional one left at its default is not given: the call is the same either way.
      const checked = /** @type {HTMLInputElement} */ (control).checked;
      return !this.required && checked === this.schema.default ? EMPTY : checked;
    }
    if (control instanceof HTMLSelectElement) {
      if (control.value === "") return EMPTY;
      return this.values?.[Number(control.value)];
    }
    if (kind === "integer" || kind === "number") {
      if (control.validity.badInput) {
        problems.push({ field: this, message: "Not a number" });
        return EMPTY;
      }
      if (control.value === "") return EMPTY;
      const number = Number(control.value);
      if (kind === "integer" && !Number.isInteger(number)) {
        problems.push({ field: this, message: "Not a whole number" });
        return EMPTY;
      }
      return number;
    }
    return control.value === "" ? EMPTY : control.value;
  }

  /**
   * @param {any} value
   * @returns {string | null}
   */
  write(value) {
    const control = this.control;
    const kind = this.schema.kind;
    if (this.nullBox) {
      this.nullBox.checked = value === null;
      this.nullChanged();
    }
    if (value === undefined || value === null) {
      if (value === null && !this.schema.nullable) return `${this.label} cannot be null`;
      if (this.checkbox) /** @type {HTMLInputElement} */ (control).checked = this.schema.default === true;
      else control.value = "";
      return null;
    }
    if (this.checkbox) {
      if (typeof value !== "boolean") return `${this.label} must be true or false`;
      /** @type {HTMLInputElement} */ (control).checked = value;
      return null;
    }
    if (control instanceof HTMLSelectElement) {
      const index = (this.values ?? []).findIndex((v) => v === value);
      if (index === -1) return `${this.label} must be one of the choices, not ${JSON.stringify(value)}`;
      control.value = String(index);
      return null;
    }
    if (kind === "integer" || kind === "number") {
      if (typeof value !== "number" || (kind === "integer" && !Number.isInteger(value))) {
        return `${this.label} must be ${kind === "integer" ? "a whole number" : "a number"}`;
      }
      control.value = String(value);
      return null;
    }
    if (typeof value !== "string") return `${this.label} must be a string`;
    control.value = value;
    return null;
  }
}

/**
 * Any JSON value (an undescribed object or array, or a value of no one type), typed as JSON.
 */
class JsonField extends Field {
  /**
   * @param {Ids} ids
   * @param {string} path
   * @param {string} label
   * @param {import("./schema.js").Schema} schema
   * @param {boolean} required
   */
  constructor(ids, path, label, schema, required) {
    super(ids, path, label, schema, required);
    this.root = el("div", "field json-field");
    const labelNode = el("label", "", label);
    labelNode.htmlFor = this.id;
    if (!required) labelNode.append(el("span", "optional", " (optional)"));
    labelNode.append(el("span", "as-json", " (JSON)"));
    const area = /** @type {HTMLTextAreaElement} */ (el("textarea"));
    area.id = this.id;
    area.name = path;
    area.rows = 2;
    area.spellcheck = false;
    if (schema.hasDefault) area.placeholder = JSON.stringify(schema.default);
    if (required) area.setAttribute("aria-required", "true");
    this.describe(area);
    this.control = area;
    this.root.append(labelNode, area, this.hint, this.errorNode);
  }

  get focusTarget() {
    return this.control;
  }

  controls() {
    return [this.control];
  }

  /**
   * @param {Problem[]} problems
   * @returns {any}
   */
  read(problems) {
    const text = this.control.value.trim();
    if (text === "") return EMPTY;
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      problems.push({ field: this, message: `Not valid JSON: ${error.message}` });
      return EMPTY;
    }
    const kind = this.schema.kind;
    if (value === null ? !(this.schema.nullable || kind === "any")
      : (kind === "object" && (typeof value !== "object" || Array.isArray(value))) ||
        (kind === "array" && !Array.isArray(value))) {
      problems.push({ field: this, message: `Must be a JSON ${kind}${this.schema.nullable ? " or null" : ""}` });
      return EMPTY;
    }
    return value;
  }

  /**
   * @param {any} value
   * @returns {string | null}
   */
  write(value) {
    this.control.value = value === undefined ? "" : JSON.stringify(value);
    return null;
  }
}

/**
 * A described object: a group of fields, one a member.
 */
class ObjectField extends Field {
  /**
   * @param {Ids} ids
   * @param {string} path
   * @param {string} label
   * @param {import("./schema.js").Schema} schema
   * @param {boolean} required
   */
  constructor(ids, path, label, schema, required) {
    super(ids, path, label, schema, required);
    this.root = el("fieldset", "group");
    this.root.id = this.id;
    const legend = el("legend", "", label);
    if (!required) legend.append(el("span", "optional", " (optional)"));
    this.root.setAttribute("aria-describedby", `${this.hint.id} ${this.errorNode.id}`);
    this.root.append(legend, this.hint);
    if (schema.nullable) this.addNullBox(this.root);
    this.members = (schema.properties ?? []).map((p) => makeField(ids, `${path}.${p.name}`, p.name, p.schema, p.required));
    this.body = el("div", "group-body");
    this.body.append(...this.members.map((m) => m.root));
    this.root.append(this.body, this.errorNode);
  }

  get focusTarget() {
    return this.members[0]?.focusTarget ?? this.root;
  }

  nullChanged() {
    this.body.hidden = this.isNull();
  }

  /**
   * @param {Problem[]} problems
   * @returns {any}
   */
  read(problems) {
    if (this.isNull()) return null;
    /** @type {Problem[]} */
    const own = [];
    /** @type {Record<string, any>} */
    const value = {};
    for (const member of this.members) {
      const got = member.read(own);
      if (got === EMPTY) {
        if (member.required) own.push({ field: member, message: "Required" });
      } else value[member.label] = got;
    }
    const given = Object.keys(value).length > 0 || own.some((p) => p.message !== "Required");
    if (!given && !this.required) return EMPTY;
    problems.push(...own);
    return value;
  }

  /**
   * @param {any} value
   * @returns {string | null}
   */
  write(value) {
    if (this.nullBox) {
      this.nullBox.checked = value === null;
      this.nullChanged();
    }
    if (value === null && this.schema.nullable) return null;
    if (value === undefined || value === null) {
      for (const member of this.members) member.write(undefined);
      return value === null ? `${this.label} cannot be null` : null;
    }
    if (typeof value !== "object" || Array.isArray(value)) return `${this.label} must be an object`;
    const names = new Set(this.members.map((m) => m.label));
    const unknown = Object.keys(value).filter((k) => !names.has(k));
    if (unknown.length) return `${this.label} has members the form does not show: ${unknown.join(", ")}`;
    for (const member of this.members) {
      const wrong = member.write(value[member.label]);
      if (wrong) return wrong;
    }
    return null;
  }

  clearErrors() {
    super.clearErrors();
    for (const member of this.members) member.clearErrors();
  }

  /**
   * @param {string[]} keys
   * @returns {Field}
   */
  fieldAt(keys) {
    const member = this.members.find((m) => m.label === keys[0]);
    return member ? member.fieldAt(keys.slice(1)) : this;
  }
}

/**
 * A described array: a list of item fields, each with a button that
 * removes it, and a button that adds one.
 */
class ArrayField extends Field {
  /**
   * @param {Ids} ids
   * @param {string} path
   * @param {string} label
   * @param {import("./schema.js").Schema} schema
   * @param {boolean} required
   */
  constructor(ids, path, label, schema, required) {
    super(ids, path, label, schema, required);
    this.root = el("fieldset", "group list-editor");
    this.root.id = this.id;
    const legend = el("legend", "", label);
    if (!required) legend.append(el("span", "optional", " (optional)"));
    this.root.setAttribute("aria-describedby", `${this.hint.id} ${this.errorNode.id}`);
    this.list = el("ol", "list-items");
    this.add = /** @type {HTMLButtonElement} */ (el("button", "secondary small", `Add to ${label}`));
    this.add.type = "button";
    this.add.addEventListener("click", () => {
      this.addItem();
      this.items[this.items.length - 1].focusTarget.focus();
    });
    this.root.append(legend, this.hint);
    if (schema.nullable) this.addNullBox(this.root);
    this.root.append(this.list, this.add, this.errorNode);
    /** @type {Field[]} */
    this.items = [];
  }

  get focusTarget() {
    return this.items[0]?.focusTarget ?? this.add;
  }

  nullChanged() {
    this.list.hidden = this.add.hidden = this.isNull();
  }

  addItem() {
    const index = this.items.length;
    const itemSchema = /** @type {import("./schema.js").Schema} */ (this.schema.items);
    const item = makeField(this.ids, `${this.path}.${index}`, `${this.label} ${index + 1}`, itemSchema, true);
    const remove = /** @type {HTMLButtonElement} */ (el("button", "secondary small", "Remove"));
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${this.label} ${index + 1}`);
    remove.addEventListener("click", () => this.removeItem(item));
    const entry = el("li", "list-item");
    entry.append(item.root, remove);
    this.list.append(entry);
    this.items.push(item);
  }

  /**
   * Remove an item; those after it move up (and are named again by their place).
   * @param {Field} item
   */
  removeItem(item) {
    const index = this.items.indexOf(item);
    /** @type {Problem[]} */
    const ignored = [];
    const values = this.items.map((i) => i.read(ignored));
    values.splice(index, 1);
    this.write(values.map((v) => (v === EMPTY ? undefined : v)));
    (this.items[Math.min(index, this.items.length - 1)]?.focusTarget ?? this.add).focus();
  }

  /**
   * @param {Problem[]} problems
   * @returns {any}
   */
  read(problems) {
    if (this.isNull()) return null;
    if (this.items.length === 0) return this.required ? [] : EMPTY;
    const values = [];
    for (const item of this.items) {
      const got = item.read(problems);
      if (got === EMPTY) problems.push({ field: item, message: "Give a value, or remove this item" });
      else values.push(got);
    }
    return values;
  }

  /**
   * @param {any} value
   * @returns {string | null}
   */
  write(value) {
    if (this.nullBox) {
      this.nullBox.checked = value === null;
      this.nullChanged();
    }
    this.list.replaceChildren();
    this.items = [];
    if (value === undefined || (value === null && this.schema.nullable)) return null;
    if (!Array.isArray(value)) return `${this.label} must be an array`;
    for (const item of value) {
      this.addItem();
      const wrong = this.items[this.items.length - 1].write(item);
      if (wrong) return wrong;
    }
    return null;
  }

  clearErrors() {
    super.clearErrors();
    for (const item of this.items) item.clearErrors();
  }

  /**
   * @param {string[]} keys
   * @returns {Field}
   */
  fieldAt(keys) {
    const item = /^\d+$/.test(keys[0] ?? "") ? this.items[Number(keys[0])] : undefined;
    return item ? item.fieldAt(keys.slice(1)) : this;
  }
}

/**
 * The field for a value of `schema`.
 * @param {Ids} ids
 * @param {string} path
 * @param {string} label
 * @param {import("./schema.js").Schema} schema
 * @param {boolean} required
 * @returns {Field}
 */
function makeField(ids, path, label, schema, required) {
  if (schema.kind === "object" && schema.properties) return new ObjectField(ids, path, label, schema, required);
  if (schema.kind === "array" && schema.items) return new ArrayField(ids, path, label, schema, required);
  if (schema.kind === "object" || schema.kind === "array" || schema.kind === "any") {
    return new JsonField(ids, path, label, schema, required);
  }
  return new ScalarField(ids, path, label, schema, required);
}

/**
 * A method's parameters as a form.
 */
export class ParamsForm {
  /**
   * @param {import("./schema.js").Property[]} parameters
   * @param {string} idPrefix what the ids of its controls start with
   */
  constructor(parameters, idPrefix) {
    /** @type {Ids} */
    const ids = { prefix: idPrefix, count: 0 };
    this.fields = parameters.map((p) => makeField(ids, p.name, p.name, p.schema, p.required));
    this.root = el("div", "params-fields");
    if (this.fields.length === 0) this.root.append(el("p", "hint", "This method takes no parameters."));
    this.root.append(...this.fields.map((f) => f.root));
  }

  /**
   * The `params` array, and what keeps it from being sent.  Parameters are
   * positional: an optional one left empty is left out at the end; before a
   * given one, it takes its known default or must be given.
   * @returns {{params: any[], problems: Problem[]}}
   */
  read() {
    /** @type {Problem[]} */
    const problems = [];
    const values = this.fields.map((field) => field.read(problems));
    let last = values.length - 1;
    while (last >= 0 && values[last] === EMPTY) last -= 1;
    const params = [];
    for (let i = 0; i < values.length; i += 1) {
      const field = this.fields[i];
      if (values[i] !== EMPTY) {
        if (i <= last) params.push(values[i]);
        continue;
      }
      const fills = !field.required && field.schema.hasDefault;
      if (field.required) problems.push({ field, message: "Required" });
      else if (i < last && !fills) {
        problems.push({ field, message: "Give a value: a later parameter is given, and parameters go in order" });
      }
      // Its place is kept, so that the later ones stay where they are.
      if (i < last) params.push(fills ? field.schema.default : null);
    }
    // In the order the fields are on the page, so that the first gets the focus.
    problems.sort((a, b) => (a.field.root.compareDocumentPosition(b.field.root) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
    return { params, problems };
  }

  /**
   * Show `params` in the fields.
   * @param {any[]} params
   * @returns {string | null} why they do not fit the form, or null
   */
  write(params) {
    if (params.length > this.fields.length) {
      return `This method takes ${this.fields.length} parameter${this.fields.length === 1 ? "" : "s"}, not ${params.length}`;
    }
    for (let i = 0; i < this.fields.length; i += 1) {
      const wrong = this.fields[i].write(params[i]);
      if (wrong) return wrong;
    }
    return null;
  }

  /**
   * The field an error's attribute names (`count`, `options.level`,
   * `paths.2`), or null.
   * @param {string} attribute
   * @returns {Field | null}
   */
  fieldAt(attribute) {
    const [name, ...keys] = attribute.split(".");
    const field = this.fields.find((f) => f.path === name);
    return field ? field.fieldAt(keys) : null;
  }

  clearErrors() {
    for (const field of this.fields) field.clearErrors();
  }
}
