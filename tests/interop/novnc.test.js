'use strict';
// netwine as a drop-in for websockify, end to end: Debian's noVNC (the files of
// /usr/share/novnc, unchanged, served by netwine's --www) in Debian's headless
// Chromium connects through netwine (--token-source, ?token=vnc1) to a real VNC
// server (x11vnc on an Xvfb display) and draws the remote screen. The assertions
// are on the pixels noVNC drew into its canvas, every one of them, not on "connected".
//
// Everything runs on loopback; every wait is bounded; every process started here
// is killed at the end, on failure too (and SIGKILLed if node exits first).
const test = require('node:test');
const assert = require('node:assert');
const {spawn} = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const NETWINE = process.env.NETWINE_BIN || path.join(ROOT, 'build', 'netwine');
const ARTIFACTS = process.env.NETWINE_ARTIFACTS || path.join(ROOT, 'build', 'test-artifacts');
const NOVNC = process.env.NOVNC_DIR || '/usr/share/novnc';
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];
const INSTALL_HINT = 'apt-get install xvfb x11vnc novnc x11-xserver-utils chromium (tools/install-deps.sh --test)';

// The remote screen. Its size is what noVNC's canvas must take; the checkerboard
// makes every pixel's expected colour depend on both its coordinates, so a shifted,
// scaled, cropped or half-drawn frame fails.
const WIDTH = 640;
const HEIGHT = 480;
const CELL = 8;  // checkerboard squares, in pixels; the XBM tile below is 2x2 cells
const RED = [255, 0, 0];
const BLUE = [0, 0, 255];
const GREEN = [0, 255, 0];
const YELLOW = [255, 255, 0];
const BLACK = [0, 0, 0];

// Bounds of the waits, generous for a loaded machine or a sanitizer build.
const START_MS = 15000;   // a process to be ready (Xvfb display, x11vnc port, netwine port file)
const FRAME_MS = 20000;   // noVNC's canvas to show an expected frame
const LOG_MS = 5000;      // netwine to log a session after its WebSocket closed
const STOP_MS = 5000;     // a process to exit on SIGTERM before SIGKILL

const children = new Set();
let dir;  // this run's temporary files
process.on('exit', () => {
  for (const c of children) c.proc.kill('SIGKILL');
  if (dir) fs.rmSync(dir, {recursive: true, force: true});
});
// Interrupted (Ctrl-C, a runner's SIGTERM): exit, so that the handler above runs.
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) process.once(sig, () => process.exit(128 + n));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hex = (rgb) => '#' + rgb.map((v) => v.toString(16).padStart(2, '0')).join('');

async function waitUntil(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Starts a process whose output is kept for error messages; test.after stops it
// (the exit handler above kills it if that never runs). `extraFds` adds pipes at
// fd 3 and up.
function start(cmd, args, {env, extraFds = 0} = {}) {
  const stdio = ['ignore', 'pipe', 'pipe'].concat(Array(extraFds).fill('pipe'));
  const proc = spawn(cmd, args, {stdio, env: env || process.env});
  const c = {proc, out: '', err: ''};
  proc.stdout.on('data', (d) => { c.out += d; });
  proc.stderr.on('data', (d) => { c.err += d; });
  c.exited = new Promise((resolve) => {
    proc.once('close', (code, sig) => { children.delete(c); resolve(code ?? sig); });
    proc.once('error', (e) => {  // e.g. not installed; 'close' may not follow
      c.err += `could not start ${cmd}: ${e.message} (${INSTALL_HINT})\n`;
      children.delete(c);
      resolve('error');
    });
  });
  children.add(c);
  c.tail = () => (c.out + c.err).split('\n').slice(-15).join('\n');
  c.alive = () => proc.exitCode === null && proc.signalCode === null && children.has(c);
  return c;
}

async function stop(c) {
  if (!children.has(c)) return c.exited;
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), STOP_MS);
  await c.exited;
  clearTimeout(t);
}

// A free loopback port, for a server (x11vnc) that cannot pick its own and
// report it. It is released before use: callers retry if someone takes it first.
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const {port} = s.address(); s.close(() => resolve(port)); });
  });
}

