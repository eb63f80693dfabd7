// Build the web app into dist/: one minified, content-hashed script and style sheet
// (served with long cache lifetimes) and index.html naming them (served revalidated).
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
const result = await build({
  entryPoints: { app: "src/main.js", style: "src/app.css" },
  bundle: true,
  minify: process.env.WEB_DEBUG ? false : true,
  format: "esm",
  target: ["es2022"],
  entryNames: "[name]-[hash]",
  outdir: "dist/assets",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});
const outputs = Object.entries(result.metafile.outputs);
const named = (entry) => basename(outputs.find(([, o]) => o.entryPoint === entry)[0]);
const html = readFileSync("src/index.html", "utf8")
  .replace("/assets/app.js", `/assets/${named("src/main.js")}`)
  .replace("/assets/app.css", `/assets/${named("src/app.css")}`);
writeFileSync("dist/index.html", html);
for (const [path, o] of outputs) console.log(`${basename(path)}\t${o.bytes} bytes`);
