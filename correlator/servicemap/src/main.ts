// The service map: weft's graph on Cytoscape.js, laid out by fCoSE (which
// places compound nodes: namespaces or machines holding workloads, pods
// and containers), kept current by polling api/v1/graph with its ETag.

import cytoscape from "cytoscape";
import fcose from "cytoscape-fcose";
import { Poller, type Graph, type Selection } from "./api";
import {
  brokerKindsOf, build, displayName, index, labelsOf, namespacesOf,
  type Grouping, type Index, type Level, type Options, type VEdge, type View, type VNode, type Weight,
} from "./model";
import * as panel from "./panel";
import { stylesheet } from "./style";

cytoscape.use(fcose);

const HIDDEN_KEY = "weft.map.hidden";
const POLL_MS = 2000;
/** Past this many drawn elements, the map draws no edges while panning or zooming. */
const BIG = 2000;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function loadHidden(): Set<string> {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(HIDDEN_KEY) ?? "[]");
    return new Set(Array.isArray(v) ? v.map(String) : []);
  } catch {
    return new Set();
  }
}

interface State {
  graph: Graph;
  ix: Index;
  view: View;
  opts: Options;
  weight: Weight;
  selection: Selection;
  laidOut: string; // the drawn node ids the layout last placed, joined
}

const st: State = {
  graph: { nodes: [], edges: [] },
  ix: index({ nodes: [], edges: [] }),
  view: { nodes: [], edges: [] },
  opts: {
    level: "workload", grouping: "namespace", toggled: new Set(), namespaces: null,
    workload: "", label: "", brokerKind: "", hidden: loadHidden(),
  },
  weight: "calls",
  selection: {},
  laidOut: "",
};

/** Measurements the browser test reads: time to first render, draws. */
const stats = { firstRenderMs: -1, draws: 0, buildMs: 0, addMs: 0, layoutMs: 0 };
const weftMap: { cy?: cytoscape.Core; stats: typeof stats } = { stats };
(window as unknown as { weftMap: unknown }).weftMap = weftMap;

let cy: cytoscape.Core;

/** opened is what the panel shows; it is shown anew at every draw, so its figures stay current. */
let opened: { edge: boolean; id: string } | null = null;

function showOpened(): void {
  if (!opened) return;
  const id = opened.id;
  if (opened.edge) {
    const e = st.view.edges.find((x) => x.id === id);
    if (e) return panel.showEdge(e, st.ix, []);
  } else {
    const v = st.view.nodes.find((x) => x.id === id);
    if (v) return panel.showNode(v, nodeActions(v));
  }
  closePanel();
}

function closePanel(): void {
  opened = null;
  panel.hide();
}

/**
 * start makes the map for a first graph of size elements: a big one is
 * drawn without edges, from a cached texture, while the viewport moves
 * (Cytoscape's own options for this).
 */
function start(size: number): void {
  const big = size > BIG;
  cy = cytoscape({
    container: $("map"),
    style: stylesheet(big),
    wheelSensitivity: 0.3,
    minZoom: 0.02,
    maxZoom: 4,
    hideEdgesOnViewport: big,
    textureOnViewport: big,
  });
  weftMap.cy = cy;
  cy.on("tap", "node", (ev) => {
    opened = { edge: false, id: ev.target.id() };
    showOpened();
  });
  cy.on("dbltap", "node", (ev) => {
    const v = st.view.nodes.find((x) => x.id === ev.target.id());
    if (v && (v.kind === "Workload" || v.kind === "Pod")) toggle(v.id);
  });
  cy.on("tap", "edge", (ev) => {
    opened = { edge: true, id: ev.target.id() };
    showOpened();
  });
  cy.on("tap", (ev) => {
    if (ev.target === cy) closePanel();
  });
}

function widthOf(e: VEdge): number {
  const v = st.weight === "calls" ? e.count : e.bytesSent + e.bytesReceived;
  return 1 + 1.5 * Math.log10(1 + v);
}

