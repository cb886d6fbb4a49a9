// The Cypher that returns what the page shows: a node by its label and
// key (DESIGN.md, "The graph"), a CALLS relationship by its ends, transport
// and port or path, and the calls summed into a drawn edge through what
// holds their ends (a workload's pods, a pod's containers).

import type { GEdge, GNode } from "./api";
import { kindOf } from "./model";

/** lit is a Cypher string or number literal. */
export function lit(v: unknown): string {
  if (typeof v === "number") return String(v);
  return "'" + String(v ?? "").replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";
}

const keys: Record<string, string[]> = {
  Node: ["name"],
  Pod: ["uid"],
  Container: ["id"],
  Workload: ["kind", "namespace", "name"],
  Process: ["node", "exe"],
  External: ["address"],
};

/** pattern is (v:Label {key: …}) for n. */
export function pattern(v: string, n: GNode): string {
  const k = kindOf(n);
  const props = (keys[k] ?? []).map((p) => `${p}: ${lit(n.props[p])}`).join(", ");
  return `(${v}:${k} {${props}})`;
}

export function nodeCypher(n: GNode): string {
  return `MATCH ${pattern("n", n)}\nRETURN n`;
}

/** edgeCypher returns one CALLS relationship. */
export function edgeCypher(e: GEdge, from: GNode, to: GNode): string {
  const key =
    e.props.transport === "unix" ? `transport: 'unix', path: ${lit(e.props.path)}` : `transport: 'tcp', port: ${lit(e.props.port)}`;
  return `MATCH ${pattern("a", from)}-[r:CALLS {${key}}]->${pattern("b", to)}\nRETURN a, r, b`;
}

/**
 * sumCypher returns the calls summed into a drawn edge between a and b
 * (graph nodes drawn for what they hold) over transport, and their sums.
 */
export function sumCypher(a: GNode, b: GNode, transport: string): string {
  const end = (v: string, n: GNode): string => {
    switch (kindOf(n)) {
      case "Workload":
        return `${pattern(v + "w", n)}-[:OWNS]->(:Pod)-[:HAS_CONTAINER*0..1]->(${v})`;
      case "Pod":
        return `${pattern(v + "p", n)}-[:HAS_CONTAINER*0..1]->(${v})`;
      default:
        return pattern(v, n);
    }
  };
  return (
    `MATCH ${end("a", a)}\nMATCH ${end("b", b)}\n` +
    `MATCH (a)-[r:CALLS {transport: ${lit(transport)}}]->(b)\n` +
    `RETURN sum(r.count) AS calls, sum(r.bytes_sent) AS bytes_sent, sum(r.bytes_received) AS bytes_received, ` +
    `sum(r.errors) AS errors, min(r.first_seen) AS first_seen, max(r.last_seen) AS last_seen`
  );
}
