'use strict';
// netwine.js's Socket against scripted fakes of XMLHttpRequest and WebSocket:
// transport choice and fallback, resume, acknowledgements, sends and closing.
const test = require('node:test');
const assert = require('node:assert');
const N = require('../../js-client/netwine.js');
const {makeEnv, until, sleep, b64} = require('./fakes.js');

const KEY = 'abcdefghijklmnopqrstuvwx';
const URL = 'http://gw.test/netwine';

function open(env, opts) {
  const s = new N.Socket(URL, Object.assign({target: 'demo', _env: env}, opts));
  s.events = [];
  s.data = [];
  for (const type of ['open', 'message', 'error', 'close', 'transportchange']) {
    s.addEventListener(type, (e) => {
      s.events.push(type === 'transportchange' ? `transportchange:${e.transport}` : type);
      if (type === 'message') s.data.push(typeof e.data === 'string' ? e.data : Buffer.from(e.data).toString('latin1'));
      if (type === 'close') s.closed = e;
      if (type === 'error') s.error = e;
    });
  }
  return s;
}
const wsRefused = (ws) => ws.drop(1006);      // an upgrade that fails (a proxy's 400, say)
const paths = (env) => env.requests.map((r) => r.method + ' ' + r.path);

test('automatic choice falls back websocket -> stream -> poll in order', async () => {
  const env = makeEnv();
  env.onSocket = wsRefused;
  env.handler = (x) => {
    if (x.path.includes('mode=stream')) return x.fail();              // streaming blocked too
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    // polls: hold them
  };
  const s = open(env);
  await until(() => s.readyState === N.OPEN, 2000, 'open');
  assert.strictEqual(env.sockets.length, 1);
  assert.match(env.sockets[0].url, /^ws:\/\/gw\.test\/netwine\/ws\?target=demo$/);
  assert.strictEqual(env.sockets[0].protocol, 'netwine.v1');
  assert.deepStrictEqual(paths(env).slice(0, 3), [
    'POST /netwine/open?target=demo&mode=stream',
    'POST /netwine/open?target=demo&mode=poll',
    `GET /netwine/${KEY}/poll?ack=0`,
  ]);
  assert.strictEqual(s.transport, 'poll');
  assert.deepStrictEqual(s.events, ['transportchange:poll', 'open']);
  s.close();
});

test('an answer from netwine itself is final: no fallback, close code from the status', async () => {
  const env = makeEnv();
  env.onSocket = wsRefused;
  env.handler = (x) => x.json(403, {error: 'target_not_allowed', message: 'target 10.1.1.1:22 is not allowed: no rule'});
  const s = open(env);
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual(paths(env), ['POST /netwine/open?target=demo&mode=stream']);
  assert.deepStrictEqual(s.events, ['error', 'close']);
  assert.strictEqual(s.closed.code, 1008);
  assert.strictEqual(s.closed.reason, 'target 10.1.1.1:22 is not allowed: no rule');
  assert.strictEqual(s.closed.wasClean, false);
  assert.strictEqual(s.readyState, N.CLOSED);
});

test('a refused target over the WebSocket closes with 1011 and its reason', async () => {
  const env = makeEnv();
  env.onSocket = (ws) => { ws.open(); ws.drop(1011, 'target refused the connection: 127.0.0.1:9'); };
  const s = open(env);
  await until(() => s.closed, 2000, 'close');
  assert.strictEqual(env.requests.length, 0);
  assert.strictEqual(s.closed.code, 1011);
  assert.strictEqual(s.closed.reason, 'target refused the connection: 127.0.0.1:9');
  assert.deepStrictEqual(s.events, ['error', 'close']);
});

test('when nothing works, close 1006 names each failure', async () => {
  const env = makeEnv();
  env.onSocket = wsRefused;
  env.handler = (x) => x.reply(502, '<html>Bad Gateway</html>');    // a proxy, not netwine
  const s = open(env);
  await until(() => s.closed, 2000, 'close');
  assert.strictEqual(s.closed.code, 1006);
  assert.match(s.closed.reason, /websocket: websocket upgrade failed; stream: open: HTTP 502; poll: open: HTTP 502/);
});

