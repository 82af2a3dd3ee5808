'use strict';
// netwine.js in a real browser (Debian's Chromium, headless) against the real
// netwine binary: per transport, and through a proxy that refuses WebSocket
// upgrades or cuts every connection mid-transfer.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const H = require('./harness.js');

const MIB = 1 << 20;
const ARTIFACTS = process.env.NETWINE_ARTIFACTS || path.join(H.ROOT, 'build', 'test-artifacts');
const HELPERS = fs.readFileSync(path.join(__dirname, 'page-helpers.js'), 'utf8');

let echo, refused, netwine, proxy, browser;

test.before(async () => {
  echo = await H.startEcho();
  refused = await H.refusedPort();
  // --bulk-after as the integration tests set it: the 48 MiB echo is lent even when
  // a slow host never moves 2 MiB within 0.1 s (other WebSockets may be lent too).
  netwine = await H.startNetwine(['--target', '127.0.0.1:' + echo.port, '--target', '127.0.0.1:' + refused,
    '--bulk-after', '256K']);
  proxy = await H.startProxy(Number(netwine.address.split(':')[1]));
  browser = await H.launchBrowser();
});

test.after(async () => {
  if (browser) await browser.close();
  if (proxy) proxy.close();
  if (netwine) await netwine.stop();
  if (echo) echo.close();
});

// A page of the app at `origin` (netwine itself or the proxy), with the helpers.
async function newPage(origin, pathName = '/?connect=0') {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log('page error:', e.message));
  await page.goto(origin + pathName);
  await page.addScriptTag({content: HELPERS});
  return page;
}

const ECHO = () => '127.0.0.1:' + echo.port;
const TRANSPORTS = ['websocket', 'stream', 'poll', 'auto'];
const forced = (t) => (t === 'auto' ? ['websocket', 'stream', 'poll'] : [t]);
const expected = (t) => (t === 'auto' ? 'websocket' : t);

for (const t of TRANSPORTS) {
  test.describe(`transport ${t}`, () => {
    test('echoes text with non-ASCII characters through the demo target and an echo target', async () => {
      const page = await newPage(netwine.origin);
      const r = await page.evaluate(async ({transports, echoTarget}) => {
        const line = 'grüße, €, 日本語, 𝄞 — ok';
        const demo = await T.open({target: 'demo', transports, text: true});
        await T.waitFor(() => demo.log.text.includes('help'), 5000, 'greeting');
        demo.send(line + '\r\n');
        await T.waitFor(() => demo.log.text.includes('echo: ' + line + '\r\n'), 5000, 'demo echo');
        const transport = demo.transport;
        demo.close();
        const e = await T.open({target: echoTarget, transports, text: true});
        e.send(line);
        e.send(new Blob([' and a Blob ✓']));
        e.send(' and after it');
        const want = line + ' and a Blob ✓ and after it';
        await T.waitFor(() => e.log.text.length >= want.length, 5000, 'echo');
        e.close();
        return {transport, demo: demo.log, echo: e.log.text, line};
      }, {transports: forced(t), echoTarget: ECHO()});
      assert.strictEqual(r.transport, expected(t));
      assert.match(r.demo.text, /^Welcome to the netwine demo service/);
      assert.strictEqual(r.echo, r.line + ' and a Blob ✓ and after it');
      assert.deepStrictEqual(r.demo.events.filter((e) => e === 'error'), []);
      await page.close();
    });

    test('carries 4 MiB of binary both ways byte-exact', async () => {
      const page = await newPage(netwine.origin);
      const {log, rt} = await page.evaluate(({transports, target}) =>
        T.roundTrip({target, transports, debug: true}, 4 * 1024 * 1024, 7), {transports: forced(t), target: ECHO()});
      assert.deepStrictEqual(log.errors, [], 'the socket said:\n' + rt.logs.slice(-40).join('\n') +
        '\nnetwine answered:\n' + netwine.accessTail(40));
      assert.strictEqual(rt.n, 4 * MIB);
      assert.strictEqual(rt.mismatch, -1, `first wrong byte at ${rt.mismatch}`);
      assert.strictEqual(rt.transport, expected(t));
      assert.strictEqual(rt.bufferedAfter, 0);
      assert.deepStrictEqual(log.close, {code: 4000, reason: 'round trip done', wasClean: true});
      console.log(`  ${t}: 4 MiB echoed in ${rt.ms} ms, ${rt.messages} messages`);
      await page.close();
    });

    test('close codes and reasons reach onclose (client close, target close)', async () => {
      const page = await newPage(netwine.origin);
      const r = await page.evaluate(async (transports) => {
        const a = await T.open({target: 'demo', transports, text: true});
        a.send('hello\r\n');
        a.close(4321, 'closing from the page ✓');
        const states = [a.readyState];
        const la = await T.closed(a);
        states.push(a.readyState);
        const b = await T.open({target: 'demo', transports, text: true});
        b.send('quit\r\n');
        const lb = await T.closed(b);
        return {la, lb, states};
      }, forced(t));
      assert.deepStrictEqual(r.la.close, {code: 4321, reason: 'closing from the page ✓', wasClean: true});
      assert.deepStrictEqual(r.states, [2, 3]);
      assert.deepStrictEqual(r.lb.close, {code: 1000, reason: 'target closed the connection', wasClean: true});
      assert.match(r.lb.text, /bye\r\n$/);
      assert.deepStrictEqual(r.lb.errors, []);
      await page.close();
    });

    test("a refused or forbidden target's error reaches the page", async () => {
      const page = await newPage(netwine.origin);
      // The forbidden target is on loopback too (127.0.0.2 is allowed by no rule):
      // tests never address anything off this machine.
      const r = await page.evaluate(async ({transports, target, forbidden}) => {
        const a = await T.open({target, transports});
        const b = await T.open({target: forbidden, transports});
        await T.closed(a);
        await T.closed(b);
        return {refused: a.log, forbidden: b.log};
      }, {transports: forced(t), target: '127.0.0.1:' + refused, forbidden: '127.0.0.2:' + refused});
      assert.strictEqual(r.refused.close.code, 1011);
      assert.match(r.refused.close.reason, /refused/i);
      // Over HTTP the open waits for the target; a WebSocket opens first and
      // then hears the close (PROTOCOL.md section 4, as websockify does).
      const ws = expected(t) === 'websocket';
      assert.deepStrictEqual(r.refused.events, ws ? ['open', 'error', 'close'] : ['error', 'close']);
      assert.strictEqual(r.refused.errors[0], r.refused.close.reason);
      assert.strictEqual(r.forbidden.close.code, 1008);
      assert.match(r.forbidden.close.reason, /not allowed/);
      assert.deepStrictEqual(r.forbidden.events.slice(-2), ['error', 'close']);
      await page.close();
    });
  });
}

