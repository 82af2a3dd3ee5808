'use strict';
// The pure protocol pieces of netwine.js: UTF-8, base64, text framing, offsets.
const test = require('node:test');
const assert = require('node:assert');
const N = require('../../js-client/netwine.js');
const I = N._internal;

const samples = ['', 'a', 'hello\r\n', 'grüße', '€uro', '日本語テキスト', '𝄞 clef', 'mixed ä€𝄞 end',
  'x'.repeat(70000), 'é'.repeat(40000)];

test('utf8Encode matches Buffer (valid strings)', () => {
  for (const s of samples) assert.deepStrictEqual(Buffer.from(I.utf8Encode(s)), Buffer.from(s, 'utf8'), s.slice(0, 20));
});

test('utf8Encode turns lone surrogates into U+FFFD, as TextEncoder does', () => {
  const enc = new TextEncoder();
  for (const s of ['\ud800', 'a\udc00b', '\ud83d', 'x\ud83d\ud83d\ude00', '\ude00\ud83d']) {
    assert.deepStrictEqual(Array.from(I.utf8Encode(s)), Array.from(enc.encode(s)), JSON.stringify(s));
  }
});

test('Utf8Decoder decodes every split of multi-byte text like TextDecoder', () => {
  const text = 'aé€𝄞z grüße 日本';
  const bytes = Buffer.from(text);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const d = new I.Utf8Decoder();
    const got = d.decode(bytes.subarray(0, cut), true) + d.decode(bytes.subarray(cut), true) + d.decode(new Uint8Array(0), false);
    assert.strictEqual(got, text, `cut at ${cut}`);
  }
  // Byte by byte.
  const d = new I.Utf8Decoder();
  let s = '';
  for (const b of bytes) s += d.decode(Uint8Array.of(b), true);
  assert.strictEqual(s, text);
});

test('Utf8Decoder replaces bad sequences as TextDecoder does', () => {
  const bad = [[0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
    [0xe2, 0x82], [0x61, 0xe2, 0x82, 0x61], [0xf0, 0x9f, 0x98], [0x80, 0x80], [0xc3]];
  for (const seq of bad) {
    const want = new TextDecoder().decode(Uint8Array.from(seq));
    assert.strictEqual(new I.Utf8Decoder().decode(Uint8Array.from(seq), false), want, JSON.stringify(seq));
  }
});

test('makeDecoder streams with TextDecoder when there is one', () => {
  const d = I.makeDecoder({TextDecoder});
  const bytes = Buffer.from('€');
  assert.strictEqual(d.decode(bytes.subarray(0, 1), true), '');
  assert.strictEqual(d.decode(bytes.subarray(1), true), '€');
});

test('base64 round-trips every length and matches Buffer', () => {
  for (let n = 0; n < 70; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37 + n) & 255);
    const enc = I.base64Encode(bytes);
    assert.strictEqual(enc, Buffer.from(bytes).toString('base64'), `n=${n}`);
    assert.deepStrictEqual(I.base64Decode(enc), bytes);
  }
  const big = new Uint8Array(300000).map((_, i) => (i * 7) & 255);
  assert.deepStrictEqual(I.base64Decode(Buffer.from(big).toString('base64')), big);
});

test('base64Decode refuses what is not RFC 4648 with padding', () => {
  for (const s of ['abc', 'ab=c', '====', 'a===', 'ab!d', 'YQ==YQ==', 'é===', 'YW Fi']) {
    assert.throws(() => I.base64Decode(s), /base64/, s);
  }
});