test('stream: frames split across chunks arrive in order; a cut stream resumes without duplicates', async () => {
  const env = makeEnv();
  let first;
  env.handler = (x) => {
    if (x.path.includes('/open')) {
      first = x;
      x.begin(200);
      const text = `OK ${KEY}\nD 0 ${b64('hello ')}\nD 6 ${b64('world')}\nH\n`;
      x.push(text.slice(0, 10));
      x.push(text.slice(10, 33));
      x.push(text.slice(33));
      return;
    }
    if (x.path.includes('/stream')) {
      assert.strictEqual(x.path, `/netwine/${KEY}/stream?ack=11`);
      x.begin(200);
      x.push(`D 6 ${b64('world!!')}\nD 13 ${b64(' more')}\n`);   // repeats "world"
    }
  };
  const s = open(env, {transports: ['stream']});
  await until(() => s.data.join('') === 'hello world', 2000, 'first data');
  first.fail();                                                    // the connection is cut
  await until(() => s.data.join('') === 'hello world!! more', 2000, 'resumed data');
  assert.deepStrictEqual(s.data, ['hello ', 'world', '!!', ' more']);
  assert.strictEqual(s.transport, 'stream');
  assert.ok(!s.events.includes('error'));
  s.close();
});

test('stream: R recycles onto a new stream carrying the ack', async () => {
  const env = makeEnv();
  env.handler = (x) => {
    if (x.path.includes('/open')) {
      x.begin(200);
      x.push(`OK ${KEY}\nD 0 ${b64('abc')}\nR\n`);
      x.end();
    } else if (x.path.includes('/stream')) {
      x.begin(200);
      x.push(`D 3 ${b64('def')}\nC 1000 target closed the connection\n`);
      x.end();
    } else if (x.path.endsWith('/close')) {
      x.reply(200, 'OK closed\n');
    }
  };
  const s = open(env, {transports: ['stream']});
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual(paths(env), [
    'POST /netwine/open?target=demo&mode=stream',
    `POST /netwine/${KEY}/stream?ack=3`,
    `POST /netwine/${KEY}/close`,                                  // frees the session after C
  ]);
  assert.deepStrictEqual(s.data, ['abc', 'def']);
  assert.deepStrictEqual([s.closed.code, s.closed.reason, s.closed.wasClean], [1000, 'target closed the connection', true]);
  assert.deepStrictEqual(s.events, ['transportchange:stream', 'open', 'message', 'message', 'close']);
});

test('stream: downstream is acknowledged with an empty send past ackEvery and after a quiet spell', async () => {
  const env = makeEnv();
  const sends = [];
  env.handler = (x) => {
    if (x.path.includes('/open')) {
      x.begin(200);
      x.push(`OK ${KEY}\nD 0 ${b64('x'.repeat(3000))}\nD 3000 ${b64('y'.repeat(10))}\n`);
    } else if (x.path.includes('/send')) {
      sends.push(x.path);
      assert.strictEqual(x.body, null);
      x.reply(200, 'OK 0\n');
    }
  };
  const s = open(env, {transports: ['stream'], ackEvery: 1000, ackDelay: 30});
  await until(() => sends.length >= 1, 2000, 'ack');
  assert.match(sends[0], new RegExp(`^/netwine/${KEY}/send\\?off=0&ack=(3000|3010)$`));
  await until(() => sends.some((p) => p.endsWith('ack=3010')), 2000, 'second ack');
  s.close();
});

test('poll: sends carry offsets, survive a network error and 413, and follow Retry-After', async () => {
  const env = makeEnv();
  const bodies = [];
  let failNext = true, tooBig = true, busy = true;
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.includes('/poll')) return;                           // held
    if (x.path.includes('/send')) {
      const off = Number(/off=(\d+)/.exec(x.path)[1]);
      const body = x.bodyText();
      bodies.push([off, body]);
      if (failNext) { failNext = false; return x.fail(); }
      if (tooBig && body.length > 4096) { tooBig = false; return x.reply(413, ''); }
      if (busy && off > 0) { busy = false; return x.json(503, {error: 'target_busy', message: 'busy'}, {'retry-after': '0.05'}); }
      return x.reply(200, `OK ${off + Buffer.from(body, 'latin1').length}\n`);
    }
  };
  const s = open(env, {transports: ['poll'], maxSend: 8192});
  s.send('héllo ');                                                // queued while connecting
  assert.strictEqual(s.bufferedAmount, 7);
  await until(() => s.readyState === N.OPEN, 2000, 'open');
  await until(() => s.bufferedAmount === 0, 2000, 'first send acknowledged');
  s.send(new Uint8Array(10000).fill(65));
  await until(() => s.bufferedAmount === 0, 3000, 'big send acknowledged');
  // A failed send is resent at the same offset; a 413 halves the size; a 503 waits.
  assert.deepStrictEqual(bodies.map(([o, b]) => [o, b.length]), [
    [0, 7], [0, 7],
    [7, 8192], [7, 4096], [7, 4096], [4103, 4096], [8199, 1808],
  ]);
  assert.strictEqual(Buffer.from(bodies[0][1], 'latin1').toString(), 'héllo ');
  s.close();
});