// Xvfb picks a free display itself (-displayfd) and writes its number on fd 3 once
// it accepts clients: no guessed display numbers, no race with another X server.
// -noreset: the server must not reset (and lose the root window's background)
// when its last client, e.g. xsetroot, disconnects.
async function startXvfb() {
  const x = start('Xvfb', ['-displayfd', '3', '-screen', '0', `${WIDTH}x${HEIGHT}x24`,
    '-nolisten', 'tcp', '-noreset'], {extraFds: 1});
  let fd3 = '';
  x.proc.stdio[3].on('data', (d) => { fd3 += d; });
  await waitUntil(() => {
    if (!x.alive()) throw new Error('Xvfb exited: ' + x.tail());
    return /^\d+\n/.test(fd3);
  }, START_MS, 'Xvfb to report its display');
  return {proc: x, display: ':' + parseInt(fd3, 10)};
}

// Sets the root window's background (xsetroot from x11-xserver-utils).
async function xsetroot(display, args) {
  const c = start('xsetroot', args, {env: {...process.env, DISPLAY: display}});
  const t = setTimeout(() => c.proc.kill('SIGKILL'), START_MS);
  const code = await c.exited;
  clearTimeout(t);
  if (code !== 0) throw new Error(`xsetroot ${args.join(' ')} failed (${code}): ${c.tail()}`);
}

// A 2x2-cell checkerboard tile in XBM (bits are least significant first, so 0xff
// sets x = 0..7): tiled from the root's origin, pixel (x, y) is the foreground
// when floor(x / CELL) + floor(y / CELL) is even.
function checkerXbm() {
  const bytes = [];
  for (let y = 0; y < 2 * CELL; y++) bytes.push(...(y < CELL ? [0xff, 0x00] : [0x00, 0xff]));
  return `#define checker_width ${2 * CELL}\n#define checker_height ${2 * CELL}\n` +
    `static unsigned char checker_bits[] = {\n${bytes.map((b) => '0x' + b.toString(16).padStart(2, '0')).join(', ')}};\n`;
}

async function drawChecker(display, xbm, fg, bg) {
  await xsetroot(display, ['-bitmap', xbm, '-fg', hex(fg), '-bg', hex(bg)]);
}

// x11vnc on a loopback port, without a password, serving every client that comes.
// Ready when it prints PORT=N; it exits at once if the port was taken meanwhile.
async function startX11vnc(display) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const v = start('x11vnc', ['-display', display, '-rfbport', String(port), '-localhost', '-noipv6',
      '-nopw', '-forever', '-shared']);
    const ok = await waitUntil(() => {
      if (v.out.includes(`PORT=${port}\n`)) return 'ready';
      if (!v.alive()) return 'exited';
      return null;
    }, START_MS, 'x11vnc to listen');
    if (ok === 'ready') return {proc: v, port};
    if (attempt === 3) throw new Error('x11vnc did not start: ' + v.tail());
  }
}

// netwine as README.md shows it in place of websockify: noVNC's files from --www,
// targets from a websockify token file. The access log goes to a file the test reads.
async function startNetwine(dir, vncPort) {
  if (!fs.existsSync(NETWINE)) throw new Error(`netwine binary not found at ${NETWINE} (build first, or set NETWINE_BIN)`);
  const tokens = path.join(dir, 'vnc-tokens');
  fs.writeFileSync(tokens, `# websockify TokenFile format\nvnc1: 127.0.0.1:${vncPort}\n`);
  const portFile = path.join(dir, 'ports');
  const accessLog = path.join(dir, 'access.log');
  const n = start(NETWINE, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--www', NOVNC,
    '--token-source', tokens, '--access-log', accessLog, '--log-level', 'warn']);
  const address = await waitUntil(() => {
    if (!n.alive()) throw new Error('netwine exited: ' + n.tail());
    const text = fs.existsSync(portFile) ? fs.readFileSync(portFile, 'utf8') : '';
    const m = /^(127\.0\.0\.1:\d+)\n/m.exec(text);
    return m && m[1];
  }, START_MS, 'netwine to write its port file');
  return {proc: n, origin: 'http://' + address, accessLog: () => fs.readFileSync(accessLog, 'utf8')};
}

