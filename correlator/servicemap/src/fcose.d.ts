// cytoscape-fcose ships no types: it is a Cytoscape.js extension.
declare module "cytoscape-fcose" {
  import type cytoscape from "cytoscape";
  const ext: cytoscape.Ext;
  export default ext;
}
