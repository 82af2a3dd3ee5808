/* The status page: polls /netwine/status each second and draws throughput and
   sessions over the last two minutes. ES5, no libraries. */
(function () {
  'use strict';

  var URL = 'netwine/status';
  var INTERVAL = 1000;          // ms between samples
  var WINDOW = 120;             // samples kept (two minutes)
  var COLORS = {down: '#7cc4ff', up: '#b48cff', sessions: '#5fd38d', grid: '#263142', text: '#8795a8'};

  var $ = function (id) { return document.getElementById(id); };
  var samples = [];             // {t, down, up, sessions}: rates in bytes/s
  var last = null;              // previous totals, for rates
  var timer = null;

  function bytes(n, digits) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(digits === undefined ? 1 : digits)) + ' ' + units[i];
  }
  function age(s) {
    if (s < 60) return s.toFixed(0) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' m ' + Math.floor(s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' m';
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c];
    });
  }

  function banner(text) {
    var b = $('banner');
    b.textContent = text || '';
    b.className = text ? 'banner show' : 'banner';
  }

  function fetchStatus() {
    var xhr = new XMLHttpRequest();
    xhr.open('GET', URL, true);
    xhr.onreadystatechange = function () {
      var data, msg;
      if (xhr.readyState !== 4) return;
      if (xhr.status === 200) {
        try {
          data = JSON.parse(xhr.responseText);
        } catch (e) {
          banner('status answer is not JSON: ' + e.message);
          return schedule();
        }
        banner('');
        update(data);
      } else if (xhr.status === 0) {
        banner('netwine is not answering; retrying\u2026');
      } else {
        try { msg = JSON.parse(xhr.responseText).message; } catch (e2) { msg = xhr.statusText; }
        banner('status unavailable (' + xhr.status + '): ' + (msg || '') +
          (xhr.status === 403 ? ' \u2014 add this address to --admin-allow to see it.' : ''));
      }
      schedule();
    };
    xhr.send(null);
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(fetchStatus, INTERVAL);
  }

  function update(d) {
    var now = Date.now(), dt, s = {t: now, down: 0, up: 0, sessions: d.sessions_open || 0};
    if (last) {
      dt = Math.max(0.001, (now - last.t) / 1000);
      s.down = Math.max(0, (d.bytes_down_total - last.down) / dt);
      s.up = Math.max(0, (d.bytes_up_total - last.up) / dt);
    }
    last = {t: now, down: d.bytes_down_total || 0, up: d.bytes_up_total || 0};
    samples.push(s);
    while (samples.length > WINDOW) samples.shift();

    $('c-open').textContent = d.sessions_open;
    $('c-total').textContent = d.sessions_opened_total;
    $('c-down').innerHTML = esc(bytes(d.bytes_down_total)) + ' <small>' + esc(bytes(s.down)) + '/s</small>';
    $('c-up').innerHTML = esc(bytes(d.bytes_up_total)) + ' <small>' + esc(bytes(s.up)) + '/s</small>';
    $('updated').textContent = 'updated ' + new Date(now).toLocaleTimeString() + (d.version ? ' \u00b7 netwine ' + d.version : '');
    table(d.sessions || []);
    redraw();
  }

  // Up first, so that down (usually the larger) is drawn on top when they match.
  function redraw() {
    draw($('chart'), [{key: 'up', color: COLORS.up}, {key: 'down', color: COLORS.down}], true);
    draw($('sessions-chart'), [{key: 'sessions', color: COLORS.sessions}], false);
  }

  function table(list) {
    var html = [], i, x, t;
    if (!list.length) {
      $('rows').innerHTML = '<tr><td colspan="9" class="empty">no open sessions \u2014 open the <a href="./">demo</a> in another tab</td></tr>';
      return;
    }
    list.sort(function (a, b) { return a.age - b.age; });
    for (i = 0; i < list.length; i++) {
      x = list[i];
      t = x.transport || 'none';
      html.push('<tr><td>' + esc(x.id) + '</td><td>' + esc(x.client) + '</td><td>' + esc(x.target) +
        '</td><td><span class="badge ' + esc(t) + '">' + esc(t) + '</span></td><td>' + esc(x.transports || '') +
        '</td><td class="state-' + esc(x.state) + '">' + esc(x.state) + '</td><td class="num">' + age(x.age || 0) +
        '</td><td class="num">' + bytes(x.bytes_up || 0) + '</td><td class="num">' + bytes(x.bytes_down || 0) + '</td></tr>');
    }
    $('rows').innerHTML = html.join('');
  }

  // A line chart of the samples' series over the whole window, sharp on HiDPI.
  function draw(canvas, series, asBytes) {
    var dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    var ctx = canvas.getContext('2d'), padL = 74, padR = 10, padT = 10, padB = 22;
    var max = 0, i, j, v, x, y, step, ticks, label, cw, ch;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    cw = w - padL - padR;
    ch = h - padT - padB;
    for (i = 0; i < samples.length; i++) {
      for (j = 0; j < series.length; j++) max = Math.max(max, samples[i][series[j].key]);
    }
    max = niceMax(max || (asBytes ? 1024 : 1), asBytes);
    ticks = 4;
    ctx.font = '11px ui-monospace, "DejaVu Sans Mono", monospace';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (i = 0; i <= ticks; i++) {
      v = max * i / ticks;
      y = padT + ch - ch * i / ticks;
      ctx.strokeStyle = COLORS.grid;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(padL, Math.round(y) + 0.5);
      ctx.lineTo(w - padR, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = COLORS.text;
      label = asBytes ? rateLabel(v) : String(Math.round(v));
      ctx.fillText(label, padL - 8, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (i = 0; i <= 4; i++) {
      x = padL + cw * i / 4;
      ctx.fillText(i === 4 ? 'now' : '-' + Math.round((WINDOW - WINDOW * i / 4) * INTERVAL / 1000) + ' s', x, padT + ch + 6);
    }
    step = cw / (WINDOW - 1);
    for (j = 0; j < series.length; j++) {
      if (!samples.length) break;
      ctx.beginPath();
      for (i = 0; i < samples.length; i++) {
        x = padL + cw - (samples.length - 1 - i) * step;
        y = padT + ch - ch * samples[i][series[j].key] / max;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      }
      ctx.strokeStyle = series[j].color;
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.stroke();
      // a soft fill under the line
      ctx.lineTo(padL + cw, padT + ch);
      ctx.lineTo(padL + cw - (samples.length - 1) * step, padT + ch);
      ctx.closePath();
      ctx.globalAlpha = 0.12;
      ctx.fillStyle = series[j].color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
  }

  // An axis label: as few digits as the value needs ("100 KiB/s", "2.5 MiB/s").
  function rateLabel(v) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (v >= 10 || v === Math.round(v) ? Math.round(v) : v.toFixed(1)) + ' ' + units[i] + '/s';
  }

  // A round axis maximum at or above v: 1-2-5 steps in the right binary unit for
  // bytes; a multiple of the four grid steps for session counts.
  function niceMax(v, asBytes) {
    var unit = 1, scaled, mag, n;
    if (!asBytes) return Math.max(4, Math.ceil(v / 4) * 4);
    while (v / unit >= 1024 && unit < Math.pow(1024, 4)) unit *= 1024;
    scaled = v / unit;
    mag = Math.pow(10, Math.floor(Math.log(scaled) / Math.LN10));
    n = scaled / mag;
    n = n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10;
    return n * mag * unit;
  }

  window.addEventListener('resize', redraw);
  fetchStatus();
}());
