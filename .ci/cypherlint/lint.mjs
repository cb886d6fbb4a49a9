// Lints every Cypher statement weft sends with Neo4j's own linter.
// Usage: node lint.mjs statements.json   (from `go run ./correlator/cmd/cypherstatements`)
// Input: [{name, statement, parameters}]; every parameter a statement uses
// must be declared. Exits 1 on any diagnostic, printing each one.
import { readFileSync } from 'node:fs';
import { lintCypherQuery } from '@neo4j-cypher/language-support';

const file = process.argv[2];
if (!file) {
  console.error('usage: node lint.mjs statements.json');
  process.exit(2);
}
const statements = JSON.parse(readFileSync(file, 'utf8'));
if (!Array.isArray(statements) || statements.length === 0) {
  console.error(`${file}: no statements`);
  process.exit(2);
}
let bad = 0;
for (const s of statements) {
  const { diagnostics } = lintCypherQuery(s.statement, { parameters: s.parameters ?? {} });
  for (const d of diagnostics) {
    bad++;
    console.error(`${s.name}: ${d.message} (severity ${d.severity}) at ${JSON.stringify(d.range?.start ?? d.offsets)}\n  ${s.statement}`);
  }
}
console.log(`cypherlint: ${statements.length} statements, ${bad} diagnostics`);
process.exit(bad > 0 ? 1 : 0);