test('poll: a 409 makes the sender resend from the offset netwine expects', async () => {
  const env = makeEnv();
  const seen = [];
  let applied = 0, lied = false;
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.includes('/poll')) return;
    if (x.path.includes('/send')) {
      const off = Number(/off=(\d+)/.exec(x.path)[1]);
      const body = x.bodyText();
      seen.push(off);
      if (off > applied) return x.json(409, {error: 'offset_gap', message: 'gap', expected: applied});
      applied = Math.max(applied, off + body.length);
      // Pretend the first answer claims only 2 bytes were applied.
      if (!lied) { lied = true; applied = 2; return x.reply(200, 'OK 2\n'); }
      return x.reply(200, `OK ${applied}\n`);
    }
  };
  const s = open(env, {transports: ['poll']});
  s.send('abcdef');
  await until(() => s.bufferedAmount === 0, 2000, 'acknowledged');
  assert.deepStrictEqual(seen, [0, 2]);
  s.close();
});

test('upgrade: a polled session moves onto a WebSocket and resends from its up_next', async () => {
  const env = makeEnv();
  let polls = 0, held = null;
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.includes('/poll')) {
      polls++;
      if (polls === 1) return x.reply(200, `D 0 ${b64('welcome\r\n')}\n`);
      held = x;                                                    // held until the WebSocket takes over
      return;
    }
    if (x.path.includes('/send')) return;                          // never answered: the WebSocket resends
  };
  env.onSocket = (ws) => {
    assert.strictEqual(ws.path, `/netwine/${KEY}/ws?ack=9`);
    ws.open();
    if (held) held.reply(200, '');                                // the server ends the replaced poll
    ws.text(`OK ${KEY} 0`);
    ws.binary(9, Buffer.from('over ws'));
  };
  const s = open(env, {transports: ['poll', 'websocket']});
  s.send('upload');
  await until(() => s.transport === 'websocket', 3000, 'upgrade');
  await until(() => s.data.join('') === 'welcome\r\nover ws', 2000, 'data');
  assert.deepStrictEqual(s.events.filter((e) => e.startsWith('transport')), ['transportchange:poll', 'transportchange:websocket']);
  const ws = env.sockets[0];
  assert.deepStrictEqual(ws.binarySent(), [{offset: 0, text: 'upload'}]);
  assert.strictEqual(polls, 2);                                   // no poll after the takeover began
  s.send('more');
  assert.deepStrictEqual(ws.binarySent()[1], {offset: 6, text: 'more'});
  ws.text('A 10');
  assert.strictEqual(s.bufferedAmount, 0);
  s.close(4000, 'done');
  await sleep(5);
  assert.deepStrictEqual(ws.closedWith, {code: 1000, reason: 'done'});
  ws.drop(1000, 'closed by the client');
  await until(() => s.closed, 1000, 'close');
  assert.deepStrictEqual([s.closed.code, s.closed.reason, s.closed.wasClean], [4000, 'done', true]);
});

test('websocket: a drop re-attaches with the ack held and resends unacknowledged bytes', async () => {
  const env = makeEnv();
  env.onSocket = (ws) => {
    ws.open();
    if (env.sockets.length === 1) {
      ws.text(`OK ${KEY} 0`);
      ws.binary(0, Buffer.from('0123456789'));
    } else {
      assert.strictEqual(ws.path, `/netwine/${KEY}/ws?ack=10`);
      ws.text(`OK ${KEY} 3`);                                     // it got "abc" before the drop
      ws.binary(8, Buffer.from('89ABC'));                          // repeats "89"
    }
  };
  const s = open(env, {transports: ['websocket']});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('abcdef');
  await until(() => s.data.length === 1, 1000, 'data');
  env.sockets[0].drop(1006);
  await until(() => s.data.join('') === '0123456789ABC', 2000, 'resumed');
  assert.deepStrictEqual(env.sockets[1].binarySent(), [{offset: 3, text: 'def'}]);
  assert.strictEqual(s.transport, 'websocket');
  assert.ok(!s.events.includes('error'));
  s.close();
});

