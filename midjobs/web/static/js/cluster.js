/**
 * The nodes of the cluster the daemon is part of (`cluster.nodes`), asked
 * for again every {@link REFRESH_MS} while the page is logged in and shown,
 * and the line above the job list that lists them, with their state and
 * running jobs, when there is more than one.  A daemon alone is a cluster of
 * one node: the line stays hidden.
 * @module cluster
 */

import { byId, el, setText } from "./dom.js";
import { dateMs, formatTime } from "./format.js";
import { queryHash } from "./listquery.js";
import { ConnectionLost } from "./rpc.js";

/** How often the nodes are asked for again (ms). */
const REFRESH_MS = 10_000;

/**
 * One node, as `cluster.nodes` gives it.
 * @typedef {{name: string, advertise: string | null, state: string, heartbeat: any, running_jobs: number}} ClusterNode
 * @typedef {import("./listquery.js").ListQuery} ListQuery
 */

export class ClusterNodes {
  /**
   * @param {import("./rpc.js").RpcClient} rpc
   * @param {(nodes: ClusterNode[]) => void} changed told the nodes each time they are fetched
   */
  constructor(rpc, changed) {
    this.rpc = rpc;
    this.changed = changed;
    /** @type {number} the refresh timer, or 0 when stopped */
    this.timer = 0;
  }

  /** Fetch the nodes now, and again every {@link REFRESH_MS} until {@link stop}. */
  start() {
    this.stop();
    this.timer = window.setInterval(() => {
      if (!document.hidden) this.refresh().catch(() => {});
    }, REFRESH_MS);
    return this.refresh();
  }

  stop() {
    if (this.timer !== 0) clearInterval(this.timer);
    this.timer = 0;
  }

  /**
   * Fetch the nodes.  A user the daemon does not let list them sees none
   * (the job list still names the node of each job).
   */
  async refresh() {
    /** @type {ClusterNode[]} */
    let nodes;
    try {
      nodes = await this.rpc.call("cluster.nodes");
    } catch (error) {
      if (error instanceof ConnectionLost) throw error;
      nodes = [];
    }
    if (this.timer !== 0) this.changed(nodes);
  }
}

/**
 * `Online`, `Offline`
 * @param {string} state
 * @returns {string}
 */
function stateWord(state) {
  return state === "ONLINE" ? "Online" : state === "OFFLINE" ? "Offline" : state;
}

/**
 * The cluster line above the job list: each node, its state, and its running
 * jobs as a link to them.  The node's name links to its jobs.
 */
export class ClusterLine {
  constructor() {
    this.root = byId("cluster");
    this.list = byId("cluster-nodes");
  }

  /**
   * @param {ClusterNode[]} nodes
   * @param {ListQuery} query the list shown (the links keep its sort)
   */
  show(nodes, query) {
    this.root.hidden = nodes.length < 2;
    if (this.root.hidden) {
      this.list.replaceChildren();
      return;
    }
    const items = nodes.map((node) => {
      const item = el("li", "cluster-node");
      item.dataset.node = node.name;
      item.dataset.state = node.state.toLowerCase();
      const name = /** @type {HTMLAnchorElement} */ (el("a", "node-name", node.name));
      name.href = `#${queryHash({ ...query, node: node.name, page: 0 })}`;
      name.setAttribute("aria-label", `Jobs of node ${node.name}`);
      if (query.node === node.name) name.setAttribute("aria-current", "true");
      if (node.advertise) name.title = node.advertise;
      const heartbeat = dateMs(node.heartbeat);
      const state = el("span", "node-state", stateWord(node.state));
      if (heartbeat !== null) state.title = `Last heartbeat ${formatTime(heartbeat)}`;
      const running = /** @type {HTMLAnchorElement} */ (el("a", "node-running"));
      running.href = `#${queryHash({ ...query, state: "RUNNING", node: node.name, page: 0 })}`;
      running.append(el("span", "n", String(node.running_jobs)), " running");
      item.append(name, " ", state, " ", running);
      if (node.state !== "ONLINE" && heartbeat !== null) {
        item.append(" ", el("span", "node-seen", `last seen ${formatTime(heartbeat)}`));
      }
      return item;
    });
    this.list.replaceChildren(...items);
    setText(byId("cluster-title"), `Cluster of ${nodes.length} nodes`);
  }
}