test('a 48 MiB echo over netwine.v1 is lent to a bulk thread and comes back byte-exact', async () => {
  // netwine.js keeps wsWindow bytes unacknowledged while the echo target pushes
  // everything back: both directions full at once, for long enough to be lent.
  const loans = async () => Number((await (await fetch(netwine.origin + '/metrics')).text())
    .match(/^netwine_bulk_loans_total (\d+)$/m)[1]);
  const before = await loans();
  const page = await newPage(netwine.origin);
  const size = 48 * MIB;
  const {log, rt} = await page.evaluate(({target, size}) =>
    T.roundTrip({target, transports: ['websocket']}, size, 31), {target: ECHO(), size});
  assert.deepStrictEqual(log.errors, []);
  assert.strictEqual(rt.n, size);
  assert.strictEqual(rt.mismatch, -1, `first wrong byte at ${rt.mismatch}`);
  assert.strictEqual(rt.transport, 'websocket');
  assert.strictEqual(rt.bufferedAfter, 0);
  assert.ok(await loans() > before, 'the session was lent to a bulk thread');
  console.log(`  websocket: 48 MiB echoed in ${rt.ms} ms, ${rt.messages} messages`);
  await page.close();
});

test.describe('through a proxy', () => {
  test('WebSocket blocked (400 to every upgrade): automatic choice falls back and still works', async () => {
    proxy.blockUpgrade = true;
    const refusedBefore = proxy.upgradesRefused;
    try {
      const page = await newPage(proxy.origin);
      const {log, rt} = await page.evaluate((target) => T.roundTrip({target}, 1024 * 1024, 11), ECHO());
      assert.ok(proxy.upgradesRefused > refusedBefore, 'the WebSocket was tried first');
      assert.strictEqual(rt.transport, 'stream');
      assert.strictEqual(rt.mismatch, -1);
      assert.strictEqual(rt.n, MIB);
      assert.deepStrictEqual(log.errors, []);
      assert.deepStrictEqual(log.transports, ['stream']);
      await page.close();
    } finally {
      proxy.blockUpgrade = false;
    }
  });

  for (const t of ['stream', 'poll', 'websocket']) {
    test(`connections cut mid-transfer: ${t} resumes with nothing lost or repeated`, async () => {
      const page = await newPage(proxy.origin);
      const size = 4 * MIB;
      // Cut every connection (both sides) a quarter and then a half of the way
      // through the data coming back; each cut loses whatever was in flight.
      proxy.cutAt(size / 4, size / 2);
      const {log, rt} = await page.evaluate(({transports, target, size}) =>
        T.roundTrip({target, transports, debug: true}, size, 23), {transports: [t], target: ECHO(), size});
      const kills = proxy.cutsDone;
      proxy.cutAt();
      assert.strictEqual(kills, 2, 'connections were cut twice');
      const lost = rt.logs.filter((l) => /connection lost/.test(l));
      assert.ok(lost.length >= 1, 'the socket saw its connection drop and re-attached:\n' + rt.logs.join('\n'));
      assert.deepStrictEqual(log.errors, [], 'the socket said:\n' + rt.logs.slice(-40).join('\n') +
        '\nthe proxy saw:\n' + proxy.events.slice(-60).join('\n') +
        '\nnetwine answered:\n' + netwine.accessTail(40));
      assert.strictEqual(rt.n, size);
      assert.strictEqual(rt.mismatch, -1, `first wrong byte at ${rt.mismatch}`);
      assert.strictEqual(rt.transport, t);
      assert.deepStrictEqual(log.close, {code: 4000, reason: 'round trip done', wasClean: true});
      await page.close();
    });
  }

  // A stream that ends (cut, or recycled) when everything has been delivered is
  // re-attached to a quiet session: nothing is waiting to be sent down it. Chrome's
  // XMLHttpRequest shows no headers before the first body byte, so the socket must
  // still learn at once that the new stream works, or close() waits for it in vain.
  test('an idle stream cut: the re-attach is seen at once and close() ends cleanly', async () => {
    const page = await newPage(proxy.origin);
    await page.evaluate(async (target) => {
      const logs = window.idleLogs = [];
      const log = console.log;
      console.log = function (...args) {
        if (typeof args[0] === 'string' && args[0].startsWith('[netwine]')) logs.push(args[0]);
        return log.apply(this, args);
      };
      const s = window.idle = await T.open({target, transports: ['stream'], text: true, debug: true,
        closeTimeout: 5000});
      s.send('quiet after this\n');
      await T.waitFor(() => s.log.text === 'quiet after this\n', 10000, 'the echo');
    }, ECHO());
    assert.ok(proxy.killAll() > 0, 'the stream went through the proxy');
    const r = await page.evaluate(async () => {
      const s = window.idle;
      await T.waitFor(() => window.idleLogs.some((l) => /connection lost/.test(l)), 10000, 'the cut to be seen');
      s.close(1000, 'done');
      const t0 = performance.now();
      await T.closed(s);
      return {log: s.log, ms: Math.round(performance.now() - t0), logs: window.idleLogs};
    });
    assert.deepStrictEqual(r.log.errors, [], 'the socket said:\n' + r.logs.slice(-20).join('\n') +
      '\nthe proxy saw:\n' + proxy.events.slice(-20).join('\n'));
    assert.deepStrictEqual(r.log.close, {code: 1000, reason: 'done', wasClean: true});
    assert.strictEqual(r.log.text, 'quiet after this\n');
    assert.ok(r.logs.some((l) => /re-attaching with stream/.test(l)), r.logs.join('\n'));
    await page.close();
  });

  test('a polled session upgrades to a WebSocket mid-session', async () => {
    const page = await newPage(proxy.origin);
    const r = await page.evaluate(async () => {
      const s = await T.open({target: 'demo', transports: ['poll', 'websocket'], text: true});
      const first = s.transport;
      await T.waitFor(() => s.transport === 'websocket', 10000, 'the upgrade');
      s.send('after the upgrade\r\n');
      await T.waitFor(() => s.log.text.includes('echo: after the upgrade'), 5000, 'echo');
      s.close();
      await T.closed(s);
      return {first, log: s.log};
    });
    assert.strictEqual(r.first, 'poll');
    assert.deepStrictEqual(r.log.transports, ['poll', 'websocket']);
    assert.deepStrictEqual(r.log.errors, []);
    await page.close();
  });
});

