// How the map looks: one stylesheet for Cytoscape.js. Brokers are
// diamonds with their kind; an edge's width is its weight (calls or bytes,
// on a log scale), red when any call failed, dashed over a unix socket.

import type cytoscape from "cytoscape";

export function stylesheet(big: boolean): cytoscape.StylesheetJson {
  const sheet: cytoscape.StylesheetJson = [
    {
      selector: "node",
      style: {
        label: "data(label)",
        "font-size": 10,
        "text-valign": "bottom",
        "text-margin-y": 2,
        // Labels cost a big graph its frame rate: there, only when legible.
        "min-zoomed-font-size": big ? 8 : 0,
        width: 22,
        height: 22,
        "background-color": "#4a78b5",
      },
    },
    { selector: "node[kind = 'Workload']", style: { shape: "round-rectangle", width: 34, height: 24, "background-color": "#3d6fb0" } },
    { selector: "node[kind = 'Pod']", style: { shape: "ellipse", "background-color": "#5b9bd5" } },
    { selector: "node[kind = 'Container']", style: { shape: "rectangle", width: 16, height: 16, "background-color": "#8fb8e0" } },
    { selector: "node[kind = 'Process']", style: { shape: "hexagon", "background-color": "#7a9a5a" } },
    { selector: "node[kind = 'External']", style: { shape: "triangle", "background-color": "#999" } },
    {
      selector: "node[broker != '']",
      style: { shape: "diamond", "background-color": "#e08a1e", "border-width": 2, "border-color": "#a05a00", width: 30, height: 30 },
    },
    {
      selector: ":parent",
      style: {
        "text-valign": "top",
        "text-halign": "center",
        "text-margin-y": -2,
        "background-opacity": 0.06,
        "background-color": "#3d6fb0",
        "border-width": 1,
        "border-color": "#9ab",
        shape: "round-rectangle",
        padding: "8px",
      },
    },
    { selector: "node[kind = 'group']", style: { "background-color": "#888", "border-style": "dashed", "font-weight": "bold" } },
    { selector: "node.match", style: { "border-width": 4, "border-color": "#f0c000" } },
    { selector: "node.faded, edge.faded", style: { opacity: 0.25 } },
    {
      selector: "edge",
      style: {
        width: "data(width)",
        "curve-style": "bezier",
        "target-arrow-shape": "triangle",
        "arrow-scale": 0.8,
        "line-color": "#8a9bb0",
        "target-arrow-color": "#8a9bb0",
      },
    },
    { selector: "edge[transport = 'unix']", style: { "line-style": "dashed", "line-color": "#6a5acd", "target-arrow-color": "#6a5acd" } },
    { selector: "edge[errors > 0]", style: { "line-color": "#d62728", "target-arrow-color": "#d62728" } },
    { selector: ":selected", style: { "overlay-opacity": 0.2, "overlay-color": "#f0c000" } },
  ];
  if (big) {
    // Haystack edges are Cytoscape's cheapest to place and draw (straight,
    // no arrowheads): what a graph of thousands of edges needs.
    sheet.push({ selector: "edge", style: { "curve-style": "haystack", "haystack-radius": 0, "target-arrow-shape": "none" } });
  }
  return sheet;
}
