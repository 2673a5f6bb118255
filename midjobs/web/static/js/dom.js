/**
 * Small helpers for building and finding elements.
 * @module dom
 */

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * The element with this id (it must exist: the page ships it).
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found;
}

/**
 * A new element with a class and text.
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * An icon from the page's sprite (`<symbol id="i-...">`), hidden from assistive technology.
 * @param {string} name the symbol's id without `i-`
 * @returns {{svg: SVGSVGElement, use: SVGUseElement}}
 */
export function icon(name) {
  const svg = /** @type {SVGSVGElement} */ (document.createElementNS(SVG_NS, "svg"));
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = /** @type {SVGUseElement} */ (document.createElementNS(SVG_NS, "use"));
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return { svg, use };
}

/**
 * Set an element's text only when it changed (a DOM write costs more than a compare).
 * @param {Node} node
 * @param {string} text
 */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Let the browser save the file behind a same-origin URL that answers with
 * `Content-Disposition: attachment`: the page stays where it is.
 * @param {string} url
 * @param {string} filename
 */
export function saveUrl(url, filename) {
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = filename;
  anchor.hidden = true;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
}