test('parseFrameLine reads each frame of PROTOCOL.md section 3', () => {
  assert.deepStrictEqual(I.parseFrameLine('OK 3q2-7VbW0wKcL1yPp8kJ4a9Z'), {type: 'OK', key: '3q2-7VbW0wKcL1yPp8kJ4a9Z'});
  const d = I.parseFrameLine('D 81 ' + Buffer.from('hi\r\n').toString('base64'));
  assert.strictEqual(d.type, 'D');
  assert.strictEqual(d.offset, 81);
  assert.strictEqual(Buffer.from(d.data).toString(), 'hi\r\n');
  assert.strictEqual(I.parseFrameLine('D 0 ').data.length, 0);
  assert.deepStrictEqual(I.parseFrameLine('H'), {type: 'H'});
  assert.deepStrictEqual(I.parseFrameLine('R'), {type: 'R'});
  assert.deepStrictEqual(I.parseFrameLine('P     '), {type: 'P'});
  assert.deepStrictEqual(I.parseFrameLine('C 1011 target refused the connection: 127.0.0.1:9'),
    {type: 'C', code: 1011, reason: 'target refused the connection: 127.0.0.1:9'});
  assert.deepStrictEqual(I.parseFrameLine('C 1000 '), {type: 'C', code: 1000, reason: ''});
  assert.deepStrictEqual(I.parseFrameLine('C 4001'), {type: 'C', code: 4001, reason: ''});
  assert.strictEqual(I.parseFrameLine('D 12 %%%%').type, 'bad');
  assert.strictEqual(I.parseFrameLine('D x YQ==').type, 'bad');
  assert.strictEqual(I.parseFrameLine('D -1 YQ==').type, 'bad');
  assert.strictEqual(I.parseFrameLine('Z').type, 'bad');
  assert.strictEqual(I.parseFrameLine('OK bad key!').type, 'bad');
  assert.strictEqual(I.parseFrameLine('H\r').type, 'H');
});

// A body as a server sends it, for the reader tests.
function body() {
  const payload = Buffer.alloc(5000).map((_, i) => (i * 13) & 255);
  return 'P ' + ' '.repeat(40) + '\nOK abcdefghijklmnopqrstuvwx\nD 0 ' + payload.toString('base64') + '\nH\nD 5000 ' +
    Buffer.from('tail').toString('base64') + '\nC 1000 target closed the connection\n';
}
function summary(frames) {
  return frames.map((f) => f.type === 'D' ? `D${f.offset}:${Buffer.from(f.data).toString('hex').length}` :
    f.type === 'C' ? `C${f.code}:${f.reason}` : f.type === 'OK' ? 'OK:' + f.key : f.type);
}

test('FrameReader gives the same frames whatever the responseText growth', () => {
  const text = body();
  const want = summary(new I.FrameReader().read(text));
  assert.deepStrictEqual(want, ['P', 'OK:abcdefghijklmnopqrstuvwx', 'D0:10000', 'H', 'D5000:8', 'C1000:target closed the connection']);
  // Grown in two steps, split at every offset.
  for (let cut = 0; cut <= text.length; cut += (cut < 200 || cut > text.length - 200 ? 1 : 97)) {
    const r = new I.FrameReader();
    const got = r.read(text.slice(0, cut)).concat(r.read(text));
    assert.deepStrictEqual(summary(got), want, `cut at ${cut}`);
  }
  // Grown a few bytes at a time.
  const r = new I.FrameReader();
  let got = [];
  for (let n = 0; n <= text.length; n += 7) got = got.concat(r.read(text.slice(0, n)));
  got = got.concat(r.read(text));
  assert.deepStrictEqual(summary(got), want);
});

test('FrameReader keeps a partial line until its newline comes', () => {
  const r = new I.FrameReader();
  assert.deepStrictEqual(r.read('D 0 YWJj'), []);
  assert.ok(r.pending('D 0 YWJj'));
  const f = r.read('D 0 YWJj\n');
  assert.strictEqual(Buffer.from(f[0].data).toString(), 'abc');
  assert.ok(!r.pending('D 0 YWJj\n'));
});

