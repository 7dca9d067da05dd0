// Part of `npm run build`, after tsc: each package in PACKAGES, as the CLI
// loads it, bundled by esbuild into one minified CommonJS file under
// dist/node_modules/<package>/. Node resolves a package from the nearest
// node_modules up from the importing file, so dist/'s code (the CLI) loads
// these one-file copies and the sources (tests run through tsx) the packages
// themselves; no import is rewritten. An idle process keeps every module it
// loaded (its source, compiled functions, module records): yaml is 228 files,
// prom-client's metric files with @opentelemetry/api ~140, commander 13, zod's
// v3 10; one file each made an idle sidecar ~5 MiB smaller (README "Idle
// memory"). Each copy exports every name the package does (cjs-module-lexer
// reads esbuild's export annotation: `import { parse } from 'yaml'` works).

import { build } from 'esbuild';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const require = createRequire(`${root}package.json`);

/**
 * Package → the module specifiers of it that our code loads (package name
 * or subpath), each to the file of the copy that stands for it.
 */
const PACKAGES = {
  yaml: { yaml: 'index.js' },
  commander: { commander: 'index.js' },
  zod: { 'zod/v3': 'v3.js' },
  // Loaded through createRequire in proxy/runtime/prom-client.ts, file by file (not the package's entry).
  'prom-client': Object.fromEntries(['counter', 'gauge', 'histogram', 'registry', 'defaultMetrics'].map((f) => [`prom-client/lib/${f}`, `lib/${f}.js`])),
};

// A copy resolves only the specifiers listed (its exports map), and Node does not fall back to the package: a build whose
// code loads another specifier of these packages would fail at run time, so it fails here.
const SPECIFIER = new RegExp(`(?:from |import\\(|require\\()'((?:${Object.keys(PACKAGES).join('|')})(?:/[^']*)?)'`, 'g');
for (const entry of readdirSync(`${root}dist`, { recursive: true, withFileTypes: true })) {
  const dir = entry.parentPath ?? entry.path; // Node < 20.12: path
  if (!entry.isFile() || !entry.name.endsWith('.js') || dir.includes('/node_modules')) continue;
  for (const [, specifier] of readFileSync(`${dir}/${entry.name}`, 'utf8').matchAll(SPECIFIER)) {
    const pkg = Object.keys(PACKAGES).find((p) => specifier === p || specifier.startsWith(`${p}/`));
    if (!(specifier in PACKAGES[pkg])) throw new Error(`${dir}/${entry.name} loads ${specifier}: add it to PACKAGES in proxy/cmd/bundle-packages.mjs`);
  }
}

for (const [pkg, files] of Object.entries(PACKAGES)) {
  const dir = `${root}dist/node_modules/${pkg}/`;
  const { version } = JSON.parse(readFileSync(`${root}node_modules/${pkg}/package.json`, 'utf8'));
  const specifiers = Object.keys(files);
  // One bundle per package: every specifier's exports under its own name, so that modules shared between them load once.
  const entry = specifiers.map((s, i) => `export * as m${i} from ${JSON.stringify(s)};`).join('\n');
  await build({
    stdin: { contents: entry, resolveDir: root, sourcefile: `${pkg}-bundle.js` },
    outfile: `${dir}bundle.js`,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    minify: true,
    legalComments: 'inline',
    logLevel: 'warning',
  });
  specifiers.forEach((s, i) => {
    // Names listed literally: cjs-module-lexer finds `exports.name =`, for `import { name } from` in ES modules.
    const names = Object.keys(require(s)).filter((n) => n !== 'default' && n !== '__esModule');
    const lines = ["'use strict';", `const m = require('${'../'.repeat(files[s].split('/').length - 1) || './'}bundle.js').m${i};`];
    // A CommonJS module's exports come as the namespace's default (esbuild's interop): a class is the whole export.
    if (require(s) instanceof Function) lines.push('module.exports = m.default;');
    else lines.push(...names.map((n) => `exports.${n} = m.${n};`));
    mkdirSync(`${dir}${files[s].split('/').slice(0, -1).join('/')}`, { recursive: true });
    writeFileSync(`${dir}${files[s]}`, `${lines.join('\n')}\n`);
  });
  const exportsMap = Object.fromEntries(specifiers.map((s) => [s === pkg ? '.' : `./${s.slice(pkg.length + 1)}`, `./${files[s]}`]));
  writeFileSync(`${dir}package.json`, `${JSON.stringify({ name: pkg, version, private: true, description: `${pkg} ${version}, bundled for the CLI (proxy/cmd/bundle-packages.mjs)`, exports: exportsMap }, null, 2)}\n`);
}
