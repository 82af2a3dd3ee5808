/* The demo page: a terminal on the demo line service through netwine.js. ES5. */
(function () {
  'use strict';

  var MAX_LINES = 2000;
  var $ = function (id) { return document.getElementById(id); };
  var out = $('out'), input = $('line'), form = $('form'), button = $('connect');
  var statePill = $('state'), stateText = $('state-text'), via = $('via'), stats = $('stats');
  var targetInput = $('target'), title = $('title'), seg = $('transport');

  var params = parseQuery(window.location.search);
  var mode = pick(params.transport, ['auto', 'websocket', 'stream', 'poll'], 'auto');
  var sock = null, partial = '', partialTimer = null, up = 0, down = 0;
  var history = [], historyPos = 0;

  if (params.target) targetInput.value = params.target;

  function parseQuery(q) {
    var r = {}, parts = q.replace(/^\?/, '').split('&'), i, kv;
    for (i = 0; i < parts.length; i++) {
      if (!parts[i]) continue;
      kv = parts[i].split('=');
      r[decodeURIComponent(kv[0])] = decodeURIComponent((kv[1] || '').replace(/\+/g, ' '));
    }
    return r;
  }
  function pick(v, allowed, dflt) { return allowed.indexOf(v) >= 0 ? v : dflt; }

  function bytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }

  function print(text, cls) {
    var atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
    var div = document.createElement('div');
    div.className = 'ln' + (cls ? ' ' + cls : '');
    div.textContent = text;
    out.appendChild(div);
    while (out.childNodes.length > MAX_LINES) out.removeChild(out.firstChild);
    if (atBottom || cls === 'me') out.scrollTop = out.scrollHeight;
  }

  function setState(name) {
    statePill.className = 'pill ' + name;
    stateText.textContent = name;
    var open = name === 'open';
    input.disabled = !open;
    button.textContent = name === 'closed' ? 'Connect' : 'Disconnect';
    button.className = name === 'closed' ? 'btn' : 'btn stop';
    if (open) input.focus();
  }

  function updateStats() {
    stats.innerHTML = '&uarr; ' + bytes(up) + ' &nbsp; &darr; ' + bytes(down);
  }

  // Text arrives in chunks that need not end at a line: print whole lines, and a
  // trailing partial one (a prompt, say) once nothing more came for a moment.
  function receive(text) {
    var lines, i;
    partial += text;
    lines = partial.split('\n');
    partial = lines.pop();
    for (i = 0; i < lines.length; i++) print(lines[i].replace(/\r$/, ''));
    clearTimeout(partialTimer);
    if (partial) {
      partialTimer = setTimeout(function () {
        if (partial) print(partial.replace(/\r$/, ''));
        partial = '';
      }, 150);
    }
  }

  function connect() {
    var target = targetInput.value.replace(/^\s+|\s+$/g, '') || 'demo';
    var transports = mode === 'auto' ? ['websocket', 'stream', 'poll'] : [mode];
    var s;
    up = down = 0;
    updateStats();
    title.textContent = target;
    print('connecting to ' + target + (mode === 'auto' ? ' (automatic transport)' : ' over ' + mode) + '\u2026', 'sys');
    setState('connecting');
    via.textContent = '\u2014';
    try {
      s = sock = new Netwine.Socket('/netwine', {target: target, transports: transports, text: true});
    } catch (e) {
      print(e.message, 'err');
      setState('closed');
      return;
    }
    window.netwineDemoSocket = s;  // for curious people with a console (and the tests)
    s.addEventListener('transportchange', function (e) {
      if (s !== sock) return;
      via.textContent = e.transport;
      if (e.previous) print('transport: ' + e.previous + ' \u2192 ' + e.transport, 'sys');
    });
    s.onopen = function () {
      if (s !== sock) return;
      print('connected via ' + s.transport, 'sys');
      setState('open');
    };
    s.onmessage = function (e) {
      if (s !== sock) return;
      down += unescape(encodeURIComponent(e.data)).length;
      updateStats();
      receive(e.data);
    };
    s.onerror = function (e) {
      if (s !== sock) return;
      print('error: ' + (e.message || 'connection failed'), 'err');
    };
    s.onclose = function (e) {
      if (s !== sock) return;
      if (partial) receive('\n');
      print('closed: ' + e.code + (e.reason ? ' ' + e.reason : '') + (e.wasClean ? '' : ' (not clean)'),
        e.code === 1000 || e.code === 4000 ? 'sys' : 'err');
      sock = null;
      setState('closed');
      via.textContent = '\u2014';
    };
  }

  function disconnect() {
    if (!sock) return;
    setState('closing');
    sock.close(1000, 'closed from the demo page');
  }

  button.onclick = function () {
    if (sock) disconnect();
    else connect();
  };

  function selectMode(m) {
    var buttons = seg.getElementsByTagName('button'), i, on;
    mode = m;
    for (i = 0; i < buttons.length; i++) {
      on = buttons[i].getAttribute('data-t') === m;
      buttons[i].className = on ? 'on' : '';
      buttons[i].setAttribute('aria-checked', on ? 'true' : 'false');
    }
  }
  seg.onclick = function (e) {
    var t = e.target && e.target.getAttribute && e.target.getAttribute('data-t');
    if (!t || t === mode) return;
    selectMode(t);
    if (sock) {
      var old = sock;
      sock = null;
      old.onclose = null;
      old.close(1000, 'switching transport');
      print('closed to switch transport', 'sys');
      connect();
    }
  };

  form.onsubmit = function (e) {
    e.preventDefault();
    var line = input.value;
    if (!sock || sock.readyState !== Netwine.OPEN) return;
    print(line, 'me');
    sock.send(line + '\r\n');
    up += unescape(encodeURIComponent(line)).length + 2;
    updateStats();
    if (line && history[history.length - 1] !== line) history.push(line);
    historyPos = history.length;
    input.value = '';
  };
  input.onkeydown = function (e) {
    if (e.key === 'ArrowUp' || e.keyCode === 38) {
      if (historyPos > 0) input.value = history[--historyPos];
      e.preventDefault();
    } else if (e.key === 'ArrowDown' || e.keyCode === 40) {
      historyPos = Math.min(history.length, historyPos + 1);
      input.value = history[historyPos] || '';
      e.preventDefault();
    }
  };

  selectMode(mode);
  if (params.connect !== '0') connect();
}());
