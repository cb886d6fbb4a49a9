// The side panel: what a clicked node or edge is (its properties; for an
// edge count, bytes each way, errors, first and last seen, port or path)
// and the Cypher that returns it.

import type { GNode } from "./api";
import { edgeCypher, nodeCypher, sumCypher } from "./cypher";
import { displayName, type Index, type VEdge, type VNode } from "./model";

export interface Action {
  label: string;
  run: () => void;
}

const $ = (id: string) => document.getElementById(id)!;

const time = (ns: number): string => (ns > 0 && Number.isFinite(ns) ? new Date(ns / 1e6).toISOString() : "");

function show(title: string, rows: [string, string][], cypher: string, actions: Action[]): void {
  $("ptitle").textContent = title;
  const table = $("props");
  table.replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      tr.dataset.prop = k;
      const a = document.createElement("td");
      a.textContent = k;
      const b = document.createElement("td");
      b.textContent = v;
      tr.append(a, b);
      return tr;
    }),
  );
  $("cypher").textContent = cypher;
  $("pactions").replaceChildren(
    ...actions.map((act) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = act.label;
      b.addEventListener("click", act.run);
      return b;
    }),
  );
  $("panel").hidden = false;
}

export function hide(): void {
  $("panel").hidden = true;
}

export function showNode(v: VNode, actions: Action[]): void {
  if (!v.node) {
    show(v.label, [["group", v.label]], "", actions);
    return;
  }
  const n = v.node;
  const rows: [string, string][] = [
    ["id", n.id],
    ["labels", n.labels.join(", ")],
  ];
  for (const k of Object.keys(n.props).sort()) rows.push([k, String(n.props[k])]);
  show(v.label, rows, nodeCypher(n), actions);
}

export function showEdge(e: VEdge, ix: Index, actions: Action[]): void {
  const rows: [string, string][] = [
    ["from", e.source],
    ["to", e.target],
    ["transport", e.transport],
    ["count", String(e.count)],
    ["bytes sent", String(e.bytesSent)],
    ["bytes received", String(e.bytesReceived)],
    ["errors", String(e.errors)],
    ["first seen", time(e.firstSeen)],
    ["last seen", time(e.lastSeen)],
  ];
  const vias = [...new Set(e.edges.map((x) => String(e.transport === "unix" ? x.props.path : x.props.port)))].sort();
  rows.push([e.transport === "unix" ? "path" : "port", vias.join(", ")]);
  if (e.edges.length > 1) rows.push(["relationships", String(e.edges.length)]);
  const node = (id: string): GNode => ix.byId.get(id) ?? { id, labels: [], props: {} };
  let cypher: string;
  if (e.edges.length === 1 && e.edges[0].from === e.source && e.edges[0].to === e.target) {
    const x = e.edges[0];
    cypher = edgeCypher(x, node(x.from), node(x.to));
  } else {
    cypher = sumCypher(node(e.source), node(e.target), e.transport);
  }
  show(`${displayName(node(e.source))} → ${displayName(node(e.target))} (${e.transport})`, rows, cypher, actions);
}