test('a session that cannot get back gives up with 1006 after resumeTimeout', async () => {
  const env = makeEnv();
  let opened = false;
  env.handler = (x) => {
    if (!opened && x.path.includes('/open')) {
      opened = true;
      x.begin(200);
      x.push(`OK ${KEY}\n`);
      setTimeout(() => x.fail(), 20);
      return;
    }
    x.fail();                                                      // nothing gets through any more
  };
  const s = open(env, {transports: ['stream', 'poll'], resumeTimeout: 1500});
  await until(() => s.closed, 5000, 'close');
  assert.strictEqual(s.closed.code, 1006);
  assert.match(s.closed.reason, /^connection lost: netwine could not be reached for \d+ s \((stream|poll): /);
  const kinds = paths(env).slice(1).map((p) => p.replace(/\?.*/, '').split('/').pop());
  // Each transport fails twice (the first stream failure was the open's own
  // stream), then the next; on giving up, the session is freed.
  assert.deepStrictEqual(kinds.slice(0, 3), ['stream', 'poll', 'poll']);
  assert.strictEqual(kinds[kinds.length - 1], 'close');
});

test('a re-attach to a session that expired closes with 4001', async () => {
  const env = makeEnv();
  env.handler = (x) => {
    if (x.path.includes('/open')) {
      x.begin(200);
      x.push(`OK ${KEY}\n`);
      setTimeout(() => x.fail(), 10);
      return;
    }
    x.json(404, {error: 'unknown_session', message: 'no session with this key (it may have ended)'});
  };
  const s = open(env, {transports: ['stream']});
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual([s.closed.code, s.closed.reason], [4001, 'no session with this key (it may have ended)']);
});

test('close over HTTP waits for pending sends, then ends the session with the caller\'s code', async () => {
  const env = makeEnv();
  const order = [];
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.includes('/poll')) return;
    order.push(x.path.split('?')[0].split('/').pop());
    if (x.path.includes('/send')) return setTimeout(() => x.reply(200, 'OK 4\n'), 30);
    if (x.path.endsWith('/close')) return x.reply(200, 'OK closed\n');
  };
  const s = open(env, {transports: ['poll']});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('data');
  s.close(4321, 'bye now');
  assert.strictEqual(s.readyState, N.CLOSING);
  s.send('dropped');                                                // discarded, as WebSocket does
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual(order, ['send', 'close']);
  assert.deepStrictEqual([s.closed.code, s.closed.reason, s.closed.wasClean], [4321, 'bye now', true]);
  assert.ok(!s.events.includes('error'));
});

test('close gives up after closeTimeout with nothing acknowledged: 1006 naming what it waited for', async () => {
  const env = makeEnv();
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.endsWith('/close')) return x.reply(200, 'OK closed\n');
    // polls and sends: held, never answered
  };
  const s = open(env, {transports: ['poll'], closeTimeout: 150});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('stuck');
  s.close(4000, 'done');
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual([s.closed.code, s.closed.wasClean], [1006, false]);
  assert.strictEqual(s.closed.reason,
    'close timed out: nothing reached netwine for 150 ms (5 bytes not acknowledged, a send unanswered)');
  assert.deepStrictEqual(s.events.slice(-2), ['error', 'close']);
  await until(() => paths(env).includes(`POST /netwine/${KEY}/close`), 1000, 'the session freed');
  assert.ok(env.requests.find((r) => r.path.includes('/send')).aborted);
});

test('close waits as long as sends keep being acknowledged, then ends cleanly', async () => {
  const env = makeEnv();
  let sends = 0;
  env.handler = (x) => {
    if (x.path.includes('mode=poll')) return x.reply(200, `OK ${KEY}\n`);
    if (x.path.includes('/poll')) return;
    if (x.path.includes('/send')) {
      sends++;
      const off = Number(/off=(\d+)/.exec(x.path)[1]);
      return setTimeout(() => x.reply(200, `OK ${off + x.bodyText().length}\n`), 60);
    }
    if (x.path.endsWith('/close')) return x.reply(200, 'OK closed\n');
  };
  // 20 bytes in sends of 4, each answered after 60 ms: 300 ms in all, more than
  // the 150 ms deadline, which restarts at each acknowledgement.
  const s = open(env, {transports: ['poll'], closeTimeout: 150, maxSend: 4});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('0123456789abcdefghij');
  s.close(4321, 'bye');
  await until(() => s.closed, 3000, 'close');
  assert.strictEqual(sends, 5);
  assert.deepStrictEqual([s.closed.code, s.closed.reason, s.closed.wasClean], [4321, 'bye', true]);
  assert.ok(!s.events.includes('error'));
});

