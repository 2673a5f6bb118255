/**
 * What a method's parameters are, read from its `core.get_methods` entry
 * (`accepts`): one {@link Schema} a parameter, whichever way it is described.
 *
 * The daemon describes a parameter as `{name, required, type}`, where `type`
 * is the list of JSON types it accepts (`["string", "null"]`) or `null` for
 * any value.  A JSON-Schema-like description is read as well, on the
 * parameter itself or under its `schema`: `type` (a name or a list),
 * `nullable`, `enum`, `default`, `title`, `description`, an object's
 * `properties` and `required` names, an array's `items`.
 * @module schema
 */

/**
 * @typedef {"string" | "integer" | "number" | "boolean" | "object" | "array" | "any"} Kind
 *
 * @typedef {object} Schema
 * @property {Kind} kind the control it gets; `any` is a JSON value
 * @property {boolean} nullable whether `null` is accepted
 * @property {any[] | null} choices the values it may take (`enum`), if limited
 * @property {boolean} hasDefault whether `default` is known
 * @property {any} default
 * @property {string} description
 * @property {Property[] | null} properties an object's described members
 * @property {Schema | null} items an array's items, when described
 *
 * @typedef {{name: string, required: boolean, schema: Schema}} Property
 */

const KINDS = new Set(["string", "integer", "number", "boolean", "object", "array"]);

/**
 * The kind of a value of an `enum`.
 * @param {any[]} values
 * @returns {Kind}
 */
function kindOfValues(values) {
  const kinds = new Set(values.filter((v) => v !== null).map((v) => {
    if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
    return typeof v;
  }));
  if (kinds.size === 1) {
    const [only] = kinds;
    if (only === "string" || only === "integer" || only === "number" || only === "boolean") return only;
  }
  return "any";
}

/**
 * One described value as a {@link Schema}.
 * @param {any} described a parameter, a property or an array's items
 * @returns {Schema}
 */
export function toSchema(described) {
  const source = described && typeof described.schema === "object" && described.schema !== null
    ? described.schema : (described ?? {});
  const types = source.type === undefined || source.type === null
    ? [] : (Array.isArray(source.type) ? source.type : [source.type]);
  const choices = Array.isArray(source.enum) && source.enum.length ? source.enum : null;
  let nullable = source.nullable === true || types.includes("null") || (choices?.includes(null) ?? false);
  const named = types.filter((t) => t !== "null");
  /** @type {Kind} */
  let kind = "any";
  if (named.length === 1 && KINDS.has(named[0])) kind = named[0];
  else if (named.length === 2 && named.includes("integer") && named.includes("number")) kind = "number";
  else if (named.length === 0 && choices) kind = kindOfValues(choices);
  else if (named.length === 0 && source.properties) kind = "object";
  else if (named.length === 0 && source.items) kind = "array";
  if (kind === "any") nullable = false;
  /** @type {Property[] | null} */
  let properties = null;
  if (kind === "object" && source.properties && typeof source.properties === "object") {
    const required = new Set(Array.isArray(source.required) ? source.required : []);
    properties = Object.entries(source.properties).map(([name, member]) => ({
      name, required: required.has(name), schema: toSchema(member),
    }));
  }
  const items = kind === "array" && source.items && typeof source.items === "object" ? toSchema(source.items) : null;
  return {
    kind,
    nullable,
    choices: choices ? choices.filter((v) => v !== null) : null,
    hasDefault: "default" in source,
    default: source.default,
    description: typeof source.description === "string" ? source.description : "",
    properties,
    items,
  };
}

/**
 * The parameters of a method, or `null` when its entry does not describe
 * them (no `accepts`, or no parameter with a type): those are given as JSON.
 * @param {any} accepts the `accepts` of a `core.get_methods` entry
 * @returns {Property[] | null}
 */
export function parametersOf(accepts) {
  if (!Array.isArray(accepts)) return null;
  const parameters = accepts.map((p) => ({
    name: String(p?.name ?? ""), required: p?.required === true, schema: toSchema(p),
  }));
  if (parameters.some((p) => !p.name)) return null;
  if (parameters.length > 0 && parameters.every((p) => p.schema.kind === "any")) return null;
  return parameters;
}

/**
 * A schema's type as a short phrase for a hint: `integer`, `string or null`, `one of "a", "b"`.
 * @param {Schema} schema
 * @returns {string}
 */
export function describeType(schema) {
  let text = schema.kind === "any" ? "any JSON value" : schema.kind;
  if (schema.choices) text = `one of ${schema.choices.map((v) => JSON.stringify(v)).join(", ")}`;
  if (schema.kind === "array" && schema.items && schema.items.kind !== "any") text = `array of ${describeType(schema.items)}`;
  if (schema.nullable) text += " or null";
  if (schema.hasDefault) text += `; default ${JSON.stringify(schema.default)}`;
  return text;
}
