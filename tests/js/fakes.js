'use strict';
// Scripted stand-ins for XMLHttpRequest and WebSocket, so the client's transport
// logic runs in Node without a server. A test sets `handler(xhr)` to answer each
// request, and `onSocket(ws)` to drive each WebSocket.

const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function makeEnv() {
  const env = {requests: [], sockets: [], handler: null, onSocket: null};

  class FakeXHR {
    constructor() {
      this.readyState = 0;
      this.status = 0;
      this.responseText = '';
      this.headers = {};
      this.aborted = false;
      this.onreadystatechange = null;
      this.onprogress = null;
    }
    open(method, url) {
      this.method = method;
      this.url = url;
      this.path = url.replace(/^https?:\/\/[^/]+/, '');
      this.readyState = 1;
    }
    send(body) {
      this.body = body === undefined ? null : body;
      env.requests.push(this);
      if (env.handler) setImmediate(() => { if (!this.aborted) env.handler(this); });
    }
    abort() {
      this.aborted = true;
      this.readyState = 4;
      this.status = 0;
    }
    getResponseHeader(name) {
      return this.headers[name.toLowerCase()] || null;
    }
    bodyText() {
      if (this.body === null) return '';
      if (typeof this.body === 'string') return this.body;
      return Buffer.from(this.body.buffer, this.body.byteOffset, this.body.byteLength).toString('latin1');
    }
    // --- the fake server's side
    fire() {
      if (this.onreadystatechange) this.onreadystatechange();
    }
    reply(status, text, headers) {
      if (this.aborted) return;
      this.status = status;
      this.headers = headers || {};
      this.readyState = 2;
      this.fire();
      this.responseText = text || '';
      this.readyState = 3;
      if (this.onprogress) this.onprogress();
      this.fire();
      this.readyState = 4;
      this.fire();
    }
    json(status, obj, headers) {
      this.reply(status, JSON.stringify(obj), headers);
    }
    fail() {  // a network error
      if (this.aborted) return;
      this.status = 0;
      this.readyState = 4;
      this.fire();
    }
    begin(status) {  // a streaming response
      this.status = status || 200;
      this.readyState = 2;
      this.fire();
    }
    push(text) {
      if (this.aborted) return;
      this.responseText += text;
      this.readyState = 3;
      if (this.onprogress) this.onprogress();
      this.fire();
    }
    end() {
      if (this.aborted) return;
      this.readyState = 4;
      this.fire();
    }
  }

  class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.path = url.replace(/^wss?:\/\/[^/]+/, '');
      this.protocol = protocol;
      this.readyState = 0;
      this.bufferedAmount = 0;
      this.sent = [];
      this.closedWith = null;
      env.sockets.push(this);
      if (env.onSocket) setImmediate(() => env.onSocket(this));
    }
    send(data) {
      this.sent.push(typeof data === 'string' ? data : new Uint8Array(data.slice(0)));
    }
    close(code, reason) {
      this.closedWith = {code, reason};
      this.readyState = 2;
    }
    // --- the fake server's side
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    }
    text(s) {
      if (this.onmessage) this.onmessage({data: s});
    }
    binary(offset, bytes) {
      const buf = new Uint8Array(8 + bytes.length);
      const view = new DataView(buf.buffer);
      view.setUint32(0, Math.floor(offset / 2 ** 32));
      view.setUint32(4, offset % 2 ** 32);
      buf.set(bytes, 8);
      if (this.onmessage) this.onmessage({data: buf.buffer});
    }
    drop(code, reason) {
      this.readyState = 3;
      if (this.onclose) this.onclose({code: code || 1006, reason: reason || '', wasClean: code !== 1006});
    }
    binarySent() {
      return this.sent.filter((m) => typeof m !== 'string').map((m) => ({
        offset: new DataView(m.buffer).getUint32(0) * 2 ** 32 + new DataView(m.buffer).getUint32(4),
        text: Buffer.from(m.subarray(8)).toString(),
      }));
    }
  }

  env.XMLHttpRequest = FakeXHR;
  env.WebSocket = FakeWS;
  env.setTimeout = (fn, ms) => setTimeout(fn, ms);
  env.clearTimeout = (id) => clearTimeout(id);
  env.now = () => Date.now();
  env.location = undefined;
  env.Blob = undefined;
  env.TextDecoder = undefined;
  env.TextEncoder = undefined;
  env.FileReader = undefined;
  return env;
}

// Waits until cond() is true (polling), or fails after ms.
async function until(cond, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(2);
  }
}

const b64 = (s) => Buffer.from(s).toString('base64');

module.exports = {makeEnv, until, tick, sleep, b64};