async function launchBrowser() {
  let chromium;
  try {
    ({chromium} = require('playwright-core'));
  } catch (e) {
    throw new Error('playwright-core is missing: run `cd tests && npm ci` (tools/install-deps.sh --test does it)');
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: ${INSTALL_HINT}`);
  return chromium.launch({executablePath: CHROMIUM, args: CHROMIUM_ARGS});
}

// Runs in the page before its own scripts: records each WebSocket the page opens,
// with the subprotocols it offered, so the test can read what was negotiated. The
// page still gets a native WebSocket (noVNC checks the prototype's own properties,
// which a subclass would fail).
function recordWebSockets() {
  const Native = window.WebSocket;
  window.__sockets = [];
  function Recording(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    window.__sockets.push({url: String(url), offered: protocols === undefined ? [] : [].concat(protocols), ws});
    return ws;
  }
  Recording.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Recording[k] = Native[k];
  window.WebSocket = Recording;
}

// Runs in the page: compares every pixel of the canvas noVNC draws into with the
// checkerboard of `fg` and `bg` (a solid colour when they are equal).
function compareCanvas({selector, cell, fg, bg}) {
  const canvas = document.querySelector(selector);
  if (!canvas) return {canvas: false};
  const {width, height} = canvas;
  const r = {canvas: true, width, height, mismatches: 0, first: null};
  if (!width || !height) return r;
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const want = ((Math.floor(x / cell) + Math.floor(y / cell)) % 2) === 0 ? fg : bg;
      const i = 4 * (y * width + x);
      if (data[i] !== want[0] || data[i + 1] !== want[1] || data[i + 2] !== want[2] || data[i + 3] !== 255) {
        if (!r.mismatches++) r.first = {x, y, got: Array.from(data.subarray(i, i + 4)), want};
      }
    }
  }
  return r;
}

// Waits (bounded) until the canvas shows exactly that frame; the failure message
// says how far it got.
async function waitForFrame(page, selector, fg, bg, what, pageLog) {
  let last;
  try {
    await waitUntil(async () => {
      const closed = (await sockets(page)).filter((w) => w.readyState === 3);  // CLOSED: it will not come
      if (closed.length) throw new Error(`noVNC's WebSocket closed: ${JSON.stringify(closed)}`);
      last = await page.evaluate(compareCanvas, {selector, cell: CELL, fg, bg});
      return last.canvas && last.width === WIDTH && last.height === HEIGHT && last.mismatches === 0;
    }, FRAME_MS, what);
  } catch (e) {
    throw new Error(`${e.message}; last canvas state: ${JSON.stringify(last)}; page log: ${JSON.stringify(pageLog)}`);
  }
}

// A page that records its WebSockets. `errors`: uncaught exceptions, which fail a
// test; `log`: those and console errors, for failure messages (noVNC logs its
// missing package.json as an error, and the browser every 404).
async function newPage() {
  const page = await browser.newPage({viewport: {width: 800, height: 600}});
  const errors = [];
  const log = [];
  page.on('pageerror', (e) => { errors.push(e.message); log.push(e.message); });
  page.on('console', (m) => { if (m.type() === 'error') log.push('console: ' + m.text()); });
  await page.addInitScript(recordWebSockets);
  return {page, errors, log};
}

async function sockets(page) {
  return page.evaluate(() => window.__sockets.map((s) =>
    ({url: s.url, offered: s.offered, protocol: s.ws.protocol, readyState: s.ws.readyState})));
}

async function status(origin) {
  const r = await fetch(origin + '/netwine/status');
  assert.strictEqual(r.status, 200);
  return r.json();
}

