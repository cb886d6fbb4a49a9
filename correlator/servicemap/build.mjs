// Builds the service map into dist/ (committed, embedded by embed.go):
// src/main.ts bundled with its libraries into dist/app.js, and the page
// and stylesheet copied. The same sources and lockfile give the same
// bytes (no timestamps, no absolute paths), which CI checks.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2022",
  legalComments: "linked",
  charset: "utf8",
  outfile: "dist/app.js",
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/app.css", "dist/app.css");