test('8-byte big-endian offsets read back what was written', () => {
  for (const off of [0, 1, 255, 256, 65535, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5, 2 ** 40 + 123456, 2 ** 53 - 1]) {
    const b = new Uint8Array(8);
    I.writeOffset(b, off);
    assert.strictEqual(I.readOffset(b), off);
    assert.strictEqual(Buffer.from(b).readBigUInt64BE(0), BigInt(off));
  }
});

test('Down skips repeated bytes, keeps new ones, and reports gaps', () => {
  const d = new I.Down();
  const bytes = (s) => Buffer.from(s);
  assert.strictEqual(Buffer.from(d.accept(0, bytes('hello'))).toString(), 'hello');
  assert.strictEqual(d.offset, 5);
  assert.strictEqual(d.accept(0, bytes('hello')), null);           // all old
  assert.strictEqual(d.accept(2, bytes('llo')), null);
  assert.strictEqual(Buffer.from(d.accept(3, bytes('lo wo'))).toString(), ' wo');  // overlap
  assert.strictEqual(d.offset, 8);
  assert.strictEqual(d.accept(9, bytes('x')), false);              // gap
  assert.strictEqual(d.offset, 8);
  assert.strictEqual(d.unacked(), 8);
  d.sentAck(5);
  assert.strictEqual(d.unacked(), 3);
  d.sentAck(2);                                                     // never goes back
  assert.strictEqual(d.acked, 5);
});

test('Up keeps unacknowledged bytes and slices across chunks', () => {
  const u = new I.Up();
  const str = (b) => Buffer.from(b).toString();
  u.push(Buffer.from('abc'));
  u.push(Buffer.from(''));
  u.push(Buffer.from('defg'));
  u.push(Buffer.from('h'));
  assert.strictEqual(u.pending(), 8);
  assert.strictEqual(str(u.slice(0, 100)), 'abcdefgh');
  assert.strictEqual(str(u.slice(2, 3)), 'cde');
  assert.strictEqual(str(u.slice(3, 2)), 'de');
  assert.strictEqual(str(u.slice(8, 5)), '');
  assert.ok(u.ack(4));
  assert.strictEqual(u.base, 4);
  assert.strictEqual(str(u.slice(0, 100)), 'efgh');                // before base: from base
  assert.ok(u.ack(2));                                              // stale ack: fine
  assert.strictEqual(u.base, 4);
  assert.ok(!u.ack(9));                                             // past the end: refused
  assert.ok(u.ack(7));
  assert.strictEqual(str(u.slice(7, 10)), 'h');
  assert.ok(u.ack(8));
  assert.strictEqual(u.pending(), 0);
  assert.strictEqual(u.chunks.length, 0);
  u.push(Buffer.from('ij'));
  assert.strictEqual(str(u.slice(8, 10)), 'ij');
  assert.strictEqual(u.end, 10);
});

test('toBytes copies strings, buffers and views', () => {
  const ab = new Uint8Array([1, 2, 3, 4]).buffer;
  const got = I.toBytes(ab);
  new Uint8Array(ab)[0] = 9;
  assert.deepStrictEqual(Array.from(got), [1, 2, 3, 4]);
  assert.deepStrictEqual(Array.from(I.toBytes(new Uint16Array([0x0102]))), [2, 1]);
  assert.deepStrictEqual(Array.from(I.toBytes(new DataView(new Uint8Array([5, 6, 7]).buffer, 1, 2))), [6, 7]);
  assert.deepStrictEqual(Array.from(I.toBytes(new Uint8Array([1, 2, 3, 4]).subarray(1, 3))), [2, 3]);
  assert.strictEqual(Buffer.from(I.toBytes('ä')).toString(), 'ä');
  assert.strictEqual(Buffer.from(I.toBytes(42)).toString(), '42');
  assert.strictEqual(I.toBytes({size: 3, slice() {}, type: ''}, {}), null);  // a Blob: read later
});

