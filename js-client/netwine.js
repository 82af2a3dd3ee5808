/*!
 * netwine.js 0.1.0 - a WebSocket-like byte stream to a TCP service, through netwine,
 * over a WebSocket, an HTTP stream or long polls, resumed without loss after a drop.
 * ES5 and XMLHttpRequest; no dependencies, no build step. MIT licence.
 * The wire protocol is docs/PROTOCOL.md (version 1) of the netwine repository.
 *
 *   var s = new Netwine.Socket('/netwine', {target: 'demo'});
 *   s.onmessage = function (e) { ... e.data is an ArrayBuffer ... };
 *   s.send('hello\r\n');
 *
 * Layout: pure protocol pieces first (UTF-8, base64, frame reader, offset
 * bookkeeping, error mapping: all reachable as Netwine._internal for the tests),
 * then the three transports, then Socket, which owns the session and moves it
 * between transports.
 */
(function (root, factory) {
  var Netwine = factory(root);
  if (typeof module === 'object' && module && typeof module.exports === 'object') {
    module.exports = Netwine;
  } else if (root) {
    root.Netwine = Netwine;
  }
}(typeof globalThis !== 'undefined' ? globalThis :
  typeof self !== 'undefined' ? self :
  typeof window !== 'undefined' ? window : this, function (global) {
  'use strict';

  var VERSION = '0.1.0';
  var CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
  var TRANSPORTS = ['websocket', 'stream', 'poll'];
  var KIB = 1024;
  var TWO_32 = 4294967296;

  // Every knob of a Socket; each may be given as an option of the same name.
  var DEFAULTS = {
    transports: TRANSPORTS,
    binaryType: 'arraybuffer',
    // Deliver strings (the byte stream decoded as UTF-8) instead of bytes.
    text: false,
    // Acknowledge downstream bytes at least this often. PROTOCOL.md section 1: at
    // least every quarter of the server's --session-buffer (1 MiB by default), or
    // the server stops sending; half that quarter leaves room for a smaller buffer.
    ackEvery: 128 * KIB,
    // ...and acknowledge the rest of a burst once the data has been quiet this long (ms).
    ackDelay: 250,
    // Bytes per HTTP send: 768 KiB is 1 MiB as base64, the server's default
    // --max-body-size. A 413 halves it.
    maxSend: 768 * KIB,
    // Bytes per netwine.v1 upstream message.
    wsChunk: 256 * KIB,
    // Upstream bytes on a WebSocket that the server has not acknowledged yet ("A n"
    // comes as the target takes them): at most this many. Keep it under half of the
    // server's --session-buffer (1 MiB by default): acknowledgements travel behind
    // data, so with more in flight and a target that echoes, both directions could
    // wait on each other (PROTOCOL.md section 4).
    wsWindow: 256 * KIB,
    // Stop handing messages to a WebSocket whose browser-side buffer holds this much.
    wsHighWater: 4096 * KIB,
    // Give up re-attaching a session after this long without a working transport
    // (ms). Under the server's --session-idle-timeout (60 s), after which it is gone.
    resumeTimeout: 45000,
    // A WebSocket that has not opened within this long counts as blocked (ms).
    wsOpenTimeout: 6000,
    // An open (or a WebSocket's "OK") that has not come within this long fails (ms).
    // The server itself answers 504 after --connect-timeout (10 s).
    openTimeout: 20000,
    // A stream that carried no byte for this long is dead (ms); the server sends a
    // heartbeat every --heartbeat-interval (15 s).
    streamTimeout: 40000,
    // A poll or a send unanswered for this long is dead (ms); the server answers
    // within --poll-wait (25 s).
    pollTimeout: 40000,
    // close() first delivers what was sent; if nothing more reaches the server for
    // this long (ms), it gives up: close 1006, naming what it was waiting for.
    closeTimeout: 10000,
    // Move a session from HTTP onto a WebSocket when 'websocket' is listed.
    upgrade: true,
    // After a WebSocket failed, wait this long before trying one again (ms), doubling;
    // stop after upgradeAttempts failures.
    upgradeDelay: 30000,
    upgradeAttempts: 4,
    // Send base64 bodies (enc=base64) instead of raw bytes; null: only when the
    // browser cannot send binary XHR bodies.
    base64Send: null,
    // Log transport decisions to the console.
    debug: false,
    // Constructors to use instead of the global ones (Node: the ws package).
    WebSocket: null,
    XMLHttpRequest: null
  };

  // ------------------------------------------------------------------ UTF-8

  // Encodes a string as UTF-8 bytes; a lone surrogate becomes U+FFFD, as TextEncoder does.
  function utf8Encode(str) {
    var out = new Uint8Array(str.length * 3), n = 0, i, c, d;
    for (i = 0; i < str.length; i++) {
      c = str.charCodeAt(i);
      if (c < 0x80) {
        out[n++] = c;
      } else if (c < 0x800) {
        out[n++] = 0xc0 | (c >> 6);
        out[n++] = 0x80 | (c & 0x3f);
      } else if (c >= 0xd800 && c < 0xe000) {
        d = i + 1 < str.length ? str.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          out[n++] = 0xf0 | (c >> 18);
          out[n++] = 0x80 | ((c >> 12) & 0x3f);
          out[n++] = 0x80 | ((c >> 6) & 0x3f);
          out[n++] = 0x80 | (c & 0x3f);
        } else {
          out[n++] = 0xef;
          out[n++] = 0xbf;
          out[n++] = 0xbd;
        }
      } else {
        out[n++] = 0xe0 | (c >> 12);
        out[n++] = 0x80 | ((c >> 6) & 0x3f);
        out[n++] = 0x80 | (c & 0x3f);
      }
    }
    return copyBytes(out, 0, n);
  }

  // A streaming UTF-8 decoder (the WHATWG algorithm): a character split across two
  // chunks is held until its last byte comes; bad sequences become U+FFFD.
  function Utf8Decoder() {
    this._reset();
  }
  Utf8Decoder.prototype._reset = function () {
    this.cp = 0;
    this.need = 0;
    this.seen = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
  };
  Utf8Decoder.prototype.decode = function (bytes, stream) {
    var units = [], parts = [], i = 0, b;
    var cp = this.cp, need = this.need, seen = this.seen, lower = this.lower, upper = this.upper;
    function emit(c) {
      if (c > 0xffff) {
        c -= 0x10000;
        units.push(0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
      } else {
        units.push(c);
      }
      if (units.length >= 8192) {
        parts.push(String.fromCharCode.apply(null, units));
        units = [];
      }
    }
    bytes = bytes || new Uint8Array(0);
    while (i < bytes.length) {
      b = bytes[i];
      if (need === 0) {
        i++;
        if (b < 0x80) {
          emit(b);
        } else if (b >= 0xc2 && b <= 0xdf) {
          need = 1;
          cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) lower = 0xa0;
          if (b === 0xed) upper = 0x9f;
          need = 2;
          cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) lower = 0x90;
          if (b === 0xf4) upper = 0x8f;
          need = 3;
          cp = b & 0x07;
        } else {
          emit(0xfffd);
        }
        continue;
      }
      if (b < lower || b > upper) {
        // Not a continuation byte: what came before is one U+FFFD, and this byte
        // is looked at again as the start of something new.
        cp = need = seen = 0;
        lower = 0x80;
        upper = 0xbf;
        emit(0xfffd);
        continue;
      }
      i++;
      lower = 0x80;
      upper = 0xbf;
      cp = (cp << 6) | (b & 0x3f);
      if (++seen === need) {
        emit(cp);
        cp = need = seen = 0;
      }
    }
    this.cp = cp;
    this.need = need;
    this.seen = seen;
    this.lower = lower;
    this.upper = upper;
    if (need && !stream) {
      this._reset();
      emit(0xfffd);
    }
    parts.push(String.fromCharCode.apply(null, units));
    return parts.join('');
  };

  // The browser's TextDecoder when there is one (faster), else ours.
  function makeDecoder(env) {
    if (env && typeof env.TextDecoder === 'function') {
      var td = new env.TextDecoder('utf-8');
      return {decode: function (bytes, stream) { return td.decode(bytes, {stream: !!stream}); }};
    }
    return new Utf8Decoder();
  }

  function utf8Length(str) {
    return utf8Encode(str).length;
  }

  // ----------------------------------------------------------------- base64

  var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  var B64_INDEX = (function () {
    var t = new Uint8Array(128), i;
    for (i = 0; i < 128; i++) t[i] = 255;
    for (i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
    return t;
  }());

  // RFC 4648 base64 with padding.
  function base64Encode(bytes) {
    var parts = [], line = [], i, n = bytes.length, v;
    for (i = 0; i + 2 < n; i += 3) {
      v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
      line.push(B64.charAt(v >> 18) + B64.charAt((v >> 12) & 63) + B64.charAt((v >> 6) & 63) + B64.charAt(v & 63));
      if (line.length >= 4096) {
        parts.push(line.join(''));
        line = [];
      }
    }
    if (n - i === 1) {
      v = bytes[i] << 16;
      line.push(B64.charAt(v >> 18) + B64.charAt((v >> 12) & 63) + '==');
    } else if (n - i === 2) {
      v = (bytes[i] << 16) | (bytes[i + 1] << 8);
      line.push(B64.charAt(v >> 18) + B64.charAt((v >> 12) & 63) + B64.charAt((v >> 6) & 63) + '=');
    }
    parts.push(line.join(''));
    return parts.join('');
  }

  // Decodes RFC 4648 base64 with padding; throws on anything else.
  function base64Decode(s) {
    var len = s.length, pad = 0, i, j = 0, a, b, c, d, v, olen, out, last;
    if (len % 4 !== 0) throw new Error('base64: length ' + len + ' is not a multiple of 4');
    if (len && s.charCodeAt(len - 1) === 61) pad = s.charCodeAt(len - 2) === 61 ? 2 : 1;
    olen = len / 4 * 3 - pad;
    out = new Uint8Array(olen);
    for (i = 0; i < len; i += 4) {
      last = i + 4 === len;
      a = s.charCodeAt(i);
      b = s.charCodeAt(i + 1);
      c = s.charCodeAt(i + 2);
      d = s.charCodeAt(i + 3);
      a = a < 128 ? B64_INDEX[a] : 255;
      b = b < 128 ? B64_INDEX[b] : 255;
      c = last && pad === 2 ? 0 : (c < 128 ? B64_INDEX[c] : 255);
      d = last && pad ? 0 : (d < 128 ? B64_INDEX[d] : 255);
      if ((a | b | c | d) > 63) throw new Error('base64: bad character near offset ' + i);
      v = (a << 18) | (b << 12) | (c << 6) | d;
      out[j++] = v >> 16;
      if (j < olen) out[j++] = (v >> 8) & 255;
      if (j < olen) out[j++] = v & 255;
    }
    return out;
  }

  // ----------------------------------------------------------------- frames

  // A decimal offset or code of at most 16 digits (below 2^53), or -1.
  function parseNumber(s) {
    if (!/^[0-9]{1,16}$/.test(s)) return -1;
    return parseInt(s, 10);
  }

  // One line of a text-framed body (PROTOCOL.md section 3, without its '\n'):
  // {type: 'OK', key} | {type: 'D', offset, data} | {type: 'H'} | {type: 'R'} |
  // {type: 'C', code, reason} | {type: 'P'} | {type: 'bad', line, why}.
  function parseFrameLine(line) {
    var kind = line.charAt(0), sp, off;
    if (line.length && line.charCodeAt(line.length - 1) === 13) line = line.substring(0, line.length - 1);
    if (kind === 'D' && line.charAt(1) === ' ') {
      sp = line.indexOf(' ', 2);
      off = sp > 2 ? parseNumber(line.substring(2, sp)) : -1;
      if (off < 0) return {type: 'bad', line: line.substring(0, 60), why: 'bad data offset'};
      try {
        return {type: 'D', offset: off, data: base64Decode(line.substring(sp + 1))};
      } catch (e) {
        return {type: 'bad', line: line.substring(0, 60), why: e.message};
      }
    }
    if (line === 'H') return {type: 'H'};
    if (line === 'R') return {type: 'R'};
    if (kind === 'P' && (line.length === 1 || line.charAt(1) === ' ')) return {type: 'P'};
    if (line.substring(0, 3) === 'OK ' && /^[A-Za-z0-9_-]+$/.test(line.substring(3))) {
      return {type: 'OK', key: line.substring(3)};
    }
    if (kind === 'C' && line.charAt(1) === ' ') {
      sp = line.indexOf(' ', 2);
      if (sp < 0) sp = line.length;
      off = parseNumber(line.substring(2, sp));
      if (off >= 0) return {type: 'C', code: off, reason: line.substring(sp + 1)};
    }
    return {type: 'bad', line: line.substring(0, 60), why: 'unknown frame'};
  }

  // Reads the frames of a text-framed response as it grows. XMLHttpRequest gives
  // the whole body so far (responseText); read() takes it each time and returns
  // the complete lines added since the last call, keeping the partial last line
  // for later without copying it.
  function FrameReader() {
    this.pos = 0;
  }
  FrameReader.prototype.read = function (text) {
    var frames = [], nl;
    while ((nl = text.indexOf('\n', this.pos)) >= 0) {
      frames.push(parseFrameLine(text.substring(this.pos, nl)));
      this.pos = nl + 1;
    }
    return frames;
  };
  // Whether a partial line is waiting for its end.
  FrameReader.prototype.pending = function (text) {
    return this.pos < text.length;
  };

  // The 8-byte big-endian offset heading a netwine.v1 binary message.
  function writeOffset(bytes, off) {
    var hi = Math.floor(off / TWO_32), lo = off - hi * TWO_32;
    bytes[0] = hi >>> 24;
    bytes[1] = (hi >>> 16) & 255;
    bytes[2] = (hi >>> 8) & 255;
    bytes[3] = hi & 255;
    bytes[4] = lo >>> 24;
    bytes[5] = (lo >>> 16) & 255;
    bytes[6] = (lo >>> 8) & 255;
    bytes[7] = lo & 255;
  }
  function readOffset(bytes) {
    var hi = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
    var lo = ((bytes[4] << 24) | (bytes[5] << 16) | (bytes[6] << 8) | bytes[7]) >>> 0;
    return hi * TWO_32 + lo;
  }

  // ---------------------------------------------------------------- offsets

  // Downstream (target -> us): `offset` is the next byte we expect, `acked` the
  // last acknowledgement we sent. Frames may repeat bytes after a re-attach.
  function Down() {
    this.offset = 0;
    this.acked = 0;
  }
  // Returns the new part of a frame (Uint8Array), null when it is all old, or
  // false when it starts past what we hold (a gap: the caller re-attaches).
  Down.prototype.accept = function (off, data) {
    var end = off + data.length;
    if (off > this.offset) return false;
    if (end <= this.offset) return null;
    if (off < this.offset) data = data.subarray(this.offset - off);
    this.offset = end;
    return data;
  };
  Down.prototype.unacked = function () {
    return this.offset - this.acked;
  };
  Down.prototype.sentAck = function (n) {
    if (n > this.acked) this.acked = n;
  };

  // Upstream (us -> target): bytes [base, end) are kept until the server says it
  // has applied them, so they can be sent again after a drop.
  function Up() {
    this.base = 0;
    this.end = 0;
    this.head = 0;  // offset of chunks[0][0]
    this.chunks = [];
  }
  Up.prototype.push = function (bytes) {
    if (!bytes.length) return;
    this.chunks.push(bytes);
    this.end += bytes.length;
  };
  // The server holds every byte before n: forget them. False when n is past
  // what was ever given (a server that claims more than it got).
  Up.prototype.ack = function (n) {
    var first;
    if (n > this.end) return false;
    if (n <= this.base) return true;
    this.base = n;
    while (this.chunks.length && this.head + this.chunks[0].length <= n) {
      this.head += this.chunks[0].length;
      this.chunks.shift();
    }
    if (this.chunks.length && this.head < n) {
      first = this.chunks[0];
      this.chunks[0] = first.subarray(n - this.head);
      this.head = n;
    }
    return true;
  };
  // At most `max` bytes starting at offset `from` (>= base).
  Up.prototype.slice = function (from, max) {
    var end, out = null, pos = this.head, n = 0, i, c, s, e;
    if (from < this.base) from = this.base;
    end = Math.min(this.end, from + max);
    if (end <= from) return new Uint8Array(0);
    for (i = 0; i < this.chunks.length && pos < end; i++) {
      c = this.chunks[i];
      if (pos + c.length > from) {
        s = Math.max(from - pos, 0);
        e = Math.min(end - pos, c.length);
        if (!out) {
          if (e - s === end - from) return c.subarray(s, e);
          out = new Uint8Array(end - from);
        }
        out.set(c.subarray(s, e), n);
        n += e - s;
      }
      pos += c.length;
    }
    return out;
  };
  Up.prototype.pending = function () {
    return this.end - this.base;
  };

  // ---------------------------------------------------------------- helpers

  function copyBytes(src, start, end) {
    var r = new Uint8Array(end - start);
    r.set(src.subarray(start, end));
    return r;
  }

  // An ArrayBuffer holding exactly these bytes (a copy unless the view is whole).
  function toArrayBuffer(bytes) {
    if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes.buffer;
    return copyBytes(bytes, 0, bytes.length).buffer;
  }

  function isArrayBuffer(x) {
    return typeof ArrayBuffer !== 'undefined' && (x instanceof ArrayBuffer ||
      Object.prototype.toString.call(x) === '[object ArrayBuffer]');
  }
  function isView(x) {
    if (typeof ArrayBuffer !== 'undefined' && typeof ArrayBuffer.isView === 'function') return ArrayBuffer.isView(x);
    return !!(x && x.buffer && isArrayBuffer(x.buffer) && typeof x.byteLength === 'number');
  }
  function isBlob(x, env) {
    return !!(x && ((env.Blob && x instanceof env.Blob) ||
      (typeof x.size === 'number' && typeof x.slice === 'function' && typeof x.type === 'string')));
  }

  // The bytes of what send() was given, copied (the caller may reuse its buffer),
  // or null for a Blob, which is read later.
  function toBytes(data, env) {
    env = env || {};
    if (typeof data === 'string') {
      if (typeof env.TextEncoder === 'function') return new env.TextEncoder().encode(data);
      return utf8Encode(data);
    }
    if (isArrayBuffer(data)) return copyBytes(new Uint8Array(data), 0, data.byteLength);
    if (isView(data)) return copyBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 0, data.byteLength);
    if (isBlob(data, env)) return null;
    return utf8Encode(String(data));  // as WebSocket.send does with other values
  }

  // The tunnel prefix as absolute http(s) and ws(s) URLs without a trailing slash.
  function resolveUrls(url, location) {
    var m, scheme, host, path, secure;
    if (typeof url !== 'string' || !url) {
      throw new SyntaxError('netwine: the URL must be the tunnel prefix, e.g. "/netwine"');
    }
    m = /^(https?|wss?):\/\/([^\/?#]+)([^?#]*)/i.exec(url);
    if (m) {
      scheme = m[1].toLowerCase();
      host = m[2];
      path = m[3];
    } else if (/^[a-z][a-z0-9+.-]*:/i.test(url)) {
      throw new SyntaxError('netwine: unsupported URL scheme in "' + url + '" (http, https, ws or wss)');
    } else {
      if (!location || !location.host) {
        throw new SyntaxError('netwine: the relative URL "' + url + '" needs a page; give an absolute http(s) URL');
      }
      scheme = String(location.protocol).replace(':', '');
      if (url.substring(0, 2) === '//') {
        m = /^\/\/([^\/?#]+)([^?#]*)/.exec(url);
        if (!m) throw new SyntaxError('netwine: bad URL "' + url + '"');
        host = m[1];
        path = m[2];
      } else {
        host = location.host;
        path = url.split(/[?#]/)[0];
        if (path.charAt(0) !== '/') path = String(location.pathname || '/').replace(/[^\/]*$/, '') + path;
      }
    }
    secure = scheme === 'https' || scheme === 'wss';
    path = path.replace(/\/+$/, '');
    return {http: (secure ? 'https://' : 'http://') + host + path, ws: (secure ? 'wss://' : 'ws://') + host + path};
  }

  // The transports to try, in order, from the `transports` option.
  function transportOrder(list, env) {
    var out = [], i, name;
    if (list === undefined || list === null || list === 'auto') list = TRANSPORTS;
    if (typeof list === 'string') list = [list];
    if (!list || !list.length) {
      throw new SyntaxError('netwine: transports must name at least one of websocket, stream, poll');
    }
    for (i = 0; i < list.length; i++) {
      name = list[i];
      if (name === 'auto') continue;
      if (TRANSPORTS.indexOf(name) < 0) {
        throw new SyntaxError('netwine: unknown transport "' + name + '" (websocket, stream or poll)');
      }
      if (out.indexOf(name) < 0) out.push(name);
    }
    if (!out.length) out = TRANSPORTS.slice();
    if (env) {
      out = out.filter(function (t) {
        return t === 'websocket' ? typeof env.WebSocket === 'function' : typeof env.XMLHttpRequest === 'function';
      });
    }
    return out;
  }

  // The transport after `current` in `list`, wrapping around.
  function nextTransport(list, current) {
    var i = list.indexOf(current);
    return list[(i + 1) % list.length];
  }

  // netwine's JSON error body ({"error": ..., "message": ...}), or null when the
  // answer is not one (a proxy's page, say).
  function parseError(text) {
    var info = null;
    try {
      info = JSON.parse(text);
    } catch (e) {
      return null;
    }
    return info && typeof info === 'object' && typeof info.error === 'string' ? info : null;
  }

  // The close code and reason a netwine HTTP error ends a socket with (PROTOCOL.md
  // section 2 maps each status to the close code a WebSocket would have seen).
  function closeForError(status, info) {
    var e = info && info.error, code;
    if (status === 403) code = 1008;                                   // not allowed
    else if (status === 400) code = e === 'bad_target' ? 1008 : 1002;
    else if (status === 404) code = e === 'unknown_session' ? 4001 : 1002;  // the session is gone
    else if (status === 409) code = 1002;
    else if (status === 410) code = 1000;                              // it had ended already
    else if (status === 413) code = 1009;
    else if (status === 503 && e === 'shutting_down') code = 1001;
    else if (status === 429 || status === 503) code = 1013;            // try again later
    else code = 1011;                                                  // 502, 504: the target
    return {code: code, reason: (info && (info.message || info.error)) || ('HTTP ' + status)};
  }

  // A close reason as WebSocket.close() takes it: at most 123 bytes of UTF-8.
  function truncateReason(reason) {
    reason = String(reason || '');
    while (utf8Length(reason) > 123) reason = reason.substring(0, reason.length - 1);
    return reason;
  }

  function defaultEnv() {
    return {
      XMLHttpRequest: global.XMLHttpRequest,
      WebSocket: global.WebSocket,
      Blob: global.Blob,
      FileReader: global.FileReader,
      TextEncoder: global.TextEncoder,
      TextDecoder: global.TextDecoder,
      location: global.location,
      setTimeout: function (fn, ms) { return global.setTimeout(fn, ms); },
      clearTimeout: function (id) { global.clearTimeout(id); },
      now: function () { return new Date().getTime(); }
    };
  }


  // -------------------------------------------------------------- transports
  //
  // Each transport is one attempt to carry the session: start() it, stop() it
  // (quietly: no callback after), and it reports to its Socket:
  //   _tEstablished(t, key, upNext)  the session is on it (upNext: netwine.v1 only)
  //   _tData(t, offset, bytes)       downstream bytes
  //   _tClosed(t, code, reason)      the session ended (a C frame, a close frame)
  //   _tFailed(t, why, fatal)        it broke; fatal {code, reason} when netwine said no
  //   _tRecycle(t)                   a stream ended with R: attach a new one
  // Upstream over HTTP is the Socket's sender (one send at a time, whatever
  // carries downstream); a WebSocket carries both directions.

  function failHttp(t, status, text, what) {
    var info = status ? parseError(text) : null;
    if (info) {
      t.sock._tFailed(t, what + ': ' + status + ' ' + (info.message || info.error), closeForError(status, info));
    } else {
      t.sock._tFailed(t, what + ': ' + (status ? 'HTTP ' + status : 'network error'), null);
    }
  }

  // Hands the frames of a text-framed body to the socket; returns true when the
  // body ended the transport's work (C, R or garbage).
  function handleFrames(t, frames) {
    var sock = t.sock, i, f;
    for (i = 0; i < frames.length && !t.dead; i++) {
      f = frames[i];
      if (f.type === 'D') {
        sock._tData(t, f.offset, f.data);
      } else if (f.type === 'OK') {
        if (!t.established) {
          t.established = true;
          sock._tEstablished(t, f.key);
        }
      } else if (f.type === 'C') {
        t.ended = true;
        sock._tClosed(t, f.code, f.reason);
        return true;
      } else if (f.type === 'R') {
        t.ended = true;
        sock._tRecycle(t);
        return true;
      } else if (f.type === 'bad') {
        t.ended = true;
        sock._tFailed(t, 'bad frame: ' + f.why, {code: 1002, reason: 'protocol error: ' + f.why + ' in "' + f.line + '"'});
        return true;
      }
    }
    return false;
  }

  // HTTP streaming: one response that stays open, read through responseText.
  function StreamTransport(sock, isNew) {
    this.sock = sock;
    this.name = 'stream';
    this.isNew = isNew;
    this.established = false;
    this.dead = false;
    this.ended = false;
    this.parked = false;
    this.xhr = null;
    this.timer = null;
    this.reader = new FrameReader();
    this.ackAt = 0;
  }
  StreamTransport.prototype.start = function () {
    var self = this, sock = this.sock, url, xhr;
    if (this.isNew) {
      url = sock._http + '/open?target=' + encodeURIComponent(sock.target) + '&mode=stream';
    } else {
      this.ackAt = sock._ackLimit();
      sock._down.sentAck(this.ackAt);
      url = sock._http + '/' + sock._key + '/stream?ack=' + this.ackAt;
    }
    xhr = this.xhr = new sock._env.XMLHttpRequest();
    xhr.open('POST', url, true);
    xhr.onreadystatechange = function () {
      if (self.dead) return;
      if (xhr.readyState >= 2) self.progress();
      if (xhr.readyState === 4 && !self.dead) self.done();
    };
    xhr.onprogress = function () {
      if (!self.dead) self.progress();
    };
    this.watch(this.isNew ? sock._opt.openTimeout : sock._opt.streamTimeout);
    try {
      xhr.send(null);
    } catch (e) {
      sock._later(function () {
        if (!self.dead) sock._tFailed(self, 'stream: ' + e.message, null);
      });
    }
  };
  // Restarts the watchdog: a stream silent this long is dead.
  StreamTransport.prototype.watch = function (ms) {
    var self = this, sock = this.sock;
    if (this.timer) sock._clearTimeout(this.timer);
    this.timer = sock._setTimeout(function () {
      self.timer = null;
      if (self.dead) return;
      self.stop();
      sock._tFailed(self, 'stream: nothing received for ' + Math.round(ms / 1000) + ' s', null);
    }, ms);
  };
  StreamTransport.prototype.progress = function () {
    var xhr = this.xhr, status = 0, text;
    try {
      status = xhr.status;
    } catch (e) {
      return;
    }
    if (status !== 200 || this.ended) return;  // an error answer is read when complete
    try {
      text = xhr.responseText;  // old browsers throw before readyState 4
    } catch (e2) {
      return;
    }
    if (!this.isNew && !this.established) {
      this.established = true;
      this.sock._tEstablished(this, this.sock._key);
      if (this.dead) return;
    }
    if (typeof text !== 'string' || text.length <= this.reader.pos) return;
    this.watch(this.sock._opt.streamTimeout);
    handleFrames(this, this.reader.read(text));
  };
  StreamTransport.prototype.done = function () {
    var status = 0, text = '';
    this.sock._clearTimeout(this.timer);
    this.timer = null;
    try {
      status = this.xhr.status;
      text = this.xhr.responseText;
    } catch (e) { /* a network error */ }
    if (this.ended) return;
    this.dead = true;
    if (status === 200) {
      // Ended without C or R: another transport took the session (PROTOCOL.md
      // section 3), or the connection was cut.
      this.sock._tEnded(this);
    } else {
      failHttp(this, status, text, this.isNew ? 'open' : 'stream');
    }
  };
  // Called when the upgrade this stream was parked for failed.
  StreamTransport.prototype.unpark = function () {
    if (!this.parked) return;
    this.parked = false;
    this.sock._tFailed(this, 'stream ended', null);
  };
  StreamTransport.prototype.stop = function () {
    this.dead = true;
    if (this.timer) this.sock._clearTimeout(this.timer);
    this.timer = null;
    if (this.xhr) {
      this.xhr.onreadystatechange = null;
      this.xhr.onprogress = null;
      try {
        this.xhr.abort();
      } catch (e) { /* nothing to abort */ }
    }
  };

  // Long polling: one request at a time, each answered with what came since the last.
  function PollTransport(sock, isNew) {
    this.sock = sock;
    this.name = 'poll';
    this.isNew = isNew;
    this.established = false;
    this.dead = false;
    this.ended = false;
    this.parked = false;
    this.req = null;
    this.estTimer = null;
    this.ackAt = 0;
  }
  PollTransport.prototype.start = function () {
    var self = this, sock = this.sock;
    if (!this.isNew) {
      this.poll();
      return;
    }
    this.req = sock._xhr('POST', sock._http + '/open?target=' + encodeURIComponent(sock.target) + '&mode=poll',
      null, sock._opt.openTimeout, function (status, text) {
        var m;
        self.req = null;
        if (self.dead) return;
        m = status === 200 && /^OK ([A-Za-z0-9_-]+)\n/.exec(text);
        if (!m) {
          self.dead = true;
          failHttp(self, status, text, 'open');
          return;
        }
        self.established = true;
        sock._tEstablished(self, m[1]);
        if (!self.dead) self.poll();
      });
  };
  PollTransport.prototype.poll = function () {
    var self = this, sock = this.sock, ack = sock._ackLimit();
    this.ackAt = ack;
    sock._down.sentAck(ack);
    if (!this.established && !this.estTimer) {
      // An attach: a poll the server holds (it answers at once only with data)
      // shows the way works; so does any answer.
      this.estTimer = sock._setTimeout(function () {
        self.estTimer = null;
        self.establish();
      }, 1000);
    }
    this.req = sock._xhr('GET', sock._http + '/' + sock._key + '/poll?ack=' + ack, null, sock._opt.pollTimeout,
      function (status, text) {
        self.req = null;
        if (self.dead) return;
        if (status !== 200) {
          self.stop();
          failHttp(self, status, text, 'poll');
          return;
        }
        self.establish();
        if (self.dead) return;
        if (handleFrames(self, new FrameReader().read(text))) {
          self.dead = true;
          return;
        }
        if (self.dead) return;
        // While a WebSocket is taking the session over, a new poll would take it
        // back (the newest attach wins): wait for the upgrade to succeed or fail.
        if (sock._probe) {
          self.parked = true;
          return;
        }
        self.poll();
      });
  };
  PollTransport.prototype.establish = function () {
    if (this.estTimer) this.sock._clearTimeout(this.estTimer);
    this.estTimer = null;
    if (this.established || this.dead) return;
    this.established = true;
    this.sock._tEstablished(this, this.sock._key);
  };
  PollTransport.prototype.unpark = function () {
    if (!this.parked || this.dead) return;
    this.parked = false;
    this.poll();
  };
  PollTransport.prototype.stop = function () {
    this.dead = true;
    if (this.estTimer) this.sock._clearTimeout(this.estTimer);
    this.estTimer = null;
    if (this.req) this.req.abort();
    this.req = null;
  };

  // A netwine.v1 WebSocket (PROTOCOL.md section 4): carries both directions.
  function WsTransport(sock, isNew) {
    this.sock = sock;
    this.name = 'websocket';
    this.isNew = isNew;
    this.established = false;
    this.opened = false;
    this.dead = false;
    this.ws = null;
    this.timer = null;
    this.retry = null;
    this.sent = 0;     // next upstream offset to hand to this WebSocket
    this.ackAt = -1;   // the ack its attach carried (-1 until it starts)
    this.closing = false;
  }
  WsTransport.prototype.start = function () {
    var self = this, sock = this.sock, url, ws;
    if (this.isNew) {
      url = sock._wsUrl + '/ws?target=' + encodeURIComponent(sock.target);
    } else {
      this.ackAt = sock._ackLimit();
      sock._down.sentAck(this.ackAt);
      url = sock._wsUrl + '/' + sock._key + '/ws?ack=' + this.ackAt;
    }
    try {
      ws = this.ws = new sock._env.WebSocket(url, 'netwine.v1');
    } catch (e) {
      sock._later(function () {
        if (!self.dead) {
          self.dead = true;
          sock._tFailed(self, 'websocket: ' + e.message, null);
        }
      });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.timer = sock._setTimeout(function () {
      self.timer = null;
      self.fail('websocket: no answer within ' + sock._opt.wsOpenTimeout + ' ms', null);
    }, sock._opt.wsOpenTimeout);
    ws.onopen = function () {
      if (self.dead) return;
      self.opened = true;
      sock._clearTimeout(self.timer);
      // netwine connects to the target after the upgrade, then says OK.
      self.timer = sock._setTimeout(function () {
        self.timer = null;
        self.fail('websocket: no OK within ' + sock._opt.openTimeout + ' ms', null);
      }, sock._opt.openTimeout);
    };
    ws.onmessage = function (e) {
      if (!self.dead) self.onMessage(e.data);
    };
    ws.onclose = function (e) {
      if (!self.dead) self.onClose(e.code, e.reason);
    };
    ws.onerror = function () { /* a close event follows */ };
  };
  WsTransport.prototype.onMessage = function (data) {
    var sock = this.sock, parts, upNext, n, bytes;
    if (typeof data === 'string') {
      if (!this.established && data.substring(0, 3) === 'OK ') {
        parts = data.split(' ');
        upNext = parts.length === 3 ? parseNumber(parts[2]) : -1;
        if (upNext < 0 || !/^[A-Za-z0-9_-]+$/.test(parts[1])) {
          this.fail('bad OK message', {code: 1002, reason: 'protocol error: bad OK message "' + data.substring(0, 60) + '"'});
          return;
        }
        sock._clearTimeout(this.timer);
        this.timer = null;
        this.established = true;
        this.sent = upNext;  // resend from what the server expects
        sock._tEstablished(this, parts[1], upNext);
        return;
      }
      if (this.established && data.substring(0, 2) === 'A ') {
        n = parseNumber(data.substring(2));
        if (n >= 0) {
          sock._upAcked(this, n);
          return;
        }
      }
      this.fail('unexpected text message', {code: 1002, reason: 'protocol error: unexpected message "' + data.substring(0, 60) + '"'});
      return;
    }
    bytes = new Uint8Array(data);
    if (!this.established || bytes.length < 8) {
      this.fail('bad binary message', {code: 1002, reason: 'protocol error: binary message without its offset'});
      return;
    }
    sock._tData(this, readOffset(bytes), bytes.subarray(8));
  };
  WsTransport.prototype.onClose = function (code, reason) {
    var sock = this.sock;
    this.dead = true;
    sock._clearTimeout(this.timer);
    this.timer = null;
    if (!this.opened) {
      sock._tFailed(this, 'websocket upgrade failed', null);
    } else if (code === 1006 || code === 1005) {
      // Dropped without a close code: the session waits for us (PROTOCOL.md section 4).
      sock._tFailed(this, 'websocket dropped (' + code + ')', null);
    } else {
      sock._tClosed(this, code, reason || '');
    }
  };
  WsTransport.prototype.fail = function (why, fatal) {
    if (this.dead) return;
    this.stop(!!fatal);
    this.sock._tFailed(this, why, fatal);
  };
  // Hands every upstream byte not yet given to this WebSocket to it.
  WsTransport.prototype.sendData = function () {
    var self = this, sock = this.sock, up = sock._up, chunk, frame;
    if (!this.established || this.dead || this.closing) return;
    if (this.sent < up.base) this.sent = up.base;
    while (this.sent < up.end && this.sent - sock._upTaken < sock._opt.wsWindow) {
      if (this.ws.bufferedAmount > sock._opt.wsHighWater) {
        if (!this.retry) {
          this.retry = sock._setTimeout(function () {
            self.retry = null;
            self.sendData();
            sock._closeStep();
          }, 50);
        }
        return;
      }
      chunk = up.slice(this.sent, Math.min(sock._opt.wsChunk, sock._upTaken + sock._opt.wsWindow - this.sent));
      frame = new Uint8Array(8 + chunk.length);
      writeOffset(frame, this.sent);
      frame.set(chunk, 8);
      this.ws.send(frame.buffer);
      this.sent += chunk.length;
    }
  };
  WsTransport.prototype.allSent = function () {
    return this.sent >= this.sock._up.end;
  };
  WsTransport.prototype.ack = function () {
    var off = this.sock._down.offset;
    if (!this.established || this.dead) return;
    this.ws.send('A ' + off);
    this.sock._down.sentAck(off);
  };
  // Ends the session: a close with 1000 (PROTOCOL.md section 4); the server's
  // close frame comes back through onClose.
  WsTransport.prototype.closeSession = function (reason) {
    this.closing = true;
    try {
      this.ws.close(1000, truncateReason(reason));
    } catch (e) {
      this.ws.close(1000);
    }
  };
  // endSession: close an open WebSocket with 1000, ending the session. Otherwise
  // an open one is left to the server, which closes it (4002) when the next
  // transport attaches; closing it ourselves could only say "end the session".
  WsTransport.prototype.stop = function (endSession) {
    var ws = this.ws, sock = this.sock;
    this.dead = true;
    sock._clearTimeout(this.timer);
    sock._clearTimeout(this.retry);
    this.timer = this.retry = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      if (ws.readyState === 0) ws.close();
      else if (ws.readyState === 1 && (endSession || (this.isNew && !this.established))) ws.close(1000, 'client gave up');
    } catch (e) { /* already closing */ }
  };

  function makeTransport(sock, name, isNew) {
    if (name === 'websocket') return new WsTransport(sock, isNew);
    if (name === 'stream') return new StreamTransport(sock, isNew);
    return new PollTransport(sock, isNew);
  }

  // ------------------------------------------------------------------ Socket

  var liveSockets = [];

  /**
   * new Netwine.Socket(url, options): a WebSocket-like byte stream to
   * options.target through the netwine at `url` (its tunnel prefix).
   */
  function Socket(url, options) {
    var self = this, o = {}, k, env, userEnv;
    if (!(this instanceof Socket)) throw new TypeError("Netwine.Socket must be called with 'new'");
    if (typeof options === 'string') options = {target: options};
    options = options || {};
    for (k in DEFAULTS) if (Object.prototype.hasOwnProperty.call(DEFAULTS, k)) o[k] = DEFAULTS[k];
    for (k in options) if (Object.prototype.hasOwnProperty.call(options, k) && k !== '_env') o[k] = options[k];
    env = defaultEnv();
    // Outside browsers (Node), bring a WebSocket (the ws package) or an XMLHttpRequest.
    if (typeof options.WebSocket === 'function') env.WebSocket = options.WebSocket;
    if (typeof options.XMLHttpRequest === 'function') env.XMLHttpRequest = options.XMLHttpRequest;
    userEnv = options._env;  // tests bring fakes of those and of the timers
    if (userEnv) for (k in userEnv) if (Object.prototype.hasOwnProperty.call(userEnv, k)) env[k] = userEnv[k];
    if (typeof o.target !== 'string' || !o.target) {
      throw new TypeError('netwine: options.target must name the target ("host:port" or a name such as "demo")');
    }
    var urls = resolveUrls(url, env.location);

    this.url = urls.http;
    this.target = o.target;
    this.protocol = '';
    this.extensions = '';
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onerror = this.onclose = this.ontransportchange = null;

    this._opt = o;
    this._env = env;
    this._http = urls.http;
    this._wsUrl = urls.ws;
    this._transports = transportOrder(o.transports, env);
    this._text = !!o.text;
    this._decoder = this._text ? makeDecoder(env) : null;
    this._binaryType = 'arraybuffer';
    this.binaryType = o.binaryType;
    this._b64 = o.base64Send === null || o.base64Send === undefined ?
      typeof Uint8Array === 'undefined' : !!o.base64Send;
    this._maxSend = o.maxSend;
    this._listeners = {};
    this._key = null;
    this._down = new Down();
    this._up = new Up();
    this._upTaken = 0;  // the last "A n" of any WebSocket: where the upstream window starts
    this._outq = [];          // send() items not yet in _up: {bytes} or a Blob being read
    this._outqBytes = 0;
    this._transportName = null;
    this._active = null;      // the transport carrying the session (or trying to)
    this._probe = null;       // a WebSocket trying to take the session over
    this._index = 0;          // next transport to try for a new session
    this._tried = [];
    this._failures = {};      // consecutive failures per transport while resuming
    this._wsFailures = 0;
    this._lostAt = 0;         // when the session lost its transport (ms), 0 when it has one
    this._retries = 0;
    this._sending = null;     // the HTTP send in flight
    this._sendStarted = 0;
    this._sendFailures = 0;
    this._sendLostAt = 0;
    this._sendGone = false;
    this._wantAck = false;
    this._serverEnded = false;
    this._closeCode = 1000;
    this._closeReason = '';
    this._closeSentOn = null;
    this._timers = {};
    liveSockets.push(this);
    this._later(function () {
      if (self.readyState === CONNECTING && !self._active) self._connect();
    });
  }

  Socket.CONNECTING = Socket.prototype.CONNECTING = CONNECTING;
  Socket.OPEN = Socket.prototype.OPEN = OPEN;
  Socket.CLOSING = Socket.prototype.CLOSING = CLOSING;
  Socket.CLOSED = Socket.prototype.CLOSED = CLOSED;

  Object.defineProperty(Socket.prototype, 'binaryType', {
    get: function () { return this._binaryType; },
    set: function (v) {
      // As WebSocket: other values are ignored.
      if (v === 'arraybuffer' || v === 'blob') this._binaryType = v;
    },
    enumerable: true,
    configurable: true
  });
  // Bytes given to send() that the server has not yet acknowledged.
  Object.defineProperty(Socket.prototype, 'bufferedAmount', {
    get: function () { return this._up.pending() + this._outqBytes; },
    enumerable: true,
    configurable: true
  });
  // The transport carrying the session: 'websocket', 'stream', 'poll', or null before open.
  Object.defineProperty(Socket.prototype, 'transport', {
    get: function () { return this._transportName; },
    enumerable: true,
    configurable: true
  });
  // Whether messages are strings (options.text) rather than bytes.
  Object.defineProperty(Socket.prototype, 'text', {
    get: function () { return this._text; },
    enumerable: true,
    configurable: true
  });

  // ------------------------------------------------------------- public API

  Socket.prototype.send = function (data) {
    var bytes, size;
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;  // discarded, as WebSocket does
    bytes = toBytes(data, this._env);
    if (bytes === null) {
      size = data.size;
      this._outq.push({blob: data, bytes: null, size: size, reading: false});
      this._outqBytes += size;
    } else if (bytes.length) {
      if (this._outq.length) {
        this._outq.push({bytes: bytes, size: bytes.length});
        this._outqBytes += bytes.length;
      } else {
        this._up.push(bytes);
      }
    }
    this._flush();
  };

  Socket.prototype.close = function (code, reason) {
    var self = this;
    if (code !== undefined && code !== null && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError('netwine: close code must be 1000 or 3000-4999, not ' + code);
    }
    if (reason !== undefined && reason !== null && utf8Length(String(reason)) > 123) {
      throw new SyntaxError('netwine: close reason over 123 bytes');
    }
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;
    this._closeCode = code === undefined || code === null ? 1000 : code;
    this._closeReason = reason === undefined || reason === null ? '' : String(reason);
    if (!this._key) {
      // No session yet: abandon the attempt (as WebSocket does while connecting).
      this.readyState = CLOSING;
      this._later(function () {
        self._finish(1006, 'closed before the connection was established', false, false);
      });
      this._stopAll(false);
      return;
    }
    this.readyState = CLOSING;
    this._log('closing (' + this._closeCode + ' ' + this._closeReason + ')');
    this._closeMoved();
    this._flush();
  };

  Socket.prototype.addEventListener = function (type, fn, options) {
    var list, entry;
    if (!fn) return;
    list = this._listeners[type] || (this._listeners[type] = []);
    for (var i = 0; i < list.length; i++) if (list[i].fn === fn) return;
    entry = {fn: fn, once: !!(options && typeof options === 'object' && options.once)};
    list.push(entry);
  };
  Socket.prototype.removeEventListener = function (type, fn) {
    var list = this._listeners[type], i;
    if (!list) return;
    for (i = 0; i < list.length; i++) {
      if (list[i].fn === fn) {
        list.splice(i, 1);
        return;
      }
    }
  };
  Socket.prototype.dispatchEvent = function (ev) {
    var list = (this._listeners[ev.type] || []).slice(), handler = this['on' + ev.type], i, stop = false;
    ev.target = ev.currentTarget = this;
    ev.stopImmediatePropagation = function () { stop = true; };
    if (typeof handler === 'function') this._call(handler, ev);
    for (i = 0; i < list.length && !stop; i++) {
      if (list[i].once) this.removeEventListener(ev.type, list[i].fn);
      this._call(list[i].fn, ev);
    }
    return !ev.defaultPrevented;
  };

  // Runs one listener. Its exception is thrown again from a timer of its own, so
  // the page still sees it but the socket's bookkeeping is not cut short.
  Socket.prototype._call = function (fn, ev) {
    try {
      if (typeof fn === 'function') fn.call(this, ev);
      else if (fn && typeof fn.handleEvent === 'function') fn.handleEvent(ev);
    } catch (e) {
      this._env.setTimeout(function () { throw e; }, 0);
    }
  };

  // ------------------------------------------------------------- internals

  Socket.prototype._emit = function (type, props) {
    var ev = {type: type, timeStamp: this._env.now(), isTrusted: false, bubbles: false, cancelable: false,
      defaultPrevented: false, preventDefault: function () {}, stopPropagation: function () {}}, k;
    if (props) for (k in props) if (Object.prototype.hasOwnProperty.call(props, k)) ev[k] = props[k];
    this.dispatchEvent(ev);
  };

  Socket.prototype._log = function (msg) {
    if (this._opt.debug && typeof console !== 'undefined') console.log('[netwine] ' + msg);
  };

  Socket.prototype._setTimeout = function (fn, ms) {
    return this._env.setTimeout(fn, ms);
  };
  Socket.prototype._clearTimeout = function (id) {
    if (id !== null && id !== undefined) this._env.clearTimeout(id);
  };
  Socket.prototype._later = function (fn) {
    return this._env.setTimeout(fn, 0);
  };
  // A named timer, replaced by the next of the same name.
  Socket.prototype._timer = function (name, ms, fn) {
    var self = this;
    this._clearTimeout(this._timers[name]);
    this._timers[name] = this._setTimeout(function () {
      delete self._timers[name];
      if (self.readyState !== CLOSED) fn.call(self);
    }, ms);
  };
  Socket.prototype._cancel = function (name) {
    this._clearTimeout(this._timers[name]);
    delete this._timers[name];
  };

  // A small XMLHttpRequest wrapper: done(status, text, xhr) once; 0 on network
  // errors and timeouts. Returns {abort} (no callback after an abort).
  Socket.prototype._xhr = function (method, url, body, timeout, done) {
    var self = this, xhr = new this._env.XMLHttpRequest(), finished = false, timer = null;
    function finish(status, text) {
      if (finished) return;
      finished = true;
      self._clearTimeout(timer);
      xhr.onreadystatechange = null;
      done(status, text, xhr);
    }
    xhr.open(method, url, true);
    xhr.onreadystatechange = function () {
      var status = 0, text = '';
      if (xhr.readyState !== 4) return;
      try {
        status = xhr.status;
        text = xhr.responseText;
      } catch (e) { /* network error */ }
      finish(status, text || '');
    };
    if (timeout) {
      timer = this._setTimeout(function () {
        timer = null;
        if (finished) return;
        xhr.onreadystatechange = null;
        try {
          xhr.abort();
        } catch (e) { /* nothing */ }
        finish(0, '');
      }, timeout);
    }
    try {
      xhr.send(body === undefined ? null : body);
    } catch (e) {
      this._later(function () { finish(0, ''); });
    }
    return {
      abort: function () {
        if (finished) return;
        finished = true;
        self._clearTimeout(timer);
        xhr.onreadystatechange = null;
        try {
          xhr.abort();
        } catch (e) { /* nothing */ }
      }
    };
  };

  // Opening: try the transports in order until one says OK or netwine says no.
  Socket.prototype._connect = function () {
    var name = this._transports[this._index];
    if (!name) {
      this._fail(1006, this._tried.length ? 'could not connect to netwine (' + this._tried.join('; ') + ')' :
        'no transport available: this browser has no WebSocket or XMLHttpRequest');
      return;
    }
    this._log('connecting to ' + this.target + ' with ' + name);
    this._active = makeTransport(this, name, true);
    this._active.start();
  };

  // The ack a new attach, poll or send may carry. While a WebSocket is taking
  // the session over, nothing past the ack of its attach: the server refuses an
  // attach whose ack is older than what it was told since.
  Socket.prototype._ackLimit = function () {
    var p = this._probe;
    return p && p.ackAt >= 0 ? Math.min(this._down.offset, p.ackAt) : this._down.offset;
  };

  Socket.prototype._tEstablished = function (t, key, upNext) {
    var prev;
    if (this.readyState === CLOSED) return;
    if (t === this._probe) {
      this._probe = null;
      prev = this._active;
      if (prev) prev.stop(false);
      this._active = t;
      this._log('upgraded to websocket');
    } else if (t !== this._active) {
      return;
    }
    if (!this._key) this._key = key;
    this._lostAt = 0;
    this._retries = 0;
    this._failures[t.name] = 0;
    this._cancel('resume');
    if (upNext !== undefined && upNext !== null && !this._up.ack(upNext)) {
      this._fail(1002, 'protocol error: the server expects upstream byte ' + upNext + ', past the ' + this._up.end + ' sent');
      return;
    }
    if (upNext !== undefined && upNext !== null && upNext < this._up.base) {
      this._fail(1011, 'upstream data lost: the server expects byte ' + upNext + ' but acknowledged ' + this._up.base);
      return;
    }
    if (this._transportName !== t.name) {
      prev = this._transportName;
      this._transportName = t.name;
      this._log('transport: ' + t.name);
      this._emit('transportchange', {transport: t.name, previous: prev});
      if (this.readyState === CLOSED) return;
    }
    if (this.readyState === CONNECTING) {
      this.readyState = OPEN;
      this._emit('open');
      if (this.readyState === CLOSED) return;
    }
    this._flush();
    this._ackCheck();
    this._scheduleProbe();
  };

  Socket.prototype._tData = function (t, off, bytes) {
    var fresh;
    if (this.readyState === CLOSED || t.sock !== this) return;
    fresh = this._down.accept(off, bytes);
    if (fresh === false) {
      // Bytes past what we hold: never sent by a correct server; re-attach to resync.
      if (t === this._active) {
        t.stop(false);
        this._tFailed(t, 'data gap: got offset ' + off + ', expected ' + this._down.offset, null);
      }
      return;
    }
    if (!fresh || !fresh.length) return;
    if (this.readyState === OPEN) this._deliver(fresh);
    this._ackCheck();
  };

  Socket.prototype._deliver = function (bytes) {
    var data;
    if (this._text) {
      data = this._decoder.decode(bytes, true);
      if (!data) return;
    } else if (this._binaryType === 'blob' && typeof this._env.Blob === 'function') {
      data = new this._env.Blob([bytes]);
    } else {
      data = toArrayBuffer(bytes);
    }
    this._emit('message', {data: data, origin: this.url, lastEventId: '', source: null, ports: []});
  };

  Socket.prototype._tClosed = function (t, code, reason) {
    if (this.readyState === CLOSED) return;
    if (code === 4002) {
      // Another transport took the session over: news only if it was not ours.
      if (t === this._active || t === this._probe) this._tFailed(t, 'taken over by another transport', null);
      return;
    }
    if (t === this._probe) this._probe = null;
    this._serverEnded = true;
    this._log('session ended by the server: ' + code + ' ' + reason);
    if (t.name !== 'websocket' && this._key && !this._closeSentOn) this._freeSession();
    if (this.readyState === CLOSING) this._finish(this._closeCode, this._closeReason, true, false);
    else this._finish(code, reason, true, code !== 1000);
  };

  // A stream ended without C or R: taken over, or cut.
  Socket.prototype._tEnded = function (t) {
    if (t !== this._active || this.readyState === CLOSED) return;
    if (this._probe) {
      t.parked = true;  // the WebSocket probably took it; see what the probe says
      return;
    }
    this._tFailed(t, 'stream ended', null);
  };

  Socket.prototype._tRecycle = function (t) {
    if (t !== this._active || this.readyState === CLOSED) return;
    t.stop(false);
    this._active = new StreamTransport(this, false);
    this._active.start();
  };

  Socket.prototype._tFailed = function (t, why, fatal) {
    var self = this, name, now, delay;
    if (this.readyState === CLOSED) return;
    if (t.name === 'websocket' && !t.established) this._wsFailures++;
    if (t === this._probe) {
      this._probe = null;
      t.stop(false);
      this._log('upgrade to websocket failed: ' + why);
      if (fatal && fatal.code !== 1006) {
        this._fail(fatal.code, fatal.reason);
        return;
      }
      if (this._active && this._active.unpark) this._active.unpark();
      this._scheduleProbe();
      return;
    }
    if (t !== this._active) return;
    t.stop(false);
    this._active = null;
    if (this._closeSentOn === t) this._closeSentOn = null;  // say it again on the next transport
    if (fatal) {
      if (fatal.code === 4001 || fatal.code === 1000) this._sessionGone(fatal);
      else this._fail(fatal.code, fatal.reason);
      return;
    }
    if (!this._key) {
      this._tried.push(t.name + ': ' + why);
      this._index++;
      this._log(t.name + ' failed (' + why + ')');
      this._connect();
      return;
    }
    now = this._env.now();
    if (!this._lostAt) this._lostAt = now;
    if (now - this._lostAt >= this._opt.resumeTimeout) {
      this._fail(1006, 'connection lost: netwine could not be reached for ' +
        Math.round((now - this._lostAt) / 1000) + ' s (' + why + ')');
      return;
    }
    name = t.name;
    this._failures[name] = (this._failures[name] || 0) + 1;
    if (this._failures[name] >= 2 && this._transports.length > 1) {
      this._failures[name] = 0;
      name = nextTransport(this._transports, name);
    }
    delay = this._retries === 0 ? 0 : Math.min(4000, 250 * Math.pow(2, this._retries - 1));
    this._retries++;
    this._log('connection lost (' + why + '); re-attaching with ' + name + ' in ' + delay + ' ms');
    function resume() {
      self._timer('resume', delay, function () {
        if (self._active) return;
        self._active = makeTransport(self, name, false);
        self._active.start();
      });
    }
    // A refused upgrade hides its status: ask over HTTP whether the session is
    // still there before trying again.
    if (t.name === 'websocket' && !t.opened) this._checkSession(resume);
    else resume();
  };

  // Calls then() unless netwine says the session is gone (404, 410), which ends
  // the socket. An empty send is the question: it changes nothing (PROTOCOL.md
  // section 3) and attaches nothing.
  Socket.prototype._checkSession = function (then) {
    var self = this;
    if (!this._key || typeof this._env.XMLHttpRequest !== 'function') {
      then();
      return;
    }
    this._xhr('POST', this._http + '/' + this._key + '/send?off=' + this._up.base, null, 10000, function (status, text) {
      var info = status ? parseError(text) : null;
      if (self.readyState === CLOSED) return;
      if (info && (status === 404 || status === 410)) self._sessionGone(closeForError(status, info));
      else then();
    });
  };

  // The session ended while we were away. If we were closing it, that is done.
  Socket.prototype._sessionGone = function (c) {
    this._serverEnded = true;
    if (this.readyState === CLOSING) this._finish(this._closeCode, this._closeReason, true, false);
    else this._finish(c.code, c.reason, false, true);
  };

  // Moves queued send() items into the upstream buffer and hands it on.
  Socket.prototype._flush = function () {
    var item, a = this._active;
    while (this._outq.length && this._outq[0].bytes) {
      item = this._outq.shift();
      this._outqBytes -= item.size;
      this._up.push(item.bytes);
    }
    if (this._outq.length && !this._outq[0].reading) this._readBlob(this._outq[0]);
    if (!this._key || this.readyState === CLOSED) return;
    if (a && a.name === 'websocket') a.sendData();
    else this._pumpHttp();
    this._closeStep();
  };

  Socket.prototype._readBlob = function (item) {
    var self = this, reader;
    item.reading = true;
    if (typeof this._env.FileReader !== 'function') {
      this._fail(1011, 'cannot send a Blob: no FileReader here');
      return;
    }
    reader = new this._env.FileReader();
    reader.onload = function () {
      item.bytes = new Uint8Array(reader.result);
      if (self.readyState !== CLOSED) self._flush();
    };
    reader.onerror = function () {
      self._fail(1011, 'could not read a Blob given to send()');
    };
    reader.readAsArrayBuffer(item.blob);
  };

  // The HTTP sender: one send at a time from the oldest unacknowledged byte; each
  // answer says how far the server got. Also carries stream acknowledgements.
  Socket.prototype._pumpHttp = function () {
    var self = this, a = this._active, up = this._up, body = null, off, ack, url;
    if (this._sending || this._timers.send || !this._key || this.readyState === CLOSED || this._sendGone) return;
    if (!a || a.name === 'websocket') return;
    off = up.base;
    if (up.end > off) body = up.slice(off, this._maxSend);
    else if (!(this._wantAck && a.name === 'stream')) return;
    ack = this._ackLimit();
    this._wantAck = false;
    url = this._http + '/' + this._key + '/send?off=' + off + '&ack=' + ack + (this._b64 && body ? '&enc=base64' : '');
    this._sendStarted = this._env.now();
    this._sending = this._xhr('POST', url, body ? (this._b64 ? base64Encode(body) : body) : null, this._opt.pollTimeout,
      function (status, text, xhr) {
        self._sending = null;
        if (self.readyState !== CLOSED) self._onSendDone(status, text, xhr, ack);
      });
  };

  Socket.prototype._onSendDone = function (status, text, xhr, ack) {
    var info, m, next, wait, now;
    if (status === 200 && (m = /^OK ([0-9]+)/.exec(text))) {
      next = parseInt(m[1], 10);
      if (!this._up.ack(next)) {
        this._fail(1002, 'protocol error: the server acknowledged upstream byte ' + next + ', never sent');
        return;
      }
      this._down.sentAck(ack);
      this._sendFailures = 0;
      this._sendLostAt = 0;
      this._flush();
      return;
    }
    info = status ? parseError(text) : null;
    if (status === 409 && info && typeof info.expected === 'number') {
      if (info.expected < this._up.base || !this._up.ack(info.expected)) {
        this._fail(1011, 'upstream data lost: the server expects byte ' + info.expected +
          ' and holds what was sent up to ' + this._up.base);
        return;
      }
      this._flush();
      return;
    }
    if (status === 413 && this._maxSend > 4096) {
      this._maxSend = Math.max(4096, Math.floor(this._maxSend / 2));
      this._flush();
      return;
    }
    if (info && (status === 429 || (status === 503 && info.error === 'target_busy'))) {
      wait = parseFloat(xhr.getResponseHeader('Retry-After')) || 1;
      this._timer('send', wait * 1000, this._flush);
      return;
    }
    if (status === 410) {
      // The session ended; its close comes downstream. Wait for it a while.
      this._sendGone = true;
      this._timer('gone', 5000, function () {
        var c = closeForError(410, info);
        this._finish(c.code, c.reason, false, true);
      });
      return;
    }
    if (!info) {
      // A network error or a proxy's answer: try again; the downstream side
      // notices a real loss and re-attaches.
      now = this._env.now();
      if (!this._sendLostAt) this._sendLostAt = now;
      if (now - this._sendLostAt >= this._opt.resumeTimeout) {
        this._fail(1006, 'connection lost: sends failed for ' + Math.round((now - this._sendLostAt) / 1000) +
          ' s (' + (status ? 'HTTP ' + status : 'network error') + ')');
        return;
      }
      this._sendFailures++;
      this._timer('send', Math.min(4000, 125 * Math.pow(2, this._sendFailures)), this._flush);
      return;
    }
    m = closeForError(status, info);
    this._fail(m.code, m.reason);
  };

  // The server has applied upstream bytes before n (a netwine.v1 "A n").
  Socket.prototype._upAcked = function (t, n) {
    // The upstream window counts from what the target has taken ("A n"), not
    // from an attach's up_next: netwine may hold more it has not written yet.
    if (n > this._upTaken) this._upTaken = n;
    if (!this._up.ack(n)) {
      this._fail(1002, 'protocol error: the server acknowledged upstream byte ' + n + ', never sent');
      return;
    }
    if (t === this._active && t.sendData) t.sendData();  // the window moved on
    this._closeStep();
  };

  // Acknowledges downstream bytes: at once past ackEvery, else after ackDelay.
  Socket.prototype._ackCheck = function () {
    var due = this._down.unacked();
    if (due <= 0 || !this._active || this.readyState === CLOSED) return;
    if (due >= this._opt.ackEvery) this._ackNow();
    else if (!this._timers.ack) this._timer('ack', this._opt.ackDelay, this._ackNow);
  };

  Socket.prototype._ackNow = function () {
    var a = this._active;
    this._cancel('ack');
    if (!a || this._down.unacked() <= 0 || this.readyState === CLOSED) return;
    if (a.name === 'websocket') {
      a.ack();
      return;
    }
    if (a.name === 'poll') return;  // every poll carries its ack
    // A stream: an (empty) send carries the ack. A send the server holds for
    // the target cannot, and the target may be waiting for this very ack (an
    // echo): then a new stream carries it (its attach acknowledges).
    this._wantAck = true;
    if (!this._sending) {
      this._pumpHttp();
    } else if (!this._timers.stuck) {
      this._timer('stuck', 1000, function () {
        var act = this._active;
        if (this._sending && this._wantAck && act && act.name === 'stream' && act.established &&
            !this._probe && this._down.unacked() >= this._opt.ackEvery) {
          this._log('a send is held: acknowledging with a new stream');
          act.stop(false);
          this._active = new StreamTransport(this, false);
          this._active.start();
        }
      });
    }
  };

  // Tries to move a session carried over HTTP onto a WebSocket.
  Socket.prototype._scheduleProbe = function () {
    var o = this._opt, n = this._wsFailures, a = this._active;
    if (!o.upgrade || this._probe || this._timers.probe || this.readyState !== OPEN) return;
    if (this._transports.indexOf('websocket') < 0 || !a || a.name === 'websocket') return;
    if (n >= o.upgradeAttempts) return;
    this._timer('probe', n === 0 ? 50 : o.upgradeDelay * Math.pow(2, n - 1), function () {
      var act = this._active;
      if (this.readyState !== OPEN || this._probe || !act || act.name === 'websocket' || !act.established) return;
      this._log('trying to upgrade to websocket');
      this._probe = new WsTransport(this, false);
      this._probe.start();
    });
  };

  // While CLOSING: once everything sent has gone, end the session.
  Socket.prototype._closeStep = function () {
    var self = this, a = this._active;
    if (this.readyState !== CLOSING || !this._key || this._closeSentOn) return;
    if (this._up.base !== this._closeAt) this._closeMoved();
    if (this._outq.length) return;
    if (!a || !a.established) return;  // re-attaching first
    if (a.name === 'websocket') {
      if (!a.allSent()) return;
      this._cancel('closing');  // the closing handshake has a deadline of its own
      this._closeSentOn = a;
      a.closeSession(this._closeReason);
      this._timer('close', 5000, function () {
        this._finish(this._closeCode, this._closeReason, false, false);
      });
      return;
    }
    if (this._sending || this._up.pending() > 0 || this._timers.send) return;
    this._cancel('closing');  // the close request has a timeout of its own
    this._closeSentOn = 'http';
    this._xhr('POST', this._http + '/' + this._key + '/close', null, 10000, function (status) {
      self._serverEnded = true;
      self._finish(self._closeCode, self._closeReason, status === 200, false);
    });
  };

  // close() is waiting for sent bytes to reach the server: (re)starts its deadline
  // from now and from how far the server has acknowledged.
  Socket.prototype._closeMoved = function () {
    this._closeAt = this._up.base;
    this._timer('closing', this._opt.closeTimeout, this._closeTimedOut);
  };

  Socket.prototype._closeTimedOut = function () {
    var a = this._active, waiting = [], why, t;
    if (this._up.pending() > 0) waiting.push(this._up.pending() + ' bytes not acknowledged');
    if (this._outq.length) waiting.push(this._outq.length + ' Blobs being read');
    if (!a) waiting.push('no transport');
    else if (!a.established) waiting.push(a.name + ' re-attaching');
    else if (a.name === 'websocket' && !a.allSent()) waiting.push('websocket still sending');
    if (this._sending) waiting.push('a send unanswered');
    if (this._timers.send) waiting.push('sends backing off');
    t = this._opt.closeTimeout;
    why = 'close timed out: nothing reached netwine for ' + (t >= 1000 ? Math.round(t / 1000) + ' s' : t + ' ms') +
      ' (' + (waiting.join(', ') || 'waiting') + ')';
    this._log(why + '; transport ' + (a ? a.name : 'none') + ', upstream ' + this._up.base + '-' + this._up.end);
    this._fail(1006, truncateReason(why));
  };

  // Tells netwine the session is over (PROTOCOL.md section 3: after a C frame,
  // and when we give up), so it frees it now rather than after its idle timeout.
  Socket.prototype._freeSession = function () {
    if (!this._key || !this._env.XMLHttpRequest) return;
    this._closeSentOn = this._closeSentOn || 'http';
    try {
      this._xhr('POST', this._http + '/' + this._key + '/close', null, 10000, function () {});
    } catch (e) { /* best effort */ }
  };

  Socket.prototype._stopAll = function (endSession) {
    var k;
    for (k in this._timers) if (Object.prototype.hasOwnProperty.call(this._timers, k)) this._clearTimeout(this._timers[k]);
    this._timers = {};
    if (this._active) this._active.stop(endSession);
    if (this._probe) this._probe.stop(false);
    this._active = this._probe = null;
    if (this._sending) this._sending.abort();
    this._sending = null;
  };

  Socket.prototype._finish = function (code, reason, wasClean, withError) {
    var i, wsOpen;
    if (this.readyState === CLOSED) return;
    wsOpen = this._active && this._active.name === 'websocket' && this._active.established && !this._active.dead;
    this.readyState = CLOSED;
    this._stopAll(true);
    if (this._key && !this._serverEnded && !this._closeSentOn && !wsOpen) this._freeSession();
    i = liveSockets.indexOf(this);
    if (i >= 0) liveSockets.splice(i, 1);
    this._log('closed: ' + code + ' ' + reason);
    if (withError) this._emit('error', {message: reason, code: code});
    this._emit('close', {code: code, reason: reason, wasClean: !!wasClean});
  };

  Socket.prototype._fail = function (code, reason) {
    this._finish(code, reason, false, true);
  };

  // A page going away for good frees its HTTP sessions now (a WebSocket's end
  // is seen by the server anyway). Not on a bfcache hide: the page may come back.
  if (global && typeof global.addEventListener === 'function') {
    global.addEventListener('pagehide', function (ev) {
      var nav = global.navigator, i, s;
      if (ev && ev.persisted) return;
      for (i = 0; i < liveSockets.length; i++) {
        s = liveSockets[i];
        if (s._key && s._transportName !== 'websocket' && nav && typeof nav.sendBeacon === 'function') {
          try {
            nav.sendBeacon(s._http + '/' + s._key + '/close');
          } catch (e) { /* best effort */ }
        }
      }
    });
  }

  return {
    version: VERSION,
    Socket: Socket,
    CONNECTING: CONNECTING,
    OPEN: OPEN,
    CLOSING: CLOSING,
    CLOSED: CLOSED,
    transports: TRANSPORTS.slice(),
    defaults: DEFAULTS,
    // The protocol pieces, for tests; not a stable API.
    _internal: {
      utf8Encode: utf8Encode,
      utf8Length: utf8Length,
      Utf8Decoder: Utf8Decoder,
      makeDecoder: makeDecoder,
      base64Encode: base64Encode,
      base64Decode: base64Decode,
      parseFrameLine: parseFrameLine,
      FrameReader: FrameReader,
      writeOffset: writeOffset,
      readOffset: readOffset,
      Down: Down,
      Up: Up,
      toBytes: toBytes,
      resolveUrls: resolveUrls,
      transportOrder: transportOrder,
      nextTransport: nextTransport,
      parseError: parseError,
      closeForError: closeForError,
      truncateReason: truncateReason,
      liveSockets: liveSockets
    }
  };
}));
