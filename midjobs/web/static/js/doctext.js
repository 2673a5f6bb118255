/**
 * A method's documentation (its docstring, from `core.get_methods`) as
 * readable DOM: paragraphs, bulleted and numbered lists, literal blocks,
 * epytext fields (`@param x: ...`) and inline code, emphasis and strong text.
 *
 * The text is never parsed as HTML: every piece becomes a text node inside an
 * element made here, so `<img src=x onerror=...>` in a docstring reads as those
 * characters.
 * @module doctext
 */

import { el } from "./dom.js";

/** A bullet (`-`, `*`, `•`) or number (`1.`, `2)`) starting a list item. */
const ITEM = /^(\s*)([-*•]|\d{1,3}[.)])\s+(.*)$/;
/** An epytext field: `@param name: text`, `@return: text`, `@raise Error: text`. */
const FIELD = /^@(\w+)(?:\s+([^:]*?))?\s*:\s*(.*)$/;
/** How epytext fields read, by tag. */
const FIELD_NAMES = {
  param: "Parameter", type: "Type of", keyword: "Keyword", return: "Returns", returns: "Returns",
  rtype: "Return type", raise: "Raises", raises: "Raises", ivar: "Attribute", cvar: "Attribute",
  var: "Variable", note: "Note", see: "See", since: "Since", deprecated: "Deprecated",
};
/** Epytext's inline markup: `C{code}`, `I{italic}`, `B{bold}`, `L{link}`, `U{url}`, `M{math}`, `E{escape}`. */
const EPYTEXT = /[BCEILMUX]\{/;

/**
 * The length of the leading white space of a line.
 * @param {string} line
 * @returns {number}
 */
function indentOf(line) {
  return line.length - line.trimStart().length;
}

/**
 * The index just past the brace that closes the one before `start`, or -1.
 * @param {string} text
 * @param {number} start the index after an opening `{`
 * @returns {number}
 */
function closingBrace(text, start) {
  let depth = 1;
  for (let i = start; i < text.length; i += 1) {
    if (text[i] === "{") depth += 1;
    else if (text[i] === "}" && --depth === 0) return i + 1;
  }
  return -1;
}

/**
 * Inline markup as nodes: ``` ``code`` ``` and `` `code` `` (reStructuredText
 * and Markdown), `**strong**`, and epytext's `C{}`, `I{}`, `B{}`, `L{}`,
 * `U{}`, `M{}`.  Anything else is text.
 * @param {string} text
 * @returns {(Node | string)[]}
 */
export function inline(text) {
  /** @type {(Node | string)[]} */
  const out = [];
  let plain = "";
  let i = 0;
  const flush = () => {
    if (plain) out.push(plain);
    plain = "";
  };
  while (i < text.length) {
    const rest = text.slice(i);
    let match;
    if ((match = /^``(.+?)``/.exec(rest)) || (match = /^`([^`]+)`/.exec(rest))) {
      flush();
      out.push(el("code", "", match[1]));
      i += match[0].length;
      continue;
    }
    if ((match = /^\*\*(\S(?:.*?\S)?)\*\*/.exec(rest))) {
      flush();
      const strong = el("strong");
      strong.append(...inline(match[1]));
      out.push(strong);
      i += match[0].length;
      continue;
    }
    if (EPYTEXT.test(rest.slice(0, 2)) && (i === 0 || !/\w/.test(text[i - 1]))) {
      const end = closingBrace(text, i + 2);
      if (end !== -1) {
        flush();
        const tag = text[i];
        const inner = text.slice(i + 2, end - 1);
        if (tag === "C" || tag === "M") out.push(el("code", "", inner));
        else if (tag === "L") out.push(el("code", "", inner.replace(/\s*<[^<>]*>$/, "")));
        else if (tag === "I" || tag === "B") {
          const node = el(tag === "I" ? "em" : "strong");
          node.append(...inline(inner));
          out.push(node);
        } else if (tag === "E") plain += { lb: "{", rb: "}" }[inner] ?? inner;
        else plain += inner;
        i = end;
        continue;
      }
    }
    plain += text[i];
    i += 1;
  }
  flush();
  return out;
}

/**
 * An element holding `text` with its inline markup.
 * @param {string} tag
 * @param {string} text
 * @returns {HTMLElement}
 */
function block(tag, text) {
  const node = el(tag);
  node.append(...inline(text));
  return node;
}

/**
 * A docstring as a fragment of blocks.
 * @param {string | null} text
 * @returns {DocumentFragment}
 */
export function renderDoc(text) {
  const fragment = document.createDocumentFragment();
  const lines = (text ?? "").replace(/\r\n?/g, "\n").split("\n");
  /** @type {string[]} the lines of the paragraph being read */
  let paragraph = [];
  /** @type {HTMLElement | null} the list being read */
  let list = null;
  /** @type {{node: HTMLElement, lines: string[], indent: number} | null} the list item or field being read */
  let item = null;
  /** @type {HTMLElement | null} the epytext fields being read */
  let fields = null;
  let literalNext = false;

  const endItem = () => {
    if (item) item.node.append(...inline(item.lines.join(" ")));
    item = null;
  };
  const endParagraph = () => {
    if (paragraph.length) {
      let joined = paragraph.join(" ");
      if (joined.endsWith("::")) {
        literalNext = true;
        joined = joined.slice(0, -1);
      }
      fragment.append(block("p", joined));
    }
    paragraph = [];
  };
  const endAll = () => {
    endItem();
    endParagraph();
    list = null;
    fields = null;
  };

  for (let n = 0; n < lines.length; n += 1) {
    const line = lines[n];
    if (line.trim() === "") {
      endItem();
      endParagraph();
      continue;
    }
    const indent = indentOf(line);
    // A fenced block (```), or an indented one after `::` or a blank line.
    if (line.trim().startsWith("```")) {
      endAll();
      const body = [];
      for (n += 1; n < lines.length && !lines[n].trim().startsWith("```"); n += 1) body.push(lines[n]);
      fragment.append(el("pre", "code", body.join("\n")));
      continue;
    }
    if (indent > 0 && paragraph.length === 0 && item === null && (literalNext || list === null && fields === null)) {
      endAll();
      const body = [];
      for (; n < lines.length && (lines[n].trim() === "" || indentOf(lines[n]) >= indent); n += 1) {
        body.push(lines[n].slice(indent));
      }
      n -= 1;
      while (body.length && body[body.length - 1].trim() === "") body.pop();
      fragment.append(el("pre", "code", body.join("\n")));
      literalNext = false;
      continue;
    }
    literalNext = false;
    const field = FIELD.exec(line.trim());
    if (field && indent === 0) {
      endItem();
      endParagraph();
      list = null;
      if (!fields) {
        fields = el("dl", "doc-fields");
        fragment.append(fields);
      }
      const [, tag, argument, rest] = field;
      const term = el("dt", "", FIELD_NAMES[/** @type {keyof FIELD_NAMES} */ (tag)] ?? tag);
      if (argument) term.append(" ", el("code", "", argument));
      const definition = el("dd");
      fields.append(term, definition);
      item = { node: definition, lines: rest ? [rest] : [], indent: 1 };
      continue;
    }
    const bullet = ITEM.exec(line);
    if (bullet && (paragraph.length === 0 || list !== null || item !== null || indent === 0)) {
      endItem();
      endParagraph();
      fields = null;
      const ordered = /\d/.test(bullet[2]);
      const tag = ordered ? "ol" : "ul";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (ordered && parseInt(bullet[2], 10) !== 1) list.setAttribute("start", String(parseInt(bullet[2], 10)));
        fragment.append(list);
      }
      const entry = el("li");
      list.append(entry);
      item = { node: entry, lines: [bullet[3]], indent: indent + 1 };
      continue;
    }
    if (item && indent >= item.indent) {
      item.lines.push(line.trim());
      continue;
    }
    endItem();
    list = null;
    fields = null;
    paragraph.push(line.trim());
  }
  endAll();
  return fragment;
}
