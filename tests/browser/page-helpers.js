// Injected into the test pages (next to /netwine.js): small drivers the tests
// call through page.evaluate. Modern JS is fine here: this is Chromium.
window.T = {
  // Opens a socket and records what happens; resolves once it is open or closed.
  open(opts) {
    const s = new Netwine.Socket('/netwine', opts);
    const log = {events: [], transports: [], errors: [], close: null, text: '', bytes: 0};
    s.addEventListener('transportchange', (e) => log.transports.push(e.transport));
    s.addEventListener('error', (e) => { log.events.push('error'); log.errors.push(e.message); });
    s.addEventListener('open', () => log.events.push('open'));
    s.addEventListener('close', (e) => {
      log.events.push('close');
      log.close = {code: e.code, reason: e.reason, wasClean: e.wasClean};
    });
    s.addEventListener('message', (e) => {
      if (typeof e.data === 'string') log.text += e.data;
      else log.bytes += e.data.byteLength !== undefined ? e.data.byteLength : e.data.size;
    });
    s.log = log;
    return new Promise((resolve) => {
      s.addEventListener('open', () => resolve(s));
      s.addEventListener('close', () => resolve(s));
    });
  },
  waitFor(cond, ms = 15000, what = 'condition') {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      (function check() {
        if (cond()) return resolve();
        if (Date.now() - t0 > ms) return reject(new Error('timed out waiting for ' + what));
        setTimeout(check, 5);
      })();
    });
  },
  closed(s) {
    return T.waitFor(() => s.log.close, 15000, 'close').then(() => s.log, (e) => {
      throw new Error(e.message + ': ' + T.state(s));
    });
  },
  // The socket's insides, for a test that timed out (not an API).
  state(s) {
    const a = s._active;
    return JSON.stringify({
      readyState: s.readyState, transport: a && a.name, established: a && a.established,
      sending: !!s._sending, upstream: [s._up.base, s._up.end], queued: s._outq.length,
      timers: Object.keys(s._timers), closeSentOn: s._closeSentOn && (s._closeSentOn.name || s._closeSentOn),
    });
  },
  pattern(size, seed) {
    const a = new Uint8Array(size);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < size; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;   // xorshift: no repeating period to hide a shift
      a[i] = x & 255;
    }
    return a;
  },
  // Sends `size` pattern bytes to an echo target in pieces of every kind send()
  // takes, checks the echo byte for byte. Progress is visible as window.rt.
  async roundTrip(opts, size, seed) {
    const data = T.pattern(size, seed);
    const got = new Uint8Array(size);
    const rt = window.rt = {n: 0, done: false, mismatch: -1, messages: 0, logs: []};
    if (!console.log.wrapped) {
      const log = console.log;
      console.log = function (...args) {
        if (window.rt && typeof args[0] === 'string' && args[0].startsWith('[netwine]')) window.rt.logs.push(args[0]);
        return log.apply(this, args);
      };
      console.log.wrapped = true;
    }
    const s = await T.open(Object.assign({binaryType: 'arraybuffer'}, opts));
    if (s.readyState !== Netwine.OPEN) return {log: s.log, rt};
    s.addEventListener('message', (e) => {
      const b = new Uint8Array(e.data);
      if (rt.n + b.length > size) { rt.mismatch = size; return; }
      got.set(b, rt.n);
      rt.n += b.length;
      rt.messages++;
    });
    const kinds = ['u8', 'ab', 'dv', 'blob', 'u16'];
    let off = 0, k = 0;
    while (off < size) {
      const len = Math.min(size - off, 65536 + k * 4099);
      const piece = data.subarray(off, off + len);
      const kind = kinds[k++ % kinds.length];
      if (kind === 'u8') s.send(piece);
      else if (kind === 'ab') s.send(piece.slice().buffer);
      else if (kind === 'dv') s.send(new DataView(piece.slice().buffer));
      else if (kind === 'blob') s.send(new Blob([piece]));
      else if (kind === 'u16' && len % 2 === 0) s.send(new Uint16Array(piece.slice().buffer));
      else s.send(piece);
      off += len;
    }
    const t0 = performance.now();
    await T.waitFor(() => rt.n >= size || s.log.close, 180000, 'the echo');
    rt.ms = Math.round(performance.now() - t0);
    for (let i = 0; i < rt.n; i++) if (got[i] !== data[i]) { rt.mismatch = i; break; }
    rt.bufferedAfter = s.bufferedAmount;
    rt.transport = s.transport;
    s.close(4000, 'round trip done');
    await T.closed(s);
    rt.done = true;
    return {log: s.log, rt};
  },
};