test('resolveUrls maps the tunnel prefix to http and ws URLs', () => {
  const loc = {protocol: 'https:', host: 'example.com:8443', pathname: '/app/index.html'};
  assert.deepStrictEqual(I.resolveUrls('/netwine', loc), {http: 'https://example.com:8443/netwine', ws: 'wss://example.com:8443/netwine'});
  assert.deepStrictEqual(I.resolveUrls('/netwine/', loc).http, 'https://example.com:8443/netwine');
  assert.deepStrictEqual(I.resolveUrls('netwine', loc).http, 'https://example.com:8443/app/netwine');
  assert.deepStrictEqual(I.resolveUrls('//other:80/nw', loc).ws, 'wss://other:80/nw');
  assert.deepStrictEqual(I.resolveUrls('http://h:8080/netwine', null), {http: 'http://h:8080/netwine', ws: 'ws://h:8080/netwine'});
  assert.deepStrictEqual(I.resolveUrls('wss://h/netwine', null).http, 'https://h/netwine');
  assert.throws(() => I.resolveUrls('/netwine', null), SyntaxError);
  assert.throws(() => I.resolveUrls('ftp://h/x', null), SyntaxError);
  assert.throws(() => I.resolveUrls('', loc), SyntaxError);
});

test('transportOrder: default order, validation, and what the browser lacks', () => {
  assert.deepStrictEqual(I.transportOrder(undefined), ['websocket', 'stream', 'poll']);
  assert.deepStrictEqual(I.transportOrder('auto'), ['websocket', 'stream', 'poll']);
  assert.deepStrictEqual(I.transportOrder('poll'), ['poll']);
  assert.deepStrictEqual(I.transportOrder(['poll', 'websocket', 'poll']), ['poll', 'websocket']);
  assert.throws(() => I.transportOrder(['carrier-pigeon']), SyntaxError);
  assert.throws(() => I.transportOrder([]), SyntaxError);
  const noWs = {XMLHttpRequest: function () {}};
  assert.deepStrictEqual(I.transportOrder(undefined, noWs), ['stream', 'poll']);
  assert.deepStrictEqual(I.transportOrder(['websocket'], {WebSocket: function () {}}), ['websocket']);
  assert.strictEqual(I.nextTransport(['websocket', 'stream', 'poll'], 'websocket'), 'stream');
  assert.strictEqual(I.nextTransport(['websocket', 'stream', 'poll'], 'poll'), 'websocket');
});

test('HTTP errors map to the close codes a WebSocket would have seen', () => {
  const c = (status, error, message) => I.closeForError(status, {error, message});
  assert.deepStrictEqual(c(403, 'target_not_allowed', 'target 10.0.0.1:22 is not allowed'), {code: 1008, reason: 'target 10.0.0.1:22 is not allowed'});
  assert.strictEqual(c(502, 'target_refused', 'x').code, 1011);
  assert.strictEqual(c(504, 'connect_timeout', 'x').code, 1011);
  assert.strictEqual(c(404, 'unknown_session', 'x').code, 4001);
  assert.strictEqual(c(400, 'bad_target', 'x').code, 1008);
  assert.strictEqual(c(400, 'bad_offset', 'x').code, 1002);
  assert.strictEqual(c(503, 'shutting_down', 'x').code, 1001);
  assert.strictEqual(c(503, 'too_many_sessions', 'x').code, 1013);
  assert.strictEqual(c(429, 'too_many_sessions_for_client', 'x').code, 1013);
  assert.strictEqual(c(413, undefined, undefined).reason, 'HTTP 413');
  assert.strictEqual(I.parseError('<html>bad gateway</html>'), null);
  assert.strictEqual(I.parseError('{"error":"target_refused","message":"m"}').error, 'target_refused');
});

test('truncateReason keeps close reasons within 123 bytes of UTF-8', () => {
  assert.strictEqual(I.truncateReason('short'), 'short');
  const r = I.truncateReason('é'.repeat(100));
  assert.ok(Buffer.byteLength(r) <= 123);
  assert.strictEqual(r.length, 61);
});
