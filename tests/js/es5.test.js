'use strict';
// netwine.js promises ES5 (old browsers, no build step): parse it as ES5 and
// refuse anything newer. The demo pages' scripts are held to the same.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

let acorn;
try {
  acorn = require('acorn');
} catch (e) {
  throw new Error('acorn is missing: run `cd tests && npm ci` (tools/install-deps.sh --test does it)');
}

const root = path.join(__dirname, '..', '..');
const files = ['js-client/netwine.js', 'www/js/demo.js', 'www/js/status.js'];

for (const f of files) {
  test(`${f} is ES5`, () => {
    const src = fs.readFileSync(path.join(root, f), 'utf8');
    assert.doesNotThrow(() => acorn.parse(src, {ecmaVersion: 5, sourceType: 'script'}), `${f} uses syntax newer than ES5`);
  });
}

test('ES5 check catches ES2015 syntax', () => {
  for (const src of ['let a = 1;', 'var f = () => 1;', 'class A {}', 'var s = `x`;', 'const c = 1;']) {
    assert.throws(() => acorn.parse(src, {ecmaVersion: 5}), SyntaxError, src);
  }
});

test('netwine.js uses no ES2015 library calls at load or in the client', () => {
  const src = fs.readFileSync(path.join(root, 'js-client/netwine.js'), 'utf8');
  // Promise and fetch would need polyfills in the browsers ES5 is for.
  for (const word of ['Promise', 'fetch(', 'Symbol', 'Object.assign', '.includes(', 'Array.from']) {
    assert.ok(!src.includes(word), `netwine.js mentions ${word}`);
  }
});

test('the ES module and the type declarations name the same exports', () => {
  const mjs = fs.readFileSync(path.join(root, 'js-client/netwine.mjs'), 'utf8');
  const dts = fs.readFileSync(path.join(root, 'js-client/netwine.d.ts'), 'utf8');
  for (const name of ['Socket', 'CONNECTING', 'OPEN', 'CLOSING', 'CLOSED', 'version']) {
    assert.match(mjs, new RegExp('\\b' + name + '\\b'), `netwine.mjs lacks ${name}`);
    assert.match(dts, new RegExp('\\b' + name + '\\b'), `netwine.d.ts lacks ${name}`);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'js-client/package.json'), 'utf8'));
  assert.strictEqual(pkg.name, 'netwine-client');
  assert.strictEqual(pkg.version, require('../../js-client/netwine.js').version);
  for (const f of [pkg.main, pkg.module, pkg.types]) assert.ok(fs.existsSync(path.join(root, 'js-client', f)), f);
});
