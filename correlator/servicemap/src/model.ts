// The view of a graph: which of its nodes are drawn (workloads, or their
// pods, or the pods' containers), inside which group (namespace or
// machine), and its CALLS relationships summed between what is drawn.
// Pure functions of the graph and the options, so the page redraws by
// comparing views.

import type { GEdge, GNode, Graph } from "./api";

export type Level = "workload" | "pod" | "container";
export type Grouping = "namespace" | "machine";
export type Weight = "calls" | "bytes";

export interface Options {
  level: Level;
  grouping: Grouping;
  /** toggled flips the level for one workload (its pods) or pod (its containers). */
  toggled: Set<string>;
  namespaces: Set<string> | null; // null: all
  workload: string; // substring of the workload name, "" for all
  label: string; // a graph label the node (or what it stands for) has, "" for any
  brokerKind: string; // brokers of this kind and their callers, "" for all
  hidden: Set<string>;
}

/** VNode is one drawn node: a graph node, or a group. */
export interface VNode {
  id: string;
  parent?: string;
  label: string;
  kind: string; // Workload, Pod, Container, Process, External, Node, or "group"
  broker: string; // broker kind, "" if none (of it or what it stands for)
  namespace: string;
  workload: string;
  labels: Set<string>;
  node?: GNode; // the graph node drawn, none for a group
  compound: boolean; // drawn with what it holds inside
}

/** VEdge is the sum of the CALLS between two drawn nodes over one transport. */
export interface VEdge {
  id: string;
  source: string;
  target: string;
  transport: string;
  count: number;
  bytesSent: number;
  bytesReceived: number;
  errors: number;
  firstSeen: number; // Unix ns
  lastSeen: number;
  edges: GEdge[];
}

export interface View {
  nodes: VNode[];
  edges: VEdge[];
}

/** Index is what a graph's structure says: who holds whom. */
export interface Index {
  byId: Map<string, GNode>;
  podOf: Map<string, string>; // container -> pod
  workloadOf: Map<string, string>; // pod -> workload
  machineOf: Map<string, string>; // pod -> node
  pods: Map<string, string[]>; // workload -> pods
  containers: Map<string, string[]>; // pod -> containers
}

export function index(g: Graph): Index {
  const ix: Index = {
    byId: new Map(),
    podOf: new Map(),
    workloadOf: new Map(),
    machineOf: new Map(),
    pods: new Map(),
    containers: new Map(),
  };
  for (const n of g.nodes) ix.byId.set(n.id, n);
  const push = (m: Map<string, string[]>, k: string, v: string) => {
    const l = m.get(k);
    if (l) l.push(v);
    else m.set(k, [v]);
  };
  for (const e of g.edges) {
    if (e.type === "HAS_CONTAINER") {
      ix.podOf.set(e.to, e.from);
      push(ix.containers, e.from, e.to);
    } else if (e.type === "OWNS") {
      ix.workloadOf.set(e.to, e.from);
      push(ix.pods, e.from, e.to);
    } else if (e.type === "RUNS_ON") {
      ix.machineOf.set(e.from, e.to);
    }
  }
  return ix;
}

const str = (v: unknown): string => (typeof v === "string" ? v : v === undefined || v === null ? "" : String(v));
export const num = (v: unknown): number => (typeof v === "number" ? v : Number(v ?? 0) || 0);

/** kindOf is a graph node's own label (its first; Broker comes after). */
export const kindOf = (n: GNode): string => n.labels[0] ?? "";

export function displayName(n: GNode): string {
  const p = n.props;
  return str(p.name) || str(p.exe) || str(p.address) || n.id;
}

function brokerOf(n: GNode): string {
  return n.labels.includes("Broker") ? str(n.props.kind) || "broker" : "";
}

