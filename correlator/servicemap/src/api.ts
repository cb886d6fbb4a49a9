// The graph as weft's HTTP API serves it (GET api/v1/graph), and the poll
// that keeps it current. URLs are relative: the page works wherever the
// API is (a port-forward, a proxy with a path prefix or a token in front).

export interface GNode {
  id: string;
  labels: string[];
  props: Record<string, unknown>;
}

export interface GEdge {
  from: string;
  to: string;
  type: string;
  props: Record<string, unknown>;
}

export interface Graph {
  nodes: GNode[];
  edges: GEdge[];
}

/** Selection is what api/v1/graph is asked for: a time window, a node's neighbourhood. */
export interface Selection {
  since?: string; // "5m", "1h"; none for all
  node?: string;
  depth?: number;
}

export function graphURL(sel: Selection): string {
  const q = new URLSearchParams();
  if (sel.since) q.set("since", sel.since);
  if (sel.node) {
    q.set("node", sel.node);
    q.set("depth", String(sel.depth ?? 1));
  }
  const s = q.toString();
  return "api/v1/graph" + (s ? "?" + s : "");
}

/**
 * Poller reads the graph every interval with If-None-Match, so an
 * unchanged graph costs a 304 and no body, and calls onGraph only when it
 * changed (or the selection did).
 */
export class Poller {
  private etag = "";
  private url = "";
  private timer = 0;
  private inflight = false;

  constructor(
    private readonly interval: number,
    private readonly onGraph: (g: Graph, url: string) => void,
    private readonly onError: (msg: string) => void,
  ) {}

  /** select changes what is read, and reads it now. */
  select(sel: Selection): void {
    this.url = graphURL(sel);
    this.etag = "";
    void this.poll();
  }

  start(): void {
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => void this.poll(), this.interval);
  }

  stop(): void {
    window.clearInterval(this.timer);
  }

  async poll(): Promise<void> {
    if (this.inflight) return;
    this.inflight = true;
    const url = this.url;
    try {
      const headers: Record<string, string> = {};
      if (this.etag) headers["If-None-Match"] = this.etag;
      const resp = await fetch(url, { headers, cache: "no-store" });
      if (url !== this.url) return; // the selection changed meanwhile
      if (resp.status === 304) return;
      if (!resp.ok) {
        this.onError(`${url}: ${resp.status} ${(await resp.text()).trim()}`);
        return;
      }
      const g = (await resp.json()) as Graph;
      this.etag = resp.headers.get("ETag") ?? "";
      this.onGraph(g, url);
    } catch (e) {
      this.onError(`${url}: ${String(e)}`);
    } finally {
      this.inflight = false;
    }
  }
}