// netwine's session lines for the VNC server, parsed (key=value, values may be quoted).
function vncSessionLines(log, vncPort) {
  return log.split('\n').filter((l) => / session /.test(l) && l.includes(` address=127.0.0.1:${vncPort} `))
    .map((l) => Object.fromEntries([...l.matchAll(/(\w+)=("[^"]*"|\S+)/g)].map((m) => [m[1], m[2].replace(/^"|"$/g, '')])));
}

let xvfb, vnc, netwine, browser, xbm;

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netwine-novnc-'));
  if (!fs.existsSync(path.join(NOVNC, 'vnc.html'))) throw new Error(`${NOVNC}/vnc.html not found: ${INSTALL_HINT}`);
  xbm = path.join(dir, 'checker.xbm');
  fs.writeFileSync(xbm, checkerXbm());
  xvfb = await startXvfb();
  vnc = await startX11vnc(xvfb.display);
  netwine = await startNetwine(dir, vnc.port);
  browser = await launchBrowser();
});

test.after(async () => {
  if (browser) await browser.close().catch(() => {});
  // netwine first, so that a sanitizer report it prints at exit is in its output.
  for (const c of [netwine, vnc, xvfb]) if (c) await stop(c.proc);
  for (const c of [...children]) await stop(c);
  if (netwine) {
    const out = netwine.proc.out + netwine.proc.err;
    assert.doesNotMatch(out, /AddressSanitizer|LeakSanitizer|runtime error:/, 'sanitizer report in netwine output');
  }
  if (dir) fs.rmSync(dir, {recursive: true, force: true});
});

test('noVNC vnc.html, served by netwine, draws the VNC screen through it and follows changes', {timeout: 120000}, async () => {
  await drawChecker(xvfb.display, xbm, RED, BLUE);
  const {page, errors, log} = await newPage();
  fs.mkdirSync(ARTIFACTS, {recursive: true});
  try {
    // noVNC 1.3's vnc.html: path is relative to the page's host and port; resize=off
    // keeps the remote size, so the canvas is the remote framebuffer pixel for pixel.
    await page.goto(netwine.origin + '/vnc.html?autoconnect=1&path=websockify%3Ftoken%3Dvnc1&resize=off');
    await waitForFrame(page, '#noVNC_container canvas', RED, BLUE, 'the red/blue checkerboard in noVNC', log);
    await page.screenshot({path: path.join(ARTIFACTS, 'novnc.png')});

    // noVNC says it is connected, over one WebSocket to the websockify path. Debian's
    // noVNC 1.3 offers no subprotocol, which netwine serves as websockify's binary.
    const ui = await page.evaluate(() => ({classes: document.documentElement.className,
      status: document.getElementById('noVNC_status').textContent}));
    assert.match(ui.classes, /\bnoVNC_connected\b/);
    assert.match(ui.status, /^Connected \(unencrypted\) to /);
    const ws = await sockets(page);
    assert.strictEqual(ws.length, 1, JSON.stringify(ws));
    assert.strictEqual(ws[0].url, netwine.origin.replace('http:', 'ws:') + '/websockify?token=vnc1');
    assert.deepStrictEqual(ws[0].offered, []);
    assert.strictEqual(ws[0].protocol, '');
    assert.strictEqual(ws[0].readyState, 1);

    // netwine's status shows that session as a WebSocket to the token's target.
    const st = await status(netwine.origin);
    assert.strictEqual(st.sessions_open, 1, JSON.stringify(st));
    assert.strictEqual(st.sessions[0].transport, 'websocket');
    assert.strictEqual(st.sessions[0].target, 'vnc1');
    assert.ok(st.sessions[0].bytes_down > 0 && st.sessions[0].bytes_up > 0, JSON.stringify(st.sessions[0]));

    // A change on the remote screen reaches the canvas: noVNC's update requests go
    // up and x11vnc's updates come down through the same live relay.
    await xsetroot(xvfb.display, ['-solid', hex(GREEN)]);
    await waitForFrame(page, '#noVNC_container canvas', GREEN, GREEN, 'the screen turned green in noVNC', log);
    assert.deepStrictEqual(errors, []);
  } finally {
    if (!page.isClosed()) {  // the last state, green when it passed; what went wrong when not
      await page.screenshot({path: path.join(ARTIFACTS, 'novnc-last.png')}).catch(() => {});
      await page.close();
    }
  }

  // The access log: noVNC's files were served (Debian's package has no
  // package.json, which vnc.html asks for and tolerates missing), the upgrade on
  // noVNC's path, and once the page closed, the session line with the VNC server's
  // address and the bytes it carried.
  const lines = await waitUntil(() => {
    const l = vncSessionLines(netwine.accessLog(), vnc.port);
    return l.length === 1 && l;
  }, LOG_MS, 'the session line in the access log');
  const access = netwine.accessLog();
  assert.match(access, / path=\/vnc\.html\?autoconnect=1\S* status=200 /);
  assert.match(access, / path=\/core\/rfb\.js status=200 /);
  assert.match(access, / path=\/websockify\?token=vnc1 status=101 /);
  const failed = access.split('\n').filter((l) => / http /.test(l) && / status=[45]\d\d /.test(l));
  assert.ok(failed.every((l) => / path=\/package\.json status=404 /.test(l)), failed.join('\n'));
  assert.ok(!fs.existsSync(path.join(NOVNC, 'package.json')));
  const s = lines[0];
  assert.strictEqual(s.target, 'vnc1');
  assert.strictEqual(s.transports, 'websocket');
  assert.strictEqual(s.origin, netwine.origin);
  assert.match(s.close, /^1000 /);
  assert.ok(Number(s.bytes_down) > 0 && Number(s.bytes_up) > 0, JSON.stringify(s));
});

// Older noVNC and other websockify clients offer the subprotocol "binary". noVNC's
// own RFB class, imported from netwine, can be told to (its wsProtocols option).
// It runs in vnc.html left unconnected: the document must come from netwine on
// loopback, as Chromium's local network access checks block a WebSocket to
// 127.0.0.1 from a page of unknown address (e.g. one fulfilled by page.route).
function connectRfbBinary({width, height}) {
  const div = document.createElement('div');
  div.id = 'interop_screen';
  div.style.cssText = `position:fixed;left:0;top:0;width:${width}px;height:${height}px;z-index:1000`;
  document.body.appendChild(div);
  window.rfbState = 'loading';
  return import('/core/rfb.js').then(({default: RFB}) => {
    window.rfbState = 'connecting';
    const rfb = new RFB(div, 'ws://' + location.host + '/websockify?token=vnc1', {wsProtocols: ['binary'], shared: true});
    rfb.addEventListener('connect', () => { window.rfbState = 'connected'; });
    rfb.addEventListener('disconnect', (e) => { window.rfbState = 'disconnected, clean=' + e.detail.clean; });
  });
}

test('noVNC RFB offering the binary subprotocol draws the VNC screen through netwine', {timeout: 120000}, async () => {
  await drawChecker(xvfb.display, xbm, YELLOW, BLACK);
  const before = vncSessionLines(netwine.accessLog(), vnc.port).length;
  const {page, errors, log} = await newPage();
  try {
    await page.goto(netwine.origin + '/vnc.html');
    assert.strictEqual(await page.evaluate(() => window.__sockets.length), 0, 'vnc.html connected by itself');
    await page.evaluate(connectRfbBinary, {width: WIDTH, height: HEIGHT});
    await waitForFrame(page, '#interop_screen canvas', YELLOW, BLACK, 'the yellow/black checkerboard in noVNC', log);
    assert.strictEqual(await page.evaluate(() => window.rfbState), 'connected');
    const ws = await sockets(page);
    assert.strictEqual(ws.length, 1, JSON.stringify(ws));
    assert.deepStrictEqual(ws[0].offered, ['binary']);
    assert.strictEqual(ws[0].protocol, 'binary');
    assert.deepStrictEqual(errors, []);
  } finally {
    await page.close();
  }
  const lines = await waitUntil(() => {
    const l = vncSessionLines(netwine.accessLog(), vnc.port);
    return l.length === before + 1 && l;
  }, LOG_MS, 'the session line in the access log');
  const s = lines[before];
  assert.strictEqual(s.target, 'vnc1');
  assert.strictEqual(s.transports, 'websocket');
  assert.strictEqual(s.origin, netwine.origin);
  assert.match(s.close, /^1000 /);
  assert.ok(Number(s.bytes_down) > 0 && Number(s.bytes_up) > 0, JSON.stringify(s));
});
