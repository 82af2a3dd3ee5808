'use strict';
// bench/v1-tput.js — netwine.v1 throughput with the real client: netwine.js in
// Node (WebSocket transport, Node's `ws`), through netwine to an echo target.
// nwbench speaks the websockify-style `binary` subprotocol only; this measures
// what netwine.js users get, e.g. netwine with and without bulk threads.
//
//   node bench/v1-tput.js --base http://127.0.0.1:8080/netwine --target 127.0.0.1:9000 \
//        [--conns 1] [--mib 64] [--pid NETWINE_PID] [--label TEXT]
//
// Each connection sends --mib MiB of a pattern in 256 KiB pieces and checks every
// echoed byte. Prints one key=value line: MBps (payload echoed per second),
// server_cpu_s (netwine's user+system CPU over the run, from /proc, with --pid).
// Needs `cd tests && npm ci` (for ws). Loopback only: a benchmark fixture.
const fs = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name);
  return i >= 0 ? args[i + 1] : dflt;
};
const base = opt('base', 'http://127.0.0.1:8080/netwine');
const target = opt('target', null);
const conns = Number(opt('conns', '1'));
const size = Number(opt('mib', '64')) * 1024 * 1024;
const pid = opt('pid', null);
const label = opt('label', '-');
if (!target || !/^http:\/\/(127\.\d+\.\d+\.\d+|\[::1\]|localhost)[:/]/.test(base)) {
  console.error('usage: node bench/v1-tput.js --base http://127.0.0.1:PORT/netwine --target HOST:PORT [--conns N] [--mib M] [--pid PID]');
  process.exit(2);
}

const root = path.join(__dirname, '..');
const N = require(path.join(root, 'js-client', 'netwine.js'));
const WebSocket = require(path.join(root, 'tests', 'node_modules', 'ws'));

function cpuSeconds(p) {
  if (!p) return 0;
  const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;  // utime + stime, in clock ticks (USER_HZ 100)
}

function pattern(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) % 251;
  return b;
}

function one(i) {
  return new Promise((resolve, reject) => {
    const data = pattern(size, i);
    let got = 0;
    let bad = -1;
    const s = new N.Socket(base, {target, transports: ['websocket'], WebSocket, binaryType: 'arraybuffer'});
    s.onopen = () => {
      for (let off = 0; off < size; off += 256 * 1024) s.send(data.subarray(off, Math.min(size, off + 256 * 1024)));
    };
    s.onmessage = (e) => {
      const b = Buffer.from(e.data);
      if (bad < 0 && !b.equals(data.subarray(got, got + b.length))) bad = got;
      got += b.length;
      if (got >= size) s.close(1000, 'done');
    };
    s.onclose = (e) => (got >= size && bad < 0 ? resolve(got) : reject(new Error(`close ${e.code} ${e.reason}; got ${got}, first bad byte ${bad}`)));
  });
}

(async () => {
  const cpu0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  const got = await Promise.all(Array.from({length: conns}, (_, i) => one(i)));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const bytes = got.reduce((a, b) => a + b, 0);
  const cpu = cpuSeconds(pid) - cpu0;
  console.log(`mode=v1-tput label=${label} conns=${conns} bytes=${bytes} secs=${secs.toFixed(3)} ` +
              `MBps=${(bytes / secs / 1e6).toFixed(1)} server_cpu_s=${cpu.toFixed(2)} ` +
              `server_cpu_s_per_gb=${(cpu / (bytes / 1e9)).toFixed(3)} ok=1`);
})().catch((e) => {
  console.log(`mode=v1-tput label=${label} ok=0 error=${JSON.stringify(e.message)}`);
  process.exit(1);
});