test('text option: characters split between chunks come out whole', async () => {
  const env = makeEnv();
  const bytes = Buffer.from('grüße €');
  env.handler = (x) => {
    if (x.path.includes('/open')) {
      x.begin(200);
      x.push(`OK ${KEY}\nD 0 ${bytes.subarray(0, 3).toString('base64')}\nD 3 ${bytes.subarray(3, 9).toString('base64')}\nD 9 ${bytes.subarray(9).toString('base64')}\n`);
    }
  };
  const s = open(env, {transports: ['stream'], text: true});
  await until(() => s.data.join('') === 'grüße €', 1000, 'text');
  assert.deepStrictEqual(s.data, ['gr', 'üße ', '€']);
  assert.strictEqual(s.text, true);
  s.close();
});

test('the API checks its arguments like WebSocket does', () => {
  const env = makeEnv();
  assert.throws(() => N.Socket(URL, {target: 'demo'}), TypeError);
  assert.throws(() => new N.Socket(URL, {_env: env}), TypeError);
  assert.throws(() => new N.Socket('/netwine', {target: 'demo', _env: env}), SyntaxError);   // no page to resolve against
  assert.throws(() => new N.Socket(URL, {target: 'demo', transports: ['smoke-signals'], _env: env}), SyntaxError);
  const s = new N.Socket(URL, {target: 'demo', _env: env, transports: ['poll']});
  assert.throws(() => s.close(1001), RangeError);
  assert.throws(() => s.close(1000, 'x'.repeat(124)), SyntaxError);
  assert.strictEqual(s.binaryType, 'arraybuffer');
  s.binaryType = 'nonsense';
  assert.strictEqual(s.binaryType, 'arraybuffer');
  s.binaryType = 'blob';
  assert.strictEqual(s.binaryType, 'blob');
  assert.deepStrictEqual([N.Socket.CONNECTING, N.Socket.OPEN, N.Socket.CLOSING, N.Socket.CLOSED], [0, 1, 2, 3]);
  assert.strictEqual(s.readyState, s.CONNECTING);
  assert.strictEqual(s.transport, null);
  s.close();
});

test('close while connecting ends with 1006, like WebSocket', async () => {
  const env = makeEnv();
  env.handler = () => {};                                           // never answers
  const s = open(env, {transports: ['stream']});
  await until(() => env.requests.length === 1, 1000, 'request');
  s.close();
  await until(() => s.closed, 1000, 'close');
  assert.strictEqual(s.closed.code, 1006);
  assert.ok(env.requests[0].aborted);
});

test('listeners: on-handlers and listeners both run; a throwing one does not stop the rest', async () => {
  const env = makeEnv();
  env.handler = (x) => x.reply(200, `OK ${KEY}\n`);
  // A listener's exception is rethrown from a timer of its own: catch it there.
  const uncaught = [];
  env.setTimeout = (fn, ms) => setTimeout(() => { try { fn(); } catch (e) { uncaught.push(e.message); } }, ms);
  const s = new N.Socket(URL, {target: 'demo', _env: env, transports: ['poll']});
  const got = [];
  const onceFn = () => got.push('once');
  s.onopen = () => got.push('onopen');
  s.addEventListener('open', () => { throw new Error('listener bug (expected in this test)'); });
  s.addEventListener('open', {handleEvent: (e) => got.push('object:' + e.type)});
  s.addEventListener('open', onceFn, {once: true});
  const removed = () => got.push('removed');
  s.addEventListener('open', removed);
  s.removeEventListener('open', removed);
  await until(() => got.length >= 3, 1000, 'open');
  await until(() => uncaught.length === 1, 1000, 'the exception, reported apart');
  assert.deepStrictEqual(got, ['onopen', 'object:open', 'once']);
  assert.deepStrictEqual(uncaught, ['listener bug (expected in this test)']);
  s.close();
});

