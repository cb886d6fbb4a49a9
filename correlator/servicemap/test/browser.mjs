// The service map in a real browser: Debian's chromium driven by
// playwright-core, against a real weft (`weft up --demo`, started here),
// and against weft-graphsynth's 5,000-node graph for the figures.
//
//   node --test test/          (from correlator/servicemap; task ui:test)
//
// WEFT_BIN and GRAPHSYNTH_BIN name the binaries; without them they are
// built with go build. CHROMIUM names the browser (default
// /usr/bin/chromium). A screenshot of each run is kept under
// $TMPDIR/weft-servicemap-*/ and its path printed; the figures are
// written beside it (figures.json).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const repo = resolve(import.meta.dirname, "../../..");
const out = mkdtempSync(join(process.env.TMPDIR || tmpdir(), "weft-servicemap-"));
const figures = {};
const procs = [];
let ctx;

function binary(env, pkg, name) {
  if (process.env[env]) return process.env[env];
  const bin = join(out, name);
  execFileSync("go", ["build", "-o", bin, pkg], { cwd: repo, stdio: "inherit" });
  return bin;
}

/** start runs a server and resolves with the first URL it prints matching re. */
function start(bin, args, re) {
  return new Promise((ok, fail) => {
    const p = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    procs.push(p);
    let text = "";
    const timer = setTimeout(() => fail(new Error(`${bin} printed no URL in 60 s:\n${text}`)), 60000);
    const read = (d) => {
      text += d;
      const m = text.match(re);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    };
    p.stdout.on("data", read);
    p.stderr.on("data", (d) => (text += d));
    p.on("exit", (code) => fail(new Error(`${bin} exited ${code}:\n${text}`)));
  });
}

/** checkFor polls f until it returns without throwing, or throws its last error after ms. */
async function checkFor(ms, f) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function apiGraph(base) {
  const t0 = performance.now();
  const resp = await fetch(base + "api/v1/graph");
  const body = await resp.text();
  return { g: JSON.parse(body), bytes: body.length, ms: performance.now() - t0 };
}

/** openMap loads the map at base in a fresh page and waits for its first render; errors collects console errors. */
async function openMap(base, errors) {
  const page = await ctx.newPage();
  // A big graph keeps the page busy for minutes on a loaded machine.
  page.setDefaultTimeout(600000);
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base);
  await page.waitForFunction(() => window.weftMap?.stats.firstRenderMs >= 0, null, { timeout: 600000 });
  return page;
}

/** measure records time to first render and the frame rate over 2 s of panning. */
async function measure(page, name, api) {
  const m = await page.evaluate(async () => {
    const { cy, stats } = window.weftMap;
    await new Promise((r) => requestAnimationFrame(r));
    let frames = 0;
    const t0 = performance.now();
    await new Promise((done) => {
      const step = () => {
        frames++;
        cy.panBy({ x: frames % 200 < 100 ? 4 : -4, y: 2 });
        if (performance.now() - t0 < 2000) requestAnimationFrame(step);
        else done();
      };
      requestAnimationFrame(step);
    });
    return {
      firstRenderMs: Math.round(stats.firstRenderMs), layoutMs: Math.round(stats.layoutMs),
      panFps: Math.round((frames * 10000) / (performance.now() - t0)) / 10,
      drawnNodes: cy.nodes().length, drawnEdges: cy.edges().length,
    };
  });
  figures[name] = { ...m, apiBytes: api.bytes, apiMs: Math.round(api.ms), graphNodes: api.g.nodes.length, graphEdges: api.g.edges.length };
  console.log(`figures ${name}: ${JSON.stringify(figures[name])}`);
}

// Servers die with the test, however it ends.
process.on("exit", () => procs.forEach((p) => p.kill("SIGKILL")));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

