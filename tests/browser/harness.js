'use strict';
// What the browser tests run against: the real netwine binary, a TCP echo target,
// a port that refuses connections, a small HTTP proxy that can refuse WebSocket
// upgrades and cut every connection, and Debian's Chromium driven by
// playwright-core (never a downloaded browser).
const {spawn} = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

// A TCP target that sends back what it gets (with TCP back-pressure, through pipe).
async function startEcho() {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  const port = await listen(server);
  return {port, close: () => { for (const s of sockets) s.destroy(); server.close(); }};
}

// A port nothing listens on (bound, then released).
async function refusedPort() {
  const server = net.createServer();
  const port = await listen(server);
  await new Promise((r) => server.close(r));
  return port;
}

// Starts netwine on a free port; resolves once it wrote its port file.
async function startNetwine(extraArgs) {
  const bin = process.env.NETWINE_BIN || path.join(ROOT, 'build', 'netwine');
  if (!fs.existsSync(bin)) throw new Error(`netwine binary not found at ${bin} (build first, or set NETWINE_BIN)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netwine-browser-'));
  const portFile = path.join(dir, 'ports');
  const accessLog = path.join(dir, 'access.log');  // read by failing tests' messages
  const args = ['--demo', '--listen', '127.0.0.1:0', '--port-file', portFile, '--access-log', accessLog, '--drain-timeout', '2',
    '--log-level', 'warn', '--www', path.join(ROOT, 'www'), '--js-client', path.join(ROOT, 'js-client')].concat(extraArgs);
  const proc = spawn(bin, args, {stdio: ['ignore', 'ignore', 'pipe']});
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const deadline = Date.now() + 10000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`netwine exited (${proc.exitCode}): ${stderr}`);
    const text = fs.existsSync(portFile) ? fs.readFileSync(portFile, 'utf8') : '';
    const m = /^(127\.0\.0\.1:\d+)$/m.exec(text);
    if (m && text.endsWith('\n')) {
      return {
        origin: 'http://' + m[1],
        address: m[1],
        stderr: () => stderr,
        // The last `n` lines of the access log (requests netwine finished answering).
        accessTail: (n) => {
          try {
            return fs.readFileSync(accessLog, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
          } catch (e) {
            return '(no access log: ' + e.message + ')';
          }
        },
        // SIGTERM, then the exit status and output are checked: a clean drain exits
        // 0, and under the sanitizer build (tools/test.sh) any report, leaks at
        // exit included, fails the suite.
        stop: () => new Promise((resolve) => {
          if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
          proc.once('close', resolve);
          proc.kill('SIGTERM');
          setTimeout(() => proc.kill('SIGKILL'), 10000).unref();
        }).then(() => {
          fs.rmSync(dir, {recursive: true, force: true});
          if (/AddressSanitizer|LeakSanitizer|runtime error:/.test(stderr))
            throw new Error('sanitizer report in netwine output:\n' + stderr);
          if (proc.exitCode !== 0) throw new Error(`netwine exited with ${proc.exitCode ?? proc.signalCode}: ${stderr}`);
        }),
      };
    }
    if (Date.now() > deadline) throw new Error('netwine did not start: ' + stderr);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// An HTTP/1.1 proxy in front of netwine. `blockUpgrade` answers every Upgrade
// request 400 (as proxies that do not know WebSocket do); killAll() destroys every
// connection through it, both sides, as a network failure would.
async function startProxy(upstreamPort) {
  const conns = new Set();
  const track = (s) => {
    if (conns.has(s)) return;  // a kept-alive upstream socket serves many requests
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});
  };
  const agent = new http.Agent({keepAlive: true});
  const server = http.createServer((req, res) => {
    const what = req.method + ' ' + req.url.replace(/\?.*/, '');
    proxy.note(what);
    const up = http.request({host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url,
      headers: req.headers, agent}, (ures) => {
      proxy.note(what + ' -> ' + ures.statusCode);
      ures.on('data', (d) => proxy.count(d.length));
      res.writeHead(ures.statusCode, ures.statusMessage, ures.headers);
      res.flushHeaders();
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('socket', track);
    up.on('error', (e) => { proxy.note(what + ' upstream error ' + (e.code || e.message)); res.destroy(); });
    req.pipe(up);
    res.on('close', () => {
      if (!res.writableFinished) {
        proxy.note(what + ' closed before its end');
        up.destroy();
      }
    });
  });
  server.on('connection', track);
  server.on('upgrade', (req, socket, head) => {
    track(socket);
    if (proxy.blockUpgrade) {
      proxy.upgradesRefused++;
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\nthis proxy refuses them\n');
      return;
    }
    const up = net.connect(upstreamPort, '127.0.0.1', () => {
      let head0 = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) head0 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(head0 + '\r\n');
      if (head && head.length) up.write(head);
      up.on('data', (d) => proxy.count(d.length));
      up.pipe(socket);
      socket.pipe(up);
    });
    track(up);
    up.on('close', () => socket.destroy());
    socket.on('close', () => up.destroy());
  });
  const proxy = {
    blockUpgrade: false,
    upgradesRefused: 0,
    down: 0,          // bytes from netwine to the browser since cutAt() was set
    cuts: [],         // cut every connection when `down` passes each of these
    cutsDone: 0,
    events: [],       // what the proxy saw lately (for a failing test's message)
    note(text) {
      this.events.push(Date.now() % 100000 + ' ' + text);
      if (this.events.length > 200) this.events.shift();
    },
    cutAt(...marks) {
      this.down = 0;
      this.cuts = marks.sort((a, b) => a - b);
      this.cutsDone = 0;
    },
    count(n) {
      this.down += n;
      if (this.cuts.length && this.down >= this.cuts[0]) {
        this.cuts.shift();
        // Now, before this chunk is passed on: the response is cut mid-way.
        this.note('cut every connection at ' + this.down + ' bytes down');
        if (this.killAll()) this.cutsDone++;
      }
    },
    port: await listen(server),
    killAll() {
      const n = conns.size;
      for (const s of conns) s.destroy();
      return n;
    },
    close() {
      this.killAll();
      agent.destroy();
      server.close();
    },
  };
  proxy.origin = 'http://127.0.0.1:' + proxy.port;
  return proxy;
}

async function launchBrowser() {
  let chromium;
  try {
    ({chromium} = require('playwright-core'));
  } catch (e) {
    throw new Error('playwright-core is missing: run `cd tests && npm ci` (tools/install-deps.sh --test does it)');
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium`);
  return chromium.launch({executablePath: CHROMIUM, args: CHROMIUM_ARGS});
}

module.exports = {ROOT, startEcho, refusedPort, startNetwine, startProxy, launchBrowser};