test.describe('outside the page', () => {
  test('netwine.js runs under Node with the ws package as its WebSocket', async () => {
    const Netwine = require('../../js-client/netwine.js');
    const s = new Netwine.Socket(netwine.origin + '/netwine', {target: 'demo', transports: ['websocket'], text: true,
      WebSocket: require('ws')});
    let text = '';
    const closed = new Promise((resolve) => { s.onclose = resolve; });
    s.onmessage = (e) => {
      text += e.data;
      if (text.includes('help')) s.send('upper node\r\n');
      if (text.includes('NODE\r\n')) s.close(4000, 'done');
    };
    const e = await closed;
    assert.strictEqual(s.transport, 'websocket');
    assert.deepStrictEqual([e.code, e.reason, e.wasClean], [4000, 'done', true]);
    assert.match(text, /NODE\r\n$/);
  });
});

test.describe('pages', () => {
  test('netwine.mjs imports as an ES module in the browser', async () => {
    const page = await newPage(netwine.origin);
    const js = path.join(H.ROOT, 'js-client');
    await page.route('**/esm/*', (route) => {
      const name = path.basename(new URL(route.request().url()).pathname);
      route.fulfill({contentType: 'text/javascript', body: fs.readFileSync(path.join(js, name), 'utf8')});
    });
    const r = await page.evaluate(async () => {
      const m = await import('/esm/netwine.mjs');
      const s = new m.Socket('/netwine', {target: 'demo', transports: ['poll'], text: true});
      const text = await new Promise((resolve) => { s.onmessage = (e) => { resolve(e.data); s.close(); }; });
      return {version: m.version, same: m.default.Socket === m.Socket, OPEN: m.OPEN, text};
    });
    assert.deepStrictEqual(r, {version: '0.1.0', same: true, OPEN: 1, text: r.text});
    assert.match(r.text, /^Welcome/);
    await page.close();
  });

  test('the demo page talks to the demo service on each transport; screenshot', async () => {
    fs.mkdirSync(ARTIFACTS, {recursive: true});
    const page = await browser.newPage({viewport: {width: 1200, height: 780}});
    await page.goto(netwine.origin + '/?transport=poll');
    await page.waitForSelector('#line:not([disabled])', {timeout: 10000});
    assert.strictEqual(await page.textContent('#via'), 'poll');
    for (const [button, want] of [['stream', 'stream'], ['auto', 'websocket']]) {
      await page.click(`#transport button[data-t="${button}"]`);
      await page.waitForFunction((w) => document.querySelector('#via').textContent === w &&
        !document.querySelector('#line').disabled, want, {timeout: 10000});
    }
    for (const line of ['hello netwine', 'upper grüße', 'reverse stressed', 'time', 'help']) {
      await page.fill('#line', line);
      await page.press('#line', 'Enter');
    }
    await page.waitForFunction(() => document.querySelector('#out').textContent.includes('commands: help'), null, {timeout: 5000});
    const out = await page.textContent('#out');
    assert.match(out, /echo: hello netwine/);
    assert.match(out, /desserts/);
    await page.screenshot({path: path.join(ARTIFACTS, 'demo.png')});
    // Leave the session open for the status page, with some traffic on it.
    await page.fill('#line', 'x'.repeat(20000));
    await page.press('#line', 'Enter');

    const status = await browser.newPage({viewport: {width: 1200, height: 900}});
    await status.goto(netwine.origin + '/status.html');
    await status.waitForFunction(() => /demo/.test(document.querySelector('#rows').textContent), null, {timeout: 10000});
    for (let i = 0; i < 3; i++) {
      await page.fill('#line', 'y'.repeat(30000 * (i + 1)));
      await page.press('#line', 'Enter');
      await status.waitForTimeout(1100);
    }
    const rows = await status.textContent('#rows');
    assert.match(rows, /127\.0\.0\.1/);
    assert.match(rows, /open/);
    assert.notStrictEqual(await status.textContent('#c-total'), '–');
    await status.screenshot({path: path.join(ARTIFACTS, 'status.png'), fullPage: true});
    await page.click('#connect');
    await page.waitForFunction(() => /closed: 1000/.test(document.querySelector('#out').textContent), null, {timeout: 5000});
    await status.close();
    await page.close();
  });
});
