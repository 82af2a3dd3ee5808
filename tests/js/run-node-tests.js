#!/usr/bin/env node
'use strict';
// Runs `node --test` on the files given, with a spec report on stdout and a JUnit
// report at `--junit PATH` (whose directory is made first: node does not make it).
// Used by tests/js/meson.build and tests/browser/meson.build.
const {spawnSync} = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
const at = args.indexOf('--junit');
if (at < 0 || !args[at + 1]) {
  console.error('usage: run-node-tests.js --junit REPORT.xml FILE...');
  process.exit(2);
}
const junit = path.resolve(args[at + 1]);
args.splice(at, 2);
fs.mkdirSync(path.dirname(junit), {recursive: true});
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-reporter-destination=stdout',
  '--test-reporter=junit', '--test-reporter-destination=' + junit, ...args], {stdio: 'inherit'});
if (r.error) {
  console.error('could not run node: ' + r.error.message);
  process.exit(1);
}
process.exit(r.status === null ? 1 : r.status);