function elements(v: View): cytoscape.ElementDefinition[] {
  const out: cytoscape.ElementDefinition[] = [];
  for (const n of v.nodes) {
    const label = n.broker ? `${n.label} ⟨${n.broker}⟩` : n.label;
    out.push({ group: "nodes", data: { id: n.id, parent: n.parent, label, kind: n.kind, broker: n.broker } });
  }
  for (const e of v.edges) {
    out.push({
      group: "edges",
      data: { id: e.id, source: e.source, target: e.target, transport: e.transport, errors: e.errors, count: e.count, width: widthOf(e) },
    });
  }
  return out;
}

/** placed is whether most nodes drawn have a place from the last layout. */
let placed = false;

/** draw replaces what is drawn with the current view; it lays out again only when the drawn nodes changed. */
function draw(): void {
  const t0 = performance.now();
  st.view = build(st.graph, st.ix, st.opts);
  stats.buildMs = performance.now() - t0;
  const ids = st.view.nodes.map((n) => n.id).sort().join("\n");
  const relayout = ids !== st.laidOut;
  const big = st.view.nodes.length + st.view.edges.length > BIG;
  cy.batch(() => {
    if (relayout) {
      const pos = new Map<string, cytoscape.Position>();
      cy.nodes().forEach((n) => {
        if (!n.isParent()) pos.set(n.id(), { ...n.position() });
      });
      cy.elements().remove();
      const els = elements(st.view);
      let kept = 0;
      for (const e of els) {
        const p = e.group === "nodes" ? pos.get(e.data.id!) : undefined;
        if (p) {
          e.position = p;
          kept++;
        }
      }
      placed = kept > 0 && kept >= pos.size / 2;
      cy.add(els);
    } else {
      const want = new Map(elements(st.view).filter((e) => e.group === "edges").map((e) => [e.data.id!, e]));
      cy.edges().forEach((e) => {
        const w = want.get(e.id());
        if (!w) e.remove();
        else {
          e.data(w.data);
          want.delete(e.id());
        }
      });
      cy.add([...want.values()]);
      for (const n of st.view.nodes) {
        const label = n.broker ? `${n.label} ⟨${n.broker}⟩` : n.label;
        cy.getElementById(n.id).data({ label, broker: n.broker });
      }
    }
  });
  stats.addMs = performance.now() - t0 - stats.buildMs;
  if (relayout) {
    st.laidOut = ids;
    const t1 = performance.now();
    // A dense graph is placed by its heaviest calls: the layout's cost
    // grows with the edges it pulls on, and the light ones barely move
    // anything.
    let eles = cy.elements();
    const edges = cy.edges();
    const most = 3 * cy.nodes().length;
    if (edges.length > most) {
      const light = edges.sort((a, b) => b.data("width") - a.data("width")).slice(most);
      eles = eles.not(light);
    }
    const layout = eles.layout({
      name: "fcose",
      quality: "default", // draft leaves groups overlapping

      // Once placed, nodes stay near where they were: a live update
      // that adds a pod does not reshuffle the map.
      randomize: !placed,
      animate: false,
      nodeDimensionsIncludeLabels: !big,
      packComponents: true,
      numIter: big ? 500 : 2500,
    } as cytoscape.LayoutOptions);
    layout.one("layoutstop", () => {
      stats.layoutMs = performance.now() - t1;
      cy.fit(undefined, 20);
    });
    layout.run();
  }
  applySearch();
  showOpened();
  stats.draws++;
  if (stats.firstRenderMs < 0 && st.graph.nodes.length > 0) {
    // The first frame after the first layout: what a person sees first.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (stats.firstRenderMs < 0) stats.firstRenderMs = performance.now();
    }));
  }
  $("hiddencount").textContent = String(st.opts.hidden.size);
}

function applySearch(): void {
  if (!cy) return;
  const q = $<HTMLInputElement>("search").value.trim().toLowerCase();
  cy.elements().removeClass("match faded");
  if (!q) return;
  const hits = cy.nodes().filter((n) => {
    const v = st.view.nodes.find((x) => x.id === n.id());
    const text = [n.id(), n.data("label"), v?.node ? Object.values(v.node.props).join(" ") : ""].join(" ").toLowerCase();
    return text.includes(q);
  });
  if (hits.length === 0) return;
  cy.elements().addClass("faded");
  hits.union(hits.ancestors()).removeClass("faded").addClass("match");
  hits.ancestors().removeClass("match");
  hits.connectedEdges().removeClass("faded");
}

