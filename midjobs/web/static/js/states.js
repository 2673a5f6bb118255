/**
 * The job states: their labels and icons, and a badge that shows them with
 * colour, icon and text together (never colour alone).
 * @module states
 */

import { el, icon, setText } from "./dom.js";

/** @type {Record<string, {label: string, icon: string}>} */
export const STATES = {
  WAITING: { label: "Waiting", icon: "waiting" },
  RUNNING: { label: "Running", icon: "running" },
  SUCCESS: { label: "Success", icon: "success" },
  FAILED: { label: "Failed", icon: "failed" },
  ABORTED: { label: "Aborted", icon: "aborted" },
};

/** The states of a job that has ended. */
export const FINISHED = new Set(["SUCCESS", "FAILED", "ABORTED"]);

/**
 * A state badge that can be updated in place.
 */
export class StateBadge {
  /** @param {HTMLElement} [root] an existing element to fill, else a new `<span>` */
  constructor(root) {
    this.root = root ?? el("span");
    this.root.classList.add("state");
    const { svg, use } = icon("waiting");
    this.use = use;
    this.text = el("span", "state-text");
    this.root.replaceChildren(svg, this.text);
    /** @type {string | null} */
    this.state = null;
  }

  /** @param {string} state */
  set(state) {
    if (state === this.state) return;
    const meta = STATES[state] ?? { label: state, icon: "waiting" };
    if (this.state) this.root.classList.remove(`state-${this.state.toLowerCase()}`);
    this.root.classList.add(`state-${state.toLowerCase()}`);
    this.root.dataset.state = state;
    this.use.setAttribute("href", `#i-${meta.icon}`);
    setText(this.text, meta.label);
    this.state = state;
  }
}