/** build draws g with o. */
export function build(g: Graph, ix: Index, o: Options): View {
  const byMachine = o.grouping === "machine";
  const showPods = (w: string) => byMachine || (o.level !== "workload") !== o.toggled.has(w);
  const showContainers = (p: string) => (o.level === "container") !== o.toggled.has(p);

  // rep is the drawn node a graph node is drawn as (itself, or what holds it).
  const repCache = new Map<string, string>();
  const rep = (id: string): string => {
    const c = repCache.get(id);
    if (c !== undefined) return c;
    let r = id;
    const pod = ix.podOf.get(id);
    if (pod !== undefined && (!showContainers(pod) || rep(pod) !== pod)) r = rep(pod);
    else {
      const w = ix.workloadOf.get(id);
      if (w !== undefined && !showPods(w)) r = w;
    }
    repCache.set(id, r);
    return r;
  };

  const groupOf = (n: GNode): [string, string] => {
    const k = kindOf(n);
    if (k === "External") return ["group:external", "outside the cluster"];
    if (k === "Process") return [`group:host/${str(n.props.node)}`, `host ${str(n.props.node)}`];
    if (byMachine) {
      const pod = k === "Container" ? ix.podOf.get(n.id) : n.id;
      const m = pod && ix.machineOf.get(pod);
      const name = m ? displayName(ix.byId.get(m) ?? n) : "(no node)";
      return [`group:node/${name}`, `node ${name}`];
    }
    const ns = namespaceOf(n);
    return [`group:ns/${ns}`, ns ? `namespace ${ns}` : "(no namespace)"];
  };
  const namespaceOf = (n: GNode): string => {
    if (n.props.namespace !== undefined) return str(n.props.namespace);
    const pod = ix.podOf.get(n.id);
    const p = pod ? ix.byId.get(pod) : undefined;
    return p ? str(p.props.namespace) : "";
  };
  const workloadName = (n: GNode): string => {
    const k = kindOf(n);
    if (k === "Workload") return str(n.props.name);
    const pod = k === "Container" ? ix.podOf.get(n.id) : n.id;
    const w = pod ? ix.workloadOf.get(pod) : undefined;
    const wn = w ? ix.byId.get(w) : undefined;
    return wn ? str(wn.props.name) : displayName(n);
  };

  // Drawn nodes, children before filtering: what each stands for.
  const drawn = new Map<string, VNode>();
  const groups = new Map<string, VNode>();
  const under = (n: GNode): VNode => {
    const [gid, glabel] = groupOf(n);
    if (!groups.has(gid)) {
      groups.set(gid, {
        id: gid, label: glabel, kind: "group", broker: "", namespace: byMachine ? "" : namespaceOf(n),
        workload: "", labels: new Set(), compound: true,
      });
    }
    const v: VNode = {
      id: n.id, label: displayName(n), kind: kindOf(n), broker: brokerOf(n), namespace: namespaceOf(n),
      workload: workloadName(n), labels: new Set(n.labels), node: n, compound: false,
    };
    return v;
  };
  for (const n of g.nodes) {
    const k = kindOf(n);
    if (k === "Node") continue; // machines are groups here
    if (rep(n.id) !== n.id) continue;
    if (k === "Workload" && showPods(n.id)) {
      if (byMachine) continue; // a workload spans machines: its pods are drawn
    }
    drawn.set(n.id, under(n));
  }
  // Parents: a container in its pod, a pod in its workload, the rest in a group.
  for (const v of drawn.values()) {
    const n = v.node!;
    const pod = ix.podOf.get(n.id);
    const w = ix.workloadOf.get(n.id);
    if (pod !== undefined && drawn.has(pod)) v.parent = pod;
    else if (w !== undefined && drawn.has(w) && !byMachine) v.parent = w;
    else v.parent = groupOf(n)[0];
  }
  // What a collapsed node stands for counts for its filters.
  for (const n of g.nodes) {
    const r = rep(n.id);
    if (r === n.id) continue;
    const v = drawn.get(r);
    if (!v) continue;
    for (const l of n.labels) v.labels.add(l);
    if (!v.broker) v.broker = brokerOf(n);
  }
  for (const v of drawn.values()) if (v.parent && drawn.has(v.parent)) drawn.get(v.parent)!.compound = true;

  // CALLS summed between drawn nodes.
  const sums = new Map<string, VEdge>();
  for (const e of g.edges) {
    if (e.type !== "CALLS") continue;
    const s = rep(e.from);
    const t = rep(e.to);
    if (!drawn.has(s) || !drawn.has(t)) continue;
    const tr = str(e.props.transport);
    const id = `${s}->${t}#${tr}`;
    let v = sums.get(id);
    if (!v) {
      v = { id, source: s, target: t, transport: tr, count: 0, bytesSent: 0, bytesReceived: 0, errors: 0,
        firstSeen: Infinity, lastSeen: 0, edges: [] };
      sums.set(id, v);
    }
    v.count += num(e.props.count);
    v.bytesSent += num(e.props.bytes_sent);
    v.bytesReceived += num(e.props.bytes_received);
    v.errors += num(e.props.errors);
    v.firstSeen = Math.min(v.firstSeen, num(e.props.first_seen));
    v.lastSeen = Math.max(v.lastSeen, num(e.props.last_seen));
    v.edges.push(e);
  }

  // Filters, on what is drawn.
  const wl = o.workload.trim().toLowerCase();
  const brokersOfKind = new Set<string>();
  if (o.brokerKind) for (const v of drawn.values()) if (v.broker === o.brokerKind) brokersOfKind.add(v.id);
  const callsBroker = new Set<string>();
  if (o.brokerKind)
    for (const e of sums.values()) if (brokersOfKind.has(e.target)) callsBroker.add(e.source);
  const passes = (v: VNode): boolean => {
    if (o.hidden.has(v.id)) return false;
    if (o.namespaces && !o.namespaces.has(v.namespace)) return false;
    if (wl && !v.workload.toLowerCase().includes(wl)) return false;
    if (o.label && !v.labels.has(o.label)) return false;
    if (o.brokerKind && !brokersOfKind.has(v.id) && !callsBroker.has(v.id)) return false;
    return true;
  };
  // A compound passes if it or anything inside does; a leaf if it does.
  const kept = new Set<string>();
  for (const v of drawn.values()) {
    if (v.compound || !passes(v)) continue;
    kept.add(v.id);
    for (let p = v.parent; p !== undefined && drawn.has(p); p = drawn.get(p)!.parent) {
      if (o.hidden.has(p)) break;
      kept.add(p);
    }
  }
  for (const v of drawn.values()) if (v.compound && passes(v) && !kept.has(v.id)) kept.add(v.id);
  // A kept node whose parent is hidden is hidden with it.
  const visible = (id: string): boolean => {
    for (let v = drawn.get(id); v; v = v.parent ? drawn.get(v.parent) : undefined) {
      if (!kept.has(v.id)) return false;
    }
    return true;
  };
  const nodes: VNode[] = [];
  const usedGroups = new Set<string>();
  for (const v of drawn.values()) {
    if (!visible(v.id)) continue;
    nodes.push(v);
    if (v.parent && groups.has(v.parent)) usedGroups.add(v.parent);
  }
  for (const gid of usedGroups) nodes.push(groups.get(gid)!);
  const shown = new Set(nodes.map((v) => v.id));
  const edges = [...sums.values()].filter((e) => shown.has(e.source) && shown.has(e.target));
  return { nodes, edges };
}

/** namespacesOf lists the namespaces (and host and external groups) of g, for the filter. */
export function namespacesOf(g: Graph, ix: Index): string[] {
  const out = new Set<string>();
  for (const n of g.nodes) {
    const k = kindOf(n);
    if (k === "Node") continue;
    if (k === "Container") {
      const p = ix.podOf.get(n.id);
      const pn = p ? ix.byId.get(p) : undefined;
      out.add(pn ? str(pn.props.namespace) : "");
    } else out.add(str(n.props.namespace));
  }
  return [...out].sort();
}

export function brokerKindsOf(g: Graph): string[] {
  const out = new Set<string>();
  for (const n of g.nodes) {
    const b = brokerOf(n);
    if (b) out.add(b);
  }
  return [...out].sort();
}

export function labelsOf(g: Graph): string[] {
  const out = new Set<string>();
  for (const n of g.nodes) for (const l of n.labels) if (l !== "Node") out.add(l);
  return [...out].sort();
}