function fillSelect(id: string, values: string[]): void {
  const sel = $<HTMLSelectElement>(id);
  const cur = sel.value;
  const have = [...sel.options].map((o) => o.value).slice(1).join("\n");
  if (have === values.join("\n")) return;
  sel.replaceChildren(new Option("any", ""), ...values.map((v) => new Option(v, v)));
  sel.value = values.includes(cur) ? cur : "";
}

function fillNamespaces(values: string[]): void {
  const fs = $("namespaces");
  const have = [...fs.querySelectorAll("input")].map((i) => i.value);
  if (have.join("\n") === values.join("\n")) return;
  const checked = st.opts.namespaces;
  fs.replaceChildren(fs.querySelector("legend")!);
  for (const ns of values) {
    const l = document.createElement("label");
    const i = document.createElement("input");
    i.type = "checkbox";
    i.value = ns;
    i.checked = checked === null || checked.has(ns);
    i.addEventListener("change", () => {
      const on = [...fs.querySelectorAll("input")].filter((x) => x.checked).map((x) => x.value);
      st.opts.namespaces = on.length === values.length ? null : new Set(on);
      draw();
    });
    l.append(i, " " + (ns || "(none)"));
    fs.append(l);
  }
}

function onGraph(g: Graph): void {
  if (!cy) start(g.nodes.length + g.edges.length);
  st.graph = g;
  st.ix = index(g);
  fillNamespaces(namespacesOf(g, st.ix));
  fillSelect("label", labelsOf(g));
  fillSelect("broker", brokerKindsOf(g));
  $("status").textContent = "";
  draw();
}

const poller = new Poller(POLL_MS, onGraph, (msg) => ($("status").textContent = msg));

function reselect(): void {
  st.laidOut = "";
  $("scope").hidden = !st.selection.node;
  if (st.selection.node) {
    const n = st.ix.byId.get(st.selection.node);
    $("scopename").textContent = n ? displayName(n) : st.selection.node;
  }
  poller.select(st.selection);
}

function saveHidden(): void {
  localStorage.setItem(HIDDEN_KEY, JSON.stringify([...st.opts.hidden]));
}

function nodeActions(v: VNode): panel.Action[] {
  const acts: panel.Action[] = [
    { label: "hide", run: () => { st.opts.hidden.add(v.id); saveHidden(); closePanel(); draw(); } },
  ];
  if (v.node) {
    acts.push({ label: "neighbourhood", run: () => { st.selection = { ...st.selection, node: v.id, depth: 1 }; reselect(); } });
  }
  if (v.kind === "Workload" || (v.kind === "Pod" && st.ix.containers.has(v.id))) {
    acts.push({ label: v.compound ? "collapse" : "expand", run: () => toggle(v.id) });
  }
  return acts;
}

function toggle(id: string): void {
  if (st.opts.toggled.has(id)) st.opts.toggled.delete(id);
  else st.opts.toggled.add(id);
  closePanel();
  draw();
}


const bind = (id: string, ev: string, f: (el: HTMLInputElement) => void) =>
  $(id).addEventListener(ev, () => f($<HTMLInputElement>(id)));
bind("level", "change", (el) => { st.opts.level = el.value as Level; st.opts.toggled.clear(); draw(); });
bind("grouping", "change", (el) => { st.opts.grouping = el.value as Grouping; draw(); });
bind("weight", "change", (el) => { st.weight = el.value as Weight; draw(); });
bind("window", "change", (el) => { st.selection = { ...st.selection, since: el.value || undefined }; reselect(); });
bind("workload", "input", (el) => { st.opts.workload = el.value; draw(); });
bind("label", "change", (el) => { st.opts.label = el.value; draw(); });
bind("broker", "change", (el) => { st.opts.brokerKind = el.value; draw(); });
bind("search", "input", () => {
  applySearch();
  if (!cy) return;
  const hits = cy.nodes(".match");
  if (hits.length > 0) cy.fit(hits, 60);
});
bind("unhide", "click", () => { st.opts.hidden.clear(); saveHidden(); draw(); });
bind("unscope", "click", () => { st.selection = { since: st.selection.since }; reselect(); });
bind("close", "click", () => closePanel());

reselect();
poller.start();