before(async () => {
  const weft = binary("WEFT_BIN", "./cmd/weft", "weft");
  const synth = binary("GRAPHSYNTH_BIN", "./testenv/graphsynth/cmd/weft-graphsynth", "weft-graphsynth");
  const [demo, big] = await Promise.all([
    start(weft, ["up", "--demo", "--data-dir", join(out, "data"), "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"], /open (http:\/\/\S+\/)/),
    start(synth, ["-listen", "127.0.0.1:0"], /listening on (http:\/\/\S+)/),
  ]);
  process.env.DEMO_URL = demo;
  process.env.BIG_URL = big + "/";
  ctx = await chromium.launchPersistentContext(join(out, "profile"), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await ctx?.close();
  for (const p of procs) p.kill("SIGINT");
  writeFileSync(join(out, "figures.json"), JSON.stringify(figures, null, 2) + "\n");
  console.log(`service map screenshots and figures in ${out}`);
});

test("the demo: pods, an edge's count, filters, hiding, no console errors", async () => {
  const base = process.env.DEMO_URL;
  // The demo's traffic reaches the graph: pods and calls between them.
  const api = await checkFor(60000, async () => {
    const a = await apiGraph(base);
    assert.ok(a.g.nodes.some((n) => n.labels[0] === "Pod"), "no pods in /api/v1/graph yet");
    assert.ok(a.g.edges.some((e) => e.type === "CALLS"), "no calls in /api/v1/graph yet");
    return a;
  });
  const errors = [];
  const page = await openMap(base, errors);
  await measure(page, "demo", api);

  // Every pod the API has is drawn, at the pods level.
  await page.selectOption("#level", "pod");
  const pods = api.g.nodes.filter((n) => n.labels[0] === "Pod").map((n) => n.id);
  const missing = await page.evaluate((ids) => ids.filter((id) => window.weftMap.cy.getElementById(id).length === 0), pods);
  assert.deepEqual(missing, [], "pods of /api/v1/graph not drawn");

  // Clicking an edge shows its count: a real mouse click at an edge's
  // middle (again if a live update moved it meanwhile), and the panel's
  // count is that edge's.
  let attempt = 0;
  const shown = await checkFor(120000, async () => {
    const hit = await page.evaluate((attempt) => {
      const cy = window.weftMap.cy;
      const box = cy.container().getBoundingClientRect();
      const edges = cy.edges().toArray();
      for (const e of [...edges.slice(attempt % edges.length), ...edges.slice(0, attempt % edges.length)]) {
        if (e.isLoop()) continue;
        const p = e.renderedMidpoint();
        const onNode = cy.nodes().some((n) => {
          if (n.isParent()) return false;
          const b = n.renderedBoundingBox();
          return p.x >= b.x1 - 4 && p.x <= b.x2 + 4 && p.y >= b.y1 - 4 && p.y <= b.y2 + 4;
        });
        if (!onNode && p.x > 0 && p.y > 0 && p.x < box.width && p.y < box.height) return { x: box.left + p.x, y: box.top + p.y };
      }
      return null;
    }, attempt++);
    assert.ok(hit, "no edge to click");
    await page.mouse.click(hit.x, hit.y);
    await page.waitForSelector("#panel:not([hidden])", { timeout: 5000 });
    const r = await page.evaluate(() => {
      const prop = (k) => document.querySelector(`#props tr[data-prop="${k}"] td:last-child`)?.textContent;
      const id = `${prop("from")}->${prop("to")}#${prop("transport")}`;
      return { id, panel: prop("count"), edge: window.weftMap.cy.getElementById(id).data("count") };
    });
    if (r.panel === undefined) {
      // The click landed on a group (a compound node) around the edge.
      await page.click("#close");
      throw new Error(`the click at an edge's middle opened ${await page.textContent("#ptitle")}, not the edge`);
    }
    return r;
  });
  assert.ok(Number(shown.panel) > 0, `panel count ${shown.panel}`);
  assert.equal(Number(shown.panel), shown.edge, `the panel of ${shown.id} shows count ${shown.panel}, the edge has ${shown.edge}`);
  assert.match(await page.textContent("#cypher"), /MATCH .*CALLS/);
  await page.screenshot({ path: join(out, "demo-edge.png") });

  // The workload filter leaves exactly the pods of the workloads whose
  // name has the text (a bare pod: whose own name has it).
  const workloads = api.g.nodes.filter((n) => n.labels[0] === "Workload");
  assert.ok(workloads.length >= 2, "the demo has fewer than two workloads");
  const text = workloads[0].props.name;
  const ownerName = new Map(api.g.edges.filter((e) => e.type === "OWNS")
    .map((e) => [e.to, api.g.nodes.find((n) => n.id === e.from).props.name]));
  const want = api.g.nodes.filter((n) => n.labels[0] === "Pod" && String(ownerName.get(n.id) ?? n.props.name).includes(text))
    .map((n) => n.id).sort();
  assert.ok(want.length > 0 && want.length < pods.length, `filter ${text} would keep ${want.length} of ${pods.length} pods`);
  await page.fill("#workload", text);
  const left = await page.evaluate((ids) => ids.filter((id) => window.weftMap.cy.getElementById(id).length > 0), pods);
  assert.deepEqual(left.sort(), want, `pods drawn with the workload filter ${text}`);
  await page.fill("#workload", "");

  // Hiding a node removes it, and it stays hidden after a reload.
  const victim = pods[0];
  await page.evaluate((id) => window.weftMap.cy.getElementById(id).emit("tap"), victim);
  await page.click("#pactions >> text=hide");
  assert.equal(await page.evaluate((id) => window.weftMap.cy.getElementById(id).length, victim), 0);
  await page.reload();
  await page.waitForFunction(() => window.weftMap?.stats.firstRenderMs >= 0);
  await page.selectOption("#level", "pod");
  assert.equal(await page.evaluate((id) => window.weftMap.cy.getElementById(id).length, victim), 0, "hidden pod is back after reload");
  assert.equal(await page.textContent("#hiddencount"), "1");
  await page.click("#unhide");
  assert.equal(await page.evaluate((id) => window.weftMap.cy.getElementById(id).length, victim), 1);

  // Grouped by machine, every pod is drawn inside the node it runs on.
  await page.selectOption("#grouping", "machine");
  const machineOf = new Map(api.g.edges.filter((e) => e.type === "RUNS_ON")
    .map((e) => [e.from, "group:node/" + api.g.nodes.find((n) => n.id === e.to).props.name]));
  const parents = await page.evaluate((ids) => ids.map((id) => window.weftMap.cy.getElementById(id).parent().id()), pods);
  assert.deepEqual(parents, pods.map((id) => machineOf.get(id)), "pods grouped by machine");
  await page.selectOption("#grouping", "namespace");

  await page.screenshot({ path: join(out, "demo.png") });
  console.log(`screenshot ${join(out, "demo.png")}`);
  assert.deepEqual(errors, [], "console errors");
  await page.close();
});

test("the big graph: 5,000 nodes and 20,000 calls render (as workloads) and pan", async () => {
  const base = process.env.BIG_URL;
  const api = await apiGraph(base);
  assert.equal(api.g.nodes.length, 5000);
  assert.equal(api.g.edges.filter((e) => e.type === "CALLS").length, 20000);
  const errors = [];
  const page = await openMap(base, errors);
  await measure(page, "big-workloads", api);
  await page.screenshot({ path: join(out, "big-workloads.png") });
  // Every workload is drawn, each in its namespace.
  const count = (label) => api.g.nodes.filter((n) => n.labels[0] === label).length;
  const namespaces = new Set(api.g.nodes.filter((n) => n.labels[0] === "Workload").map((n) => n.props.namespace)).size;
  assert.equal(await page.evaluate(() => window.weftMap.cy.nodes('[kind = "Workload"]').length), count("Workload"));
  assert.equal(await page.evaluate(() => window.weftMap.cy.nodes('[kind = "group"]').length), namespaces);
  assert.deepEqual(errors, [], "console errors");
  await page.close();
});
