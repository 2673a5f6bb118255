/**
 * The confirmation asked before an action that cannot be undone: the page's
 * one modal `<dialog>`, opened with `showModal()` so that the browser keeps
 * the focus inside it, Escape cancels it and the focus returns where it was.
 * The focus starts on Cancel: Enter alone never does the harm.
 * @module confirm
 */

import { byId, setText } from "./dom.js";

/**
 * What to ask.
 * @typedef {{title: string, message: string, risk?: string, confirm: string}} Question
 */

/**
 * Ask; resolve true if the user confirmed, false if they cancelled (the
 * Cancel button, Escape, or another question asked meanwhile).
 * @param {Question} question
 * @returns {Promise<boolean>}
 */
export function confirmAction(question) {
  const dialog = /** @type {HTMLDialogElement} */ (byId("confirm"));
  if (dialog.open) dialog.close("cancel");
  setText(byId("confirm-title"), question.title);
  setText(byId("confirm-message"), question.message);
  setText(byId("confirm-risk"), question.risk ?? "");
  setText(byId("confirm-ok"), question.confirm);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    byId("confirm-cancel").focus();
  });
}
