#!/usr/bin/env node
// megahub's preinstall, for installs of the megahub package (as a dependency, `-g`, `npx`).
//
// Why: onnxruntime-node's postinstall downloads a CUDA 12 provider from a NuGet feed by default on Linux x64 and fails
// the whole `npm install` when that feed is unreachable (offline, air-gapped clusters). megahub never uses that build
// (`megahub gpu install` puts ORT 1.29.0's CUDA 13 provider in place, version-checked), and only the installing
// project's own config or environment can switch the download off. npm runs every package's preinstall before any
// postinstall (arborist rebuild: preinstall → install → postinstall), so here, before ORT's script runs, its entry
// point is replaced by one that does nothing unless the user asked ORT for its download explicitly
// (ONNXRUNTIME_NODE_INSTALL / --onnxruntime-node-install=…, which ORT's own script then honours as before).
//
// It never fails an install: any problem leaves ORT's script as it was and says so in one line.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const MARK = "megahub-preinstall";
const USER_FLAGS = ["ONNXRUNTIME_NODE_INSTALL", "npm_config_onnxruntime_node_install", "ONNXRUNTIME_NODE_INSTALL_CUDA", "npm_config_onnxruntime_node_install_cuda"];

function main() {
  if (USER_FLAGS.some((k) => process.env[k])) return; // the user chose; ORT's script does what they asked
  // megahub's own checkout (`npm ci` here): package.json's allowScripts denies ORT's script already.
  const { npm_package_json: pkgJson, npm_config_local_prefix: prefix } = process.env;
  if (pkgJson && prefix && path.dirname(pkgJson) === prefix) return;
  let pkg;
  try {
    pkg = require.resolve("onnxruntime-node/package.json", { paths: [path.join(__dirname, "..")] });
  } catch {
    return; // not installed (e.g. --omit or another layout): nothing would run either
  }
  const script = path.join(path.dirname(pkg), "script", "install.js");
  if (!fs.existsSync(script)) return;
  const upstream = fs.readFileSync(script, "utf8");
  if (upstream.includes(MARK)) return;
  // ORT's script is kept whole first; the stub replaces install.js by a rename, so a failure leaves one or the other.
  fs.writeFileSync(path.join(path.dirname(script), "install-upstream.js"), upstream);
  const tmp = `${script}.${MARK}-${process.pid}`;
  fs.writeFileSync(
    tmp,
    `// ${MARK}: replaced by megahub's preinstall so that installing megahub never downloads ORT's CUDA 12 provider
// (megahub's GPU path is \`megahub gpu install\`). ORT's own script is install-upstream.js; it runs when
// ONNXRUNTIME_NODE_INSTALL or --onnxruntime-node-install=… asks for it.
'use strict';
const flags = ${JSON.stringify(USER_FLAGS)};
if (flags.some((k) => process.env[k]) || process.argv.some((a) => a.startsWith('--onnxruntime-node-install'))) require('./install-upstream.js');
`,
  );
  fs.renameSync(tmp, script);
}

try {
  main();
} catch (e) {
  process.stderr.write(`megahub preinstall: left onnxruntime-node's install script as it was (${e && e.message})\n`);
}