test('websocket: a refused re-attach asks over HTTP whether the session lives; 404 ends it with 4001', async () => {
  const env = makeEnv();
  env.onSocket = (ws) => {
    if (env.sockets.length === 1) {
      ws.open();
      ws.text(`OK ${KEY} 0`);
      setTimeout(() => ws.drop(1006), 10);
    } else {
      ws.drop(1006);                                              // the upgrade is refused (a 404 it cannot see)
    }
  };
  env.handler = (x) => x.json(404, {error: 'unknown_session', message: 'no session with this key (it may have ended)'});
  const s = open(env, {transports: ['websocket']});
  await until(() => s.closed, 2000, 'close');
  assert.deepStrictEqual(paths(env), [`POST /netwine/${KEY}/send?off=0`]);
  assert.strictEqual(env.requests[0].body, null);
  assert.deepStrictEqual([s.closed.code, s.closed.reason], [4001, 'no session with this key (it may have ended)']);
  assert.deepStrictEqual(s.events, ['transportchange:websocket', 'open', 'error', 'close']);
});

test('websocket: a drop while closing says the close again on the new connection', async () => {
  const env = makeEnv();
  env.onSocket = (ws) => {
    ws.open();
    ws.text(`OK ${KEY} ${env.sockets.length === 1 ? 0 : 4}`);
  };
  const s = open(env, {transports: ['websocket']});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('last');
  s.close(4000, 'bye');
  const first = env.sockets[0];
  assert.deepStrictEqual(first.closedWith, {code: 1000, reason: 'bye'});
  first.drop(1006);                                               // the close may not have arrived
  await until(() => env.sockets.length === 2 && env.sockets[1].closedWith, 2000, 'close again');
  const second = env.sockets[1];
  assert.strictEqual(second.path, `/netwine/${KEY}/ws?ack=0`);
  assert.deepStrictEqual(second.binarySent(), []);                // "last" had arrived (up_next 4)
  assert.deepStrictEqual(second.closedWith, {code: 1000, reason: 'bye'});
  second.drop(1000, 'closed by the client');
  await until(() => s.closed, 1000, 'closed');
  assert.deepStrictEqual([s.closed.code, s.closed.reason, s.closed.wasClean], [4000, 'bye', true]);
});

test('blob sends keep their place in the byte stream', async () => {
  const env = makeEnv();
  // A FileReader stand-in that reads slowly, so later sends are queued behind it.
  env.Blob = class { constructor(parts) { this.buf = Buffer.concat(parts.map((p) => Buffer.from(p))); this.size = this.buf.length; this.type = ''; } slice() {} };
  env.FileReader = class {
    readAsArrayBuffer(blob) {
      setTimeout(() => { this.result = blob.buf.buffer.slice(blob.buf.byteOffset, blob.buf.byteOffset + blob.size); this.onload(); }, 30);
    }
  };
  env.onSocket = (ws) => { ws.open(); ws.text(`OK ${KEY} 0`); };
  const s = open(env, {transports: ['websocket']});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('a');
  s.send(new env.Blob(['BLOB']));
  s.send('z');
  assert.strictEqual(s.bufferedAmount, 6);
  await until(() => env.sockets[0].binarySent().length === 2, 1000, 'all sent');
  // What waited behind the Blob goes with it, in order.
  assert.deepStrictEqual(env.sockets[0].binarySent(), [{offset: 0, text: 'a'}, {offset: 1, text: 'BLOBz'}]);
  env.sockets[0].text('A 6');
  assert.strictEqual(s.bufferedAmount, 0);
  s.close();
});

test('websocket: at most wsWindow upstream bytes go out before the server acknowledges them', async () => {
  const env = makeEnv();
  env.onSocket = (ws) => { ws.open(); ws.text(`OK ${KEY} 0`); };
  const s = open(env, {transports: ['websocket'], wsWindow: 10, wsChunk: 4});
  await until(() => s.readyState === N.OPEN, 1000, 'open');
  s.send('abcdefghijklmnopqrstuvwxyz');
  const ws = env.sockets[0];
  const sentUpTo = () => ws.binarySent().reduce((end, m) => Math.max(end, m.offset + m.text.length), 0);
  await until(() => sentUpTo() === 10, 1000, 'first window');
  await sleep(20);
  assert.strictEqual(sentUpTo(), 10);  // nothing past the window without an ack
  ws.text('A 7');                       // the target took 7: the window moves to 17
  await until(() => sentUpTo() === 17, 1000, 'second window');
  ws.text('A 17');
  await until(() => sentUpTo() === 26, 1000, 'the rest');
  assert.strictEqual(ws.binarySent().map((m) => m.text).join(''), 'abcdefghijklmnopqrstuvwxyz');
  ws.text('A 26');
  assert.strictEqual(s.bufferedAmount, 0);
  s.close();
});
