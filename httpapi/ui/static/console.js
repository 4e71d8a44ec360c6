// atomfed operator console. Plain JavaScript, no framework, no build step.
//
// Every datum comes from the JSON API with the token given on the login
// page, kept in sessionStorage (this tab only) and sent only in the
// Authorization header. Pages stay live with blocking queries
// (?index=N&wait=...) on the endpoints that support them, and with a
// short poll on those that do not (Serf members, coordinates, policy
// status, this server's health). All text from the API is escaped before
// it reaches the page; the Content-Security-Policy allows no inline script.
'use strict';

(function () {
  const TOKEN_KEY = 'atomfed.console.token';
  const LAG_WINDOW_MS = 10 * 60 * 1000; // lag charts keep the last 10 minutes
  const PROBE_BUDGET_MS = 500; // P6: intra-region latency budget
  const MAX_TENANT_WATCHES = 25;

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let self = null; // GET /v1/token/self
  const store = {}; // watcher name -> {data, error, at}
  const watchers = {}; // watcher name -> AbortController
  const lagHistory = {}; // tenant -> mirror -> [{t, lag, bytes, state}]
  const verified = {}; // audit entry hash -> verification result
  const openDetails = new Set();
  let lastHTML = '';
  let renderQueued = false;
  let armed = ''; // the token accessor whose Revoke button was clicked once

  const $ = (id) => document.getElementById(id);

  // ---- escaping and formatting -------------------------------------------

  function esc(v) {
    return String(v === undefined || v === null ? '' : v)
      .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
  }
  function badge(status, text) {
    const s = String(status || 'unknown').replace(/[^a-z_]/g, '');
    return '<span class="badge s-' + s + '">' + esc(text || status || 'unknown') + '</span>';
  }
  function fmtTime(ns) {
    if (!ns) return '';
    return new Date(ns / 1e6).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }
  function fmtAgo(ms) {
    const s = Math.round(ms / 1000);
    if (s < 0) return 'in ' + fmtDur(-s);
    return fmtDur(s) + ' ago';
  }
  function fmtDur(s) {
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }
  function fmtLag(sec) {
    if (sec === undefined || sec === null) return '';
    return sec < 1 ? Math.round(sec * 1000) + ' ms' : sec.toFixed(2) + ' s';
  }
  function idOf(prefix, s) {
    return prefix + '-' + String(s).replace(/[^A-Za-z0-9_-]/g, '_');
  }

  // ---- API ---------------------------------------------------------------

  async function api(path, opts) {
    opts = opts || {};
    const headers = { Authorization: 'Bearer ' + token };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method: opts.method || 'GET', headers: headers, signal: opts.signal,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (!res.ok) {
      const detail = body && body.error ? body.error : { code: 'http_' + res.status, message: res.statusText };
      const err = new Error(detail.code + ': ' + detail.message);
      err.status = res.status;
      err.code = detail.code;
      throw err;
    }
    return { body: body, index: Number(res.headers.get('X-Atomfed-Index') || 0) };
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  // watch keeps store[name] fresh: a blocking query that passes back the
  // index it was answered, or a poll every `every` ms for endpoints
  // without blocking queries. One answer a second at most per watcher.
  function watch(name, path, opt) {
    opt = opt || {};
    if (watchers[name]) return;
    const ctl = new AbortController();
    watchers[name] = ctl;
    (async function loop() {
      let index = 0;
      while (!ctl.signal.aborted) {
        const started = Date.now();
        try {
          let url = path;
          if (opt.blocking !== false && index > 0) url += (path.indexOf('?') < 0 ? '?' : '&') + 'index=' + index + '&wait=55s';
          const r = await api(url, { signal: ctl.signal });
          if (ctl.signal.aborted) return;
          index = r.index < index ? 0 : r.index; // backwards: a restore; start again
          store[name] = { data: r.body, at: Date.now() };
          if (opt.onData) opt.onData(r.body);
          changed();
          if (opt.blocking === false || !r.index) {
            await sleep(opt.every || 5000, ctl.signal);
            continue;
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
          if (e.status === 401) { logout('The server refused the token: ' + e.message); return; }
          if (e.status === 404 && opt.absentOK) {
            // Nothing there yet (a tenant that never switched over): not
            // an error; look again later.
            store[name] = { data: null, at: Date.now() };
            changed();
            await sleep(opt.every || 5000, ctl.signal);
            continue;
          }
          store[name] = Object.assign({}, store[name], { error: e.message, errorAt: Date.now() });
          changed();
          await sleep(opt.every && opt.every > 3000 ? opt.every : 3000, ctl.signal);
          continue;
        }
        const spent = Date.now() - started;
        if (spent < 1000) await sleep(1000 - spent, ctl.signal);
      }
    })();
  }

  function unwatch(name) {
    if (watchers[name]) { watchers[name].abort(); delete watchers[name]; }
    delete store[name];
  }

  function data(name) { return store[name] && store[name].data; }
  function errorOf(name) {
    const s = store[name];
    return s && s.error && (!s.at || s.errorAt > s.at) ? s.error : '';
  }

  // ---- session -------------------------------------------------------------

  async function login(t) {
    token = t;
    const r = await api('/v1/token/self');
    self = r.body;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  }

  function logout(why) {
    for (const n of Object.keys(watchers)) unwatch(n);
    for (const k of Object.keys(store)) delete store[k];
    for (const k of Object.keys(lagHistory)) delete lagHistory[k];
    token = '';
    self = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('nav').hidden = true;
    $('who').hidden = true;
    $('page').innerHTML = '';
    lastHTML = '';
    $('token-form-section').hidden = true;
    $('token-form-result').textContent = '';
    $('login').hidden = false;
    $('login-error').textContent = why || '';
    $('token').focus();
  }

  function isOperator() { return !!self && self.role === 'operator'; }

  function start() {
    $('login').hidden = true;
    $('nav').hidden = false;
    $('who').hidden = false;
    $('who-text').textContent = self.role + ' token ' + (self.accessor === 'bootstrap' ? 'bootstrap' : String(self.accessor).slice(0, 8)) +
      (self.description ? ' (' + self.description + ')' : '');
    $('nav-tokens').hidden = !isOperator();
    watch('regions', '/v1/regions');
    watch('agents', '/v1/agents');
    watch('tenants', '/v1/tenants', { onData: watchTenants });
    watch('replication', '/v1/replication');
    watch('approvals', '/v1/approvals');
    watch('peers', '/v1/status/peers', { blocking: false, every: 5000 });
    watch('members', '/v1/members', { blocking: false, every: 5000 });
    watch('coordinates', '/v1/coordinates', { blocking: false, every: 5000 });
    watch('health', '/health', { blocking: false, every: 3000 });
    if (!location.hash || location.hash === '#') location.hash = '#/map';
    route();
  }

  // watchTenants keeps one blocking query per tenant's replication (up to
  // MAX_TENANT_WATCHES), so that every lag chart collects points while the
  // console is open, whichever page is shown.
  function watchTenants(body) {
    const list = (body && body.tenants) || [];
    const want = new Set(list.slice(0, MAX_TENANT_WATCHES).map((t) => t.id));
    for (const n of Object.keys(watchers)) {
      if (n.startsWith('repl:') && !want.has(n.slice(5))) unwatch(n);
    }
    for (const id of want) {
      watch('repl:' + id, '/v1/tenants/' + encodeURIComponent(id) + '/replication', { onData: (r) => recordLag(id, r) });
    }
  }

  // recordLag adds one point per mirror report (a new reported_at).
  function recordLag(id, r) {
    const now = Date.now();
    const h = lagHistory[id] || (lagHistory[id] = {});
    for (const m of (r && r.mirrors) || []) {
      const pts = h[m.region] || (h[m.region] = []);
      const key = m.reported_at || 0;
      const last = pts[pts.length - 1];
      if (m.state === 'pending' || (last && last.key === key)) continue;
      pts.push({ t: now, key: key, lag: Number(m.lag_seconds) || 0, bytes: m.lag_bytes || 0, state: m.state });
      while (pts.length && pts[0].t < now - LAG_WINDOW_MS) pts.shift();
    }
  }

  // ---- rendering -------------------------------------------------------------

  function changed() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
  }

  function currentRoute() {
    const parts = (location.hash || '#/map').slice(2).split('/');
    let arg = '';
    try { arg = parts.slice(1).map(decodeURIComponent).join('/'); } catch (e) { arg = ''; } // a malformed link
    return { page: parts[0] || 'map', arg: arg };
  }

  // route starts and stops the watchers only one page needs.
  function route() {
    if (!self) return;
    const r = currentRoute();
    const want = {};
    if (r.page === 'audit') want.audit = '/v1/status/audit?commands=true&recent=64';
    if (r.page === 'policies') want.policy = '/v1/policy/status';
    if (r.page === 'tokens' && isOperator()) want.tokens = '/v1/tokens';
    if (r.page === 'backups') want.backups = '/v1/backups';
    if (r.page === 'tenant' && r.arg) {
      want['route-read:' + r.arg] = '/v1/route?tenant=' + encodeURIComponent(r.arg) + '&op=read';
      want['route-write:' + r.arg] = '/v1/route?tenant=' + encodeURIComponent(r.arg) + '&op=write';
      want['switchover:' + r.arg] = '/v1/tenants/' + encodeURIComponent(r.arg) + '/switchover';
    }
    for (const n of Object.keys(watchers)) {
      if (/^(audit|policy|tokens|backups|route-read:|route-write:|switchover:)/.test(n) && !(n in want)) unwatch(n);
    }
    for (const n of Object.keys(want)) {
      if (n === 'policy') watch(n, want[n], { blocking: false, every: 10000 });
      else if (n.startsWith('switchover:')) watch(n, want[n], { absentOK: true });
      else if (n === 'audit') watch(n, want[n], { onData: verifyAudit });
      else watch(n, want[n]);
    }
    for (const a of document.querySelectorAll('#nav a')) {
      const on = a.dataset.page === r.page || (r.page === 'tenant' && a.dataset.page === 'tenants');
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    $('token-form-section').hidden = !(r.page === 'tokens' && isOperator());
    lastHTML = '';
    render();
  }

  function render() {
    if (!self) return;
    const r = currentRoute();
    const pages = { map: pageMap, tenants: pageTenants, tenant: pageTenant, approvals: pageApprovals,
      policies: pagePolicies, audit: pageAudit, cluster: pageCluster, tokens: pageTokens, backups: pageBackups };
    const fn = pages[r.page] || pageMap;
    let html;
    try {
      html = fn(r.arg);
    } catch (e) {
      // An answer this console does not understand (a newer server?):
      // say so on the page, and keep the other pages working.
      console.error('console: drawing ' + r.page + ': ' + e.message);
      html = '<h1>' + esc(r.page) + '</h1><p class="error" role="alert">This page could not be drawn from the answers of the API: ' + esc(e.message) + '</p>';
    }
    updateChrome();
    if (html === lastHTML) return;
    const focused = document.activeElement && document.activeElement.id;
    const page = $('page');
    for (const d of page.querySelectorAll('details[id]')) { if (d.open) openDetails.add(d.id); else openDetails.delete(d.id); }
    page.innerHTML = html;
    lastHTML = html;
    for (const id of openDetails) { const d = document.getElementById(id); if (d) d.open = true; }
    if (focused) { const el = document.getElementById(focused); if (el && el !== document.activeElement) el.focus(); }
    document.title = (page.querySelector('h1') ? page.querySelector('h1').textContent + ' · ' : '') + 'atomfed console';
  }

  function updateChrome() {
    const aps = (data('approvals') && data('approvals').approvals) || [];
    const pending = aps.filter((a) => a.status === 'pending').length;
    $('pending-count').textContent = pending ? String(pending) : '';
    $('pending-count').setAttribute('aria-label', pending ? pending + ' pending' : '');
    const errs = Object.keys(store).filter((n) => errorOf(n));
    $('live').textContent = errs.length ? 'reconnecting (' + errs.length + ')' : 'live';
  }

  function errorBox(...names) {
    const msgs = names.map(errorOf).filter(Boolean);
    return msgs.length ? '<p class="error" role="alert">' + msgs.map(esc).join('<br>') + '</p>' : '';
  }
  function loading(name) { return data(name) === undefined ? '<p class="empty">Loading…</p>' : ''; }

  // ---- map -----------------------------------------------------------------

  // rttMS is the Vivaldi estimate between two Serf coordinates (as Serf
  // computes it), in milliseconds.
  function rttMS(a, b) {
    let sum = 0;
    for (let i = 0; i < a.vec.length; i++) { const d = a.vec[i] - (b.vec[i] || 0); sum += d * d; }
    let dist = Math.sqrt(sum) + a.height + b.height;
    const adj = dist + a.adjustment + b.adjustment;
    if (adj > 0) dist = adj;
    return dist * 1000;
  }

  // regionRTTs returns the closest node pair's RTT for each pair of regions.
  function regionRTTs() {
    const coords = data('coordinates') || [];
    const out = {};
    for (let i = 0; i < coords.length; i++) {
      for (let j = i + 1; j < coords.length; j++) {
        const a = coords[i], b = coords[j];
        if (!a.region || !b.region || a.region === b.region) continue;
        const key = [a.region, b.region].sort().join('|');
        const v = rttMS(a, b);
        if (!(key in out) || v < out[key]) out[key] = v;
      }
    }
    return out;
  }

  function leaderRegion() {
    const p = (data('peers') || []).find((x) => x.leader);
    return p ? { id: p.id, region: p.region } : null;
  }

  function pageMap() {
    const regions = (data('regions') && data('regions').regions) || [];
    const agents = (data('agents') && data('agents').agents) || [];
    const leader = leaderRegion();
    const rtts = regionRTTs();
    // Equirectangular, latitudes 75 N to 60 S (where regions are).
    const W = 1000, H = 500, N = 75, S = -60;
    const py = (lat) => (N - lat) / (N - S) * H;
    const xy = (r) => [((r.location ? r.location.lon : 0) + 180) / 360 * W, py(r.location ? r.location.lat : 0)];
    let svg = '<svg class="map" id="map" viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-labelledby="map-title map-desc">' +
      '<title id="map-title">Regions by location</title><desc id="map-desc">' +
      esc(regions.map((r) => r.name + ': ' + r.health.status).join('; ') || 'no regions') + '. The table beside the map holds the same data.</desc>';
    for (let lon = -150; lon <= 150; lon += 30) svg += '<line class="grat" x1="' + (lon + 180) / 360 * W + '" y1="0" x2="' + (lon + 180) / 360 * W + '" y2="' + H + '"/>';
    for (let lat = -60; lat <= 60; lat += 30) svg += '<line class="grat" x1="0" y1="' + py(lat) + '" x2="' + W + '" y2="' + py(lat) + '"/>' +
      '<text class="land-label" x="6" y="' + (py(lat) - 4) + '">' + (lat === 0 ? 'equator' : Math.abs(lat) + '°' + (lat > 0 ? 'N' : 'S')) + '</text>';
    for (let i = 0; i < regions.length; i++) {
      for (let j = i + 1; j < regions.length; j++) {
        const a = regions[i], b = regions[j];
        const key = [a.name, b.name].sort().join('|');
        if (!(key in rtts)) continue; // no node of one of them has a coordinate
        const [x1, y1] = xy(a), [x2, y2] = xy(b);
        const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
        svg += '<line class="link" x1="' + x1 + '" y1="' + y1 + '" x2="' + x2 + '" y2="' + y2 + '"/>' +
          '<g class="rtt-label" data-link="' + esc(key) + '"><rect class="rtt-bg" x="' + (mx - 38) + '" y="' + (my - 14) + '" width="76" height="20" rx="3"/>' +
          '<text class="rtt" x="' + mx + '" y="' + (my + 2) + '" text-anchor="middle">' + rtts[key].toFixed(1) + ' ms</text></g>';
      }
    }
    for (const r of regions) {
      const [x, y] = xy(r);
      const h = r.health || {};
      const isLeader = leader && leader.region === r.name;
      const probe = h.probe ? (h.probe.ok ? Math.round(h.probe.latency_ms) + ' ms' : 'probe failing') : 'no probe';
      svg += '<g class="region" data-region="' + esc(r.name) + '" data-health="' + esc(h.status) + '">' +
        (isLeader ? '<circle class="leader-ring" cx="' + x + '" cy="' + y + '" r="19"/>' : '') +
        '<circle class="dot h-' + esc(h.status) + '" cx="' + x + '" cy="' + y + '" r="13"/>' +
        '<text class="name" x="' + (x + 22) + '" y="' + (y - 5) + '">' + esc(r.name) + (isLeader ? ' ★ leader' : '') + '</text>' +
        '<text class="detail" x="' + (x + 22) + '" y="' + (y + 15) + '">' + esc(h.status) + ' · agents ' + esc(h.agents_alive || 0) + '/' + esc(h.agents_total || 0) + ' · ' + esc(probe) + '</text></g>';
    }
    svg += '</svg>';

    let rows = '';
    for (const r of regions) {
      const h = r.health || {};
      const ra = agents.filter((a) => a.region === r.name);
      const failed = ra.filter((a) => a.status === 'failed').map((a) => a.node);
      const p = h.probe;
      const lat = p ? (p.ok ? p.latency_ms : null) : null;
      const within = lat !== null && lat <= PROBE_BUDGET_MS;
      rows += '<tr data-region="' + esc(r.name) + '"><th scope="row">' + esc(r.name) + (leader && leader.region === r.name ? ' <span class="badge s-leader">leader</span>' : '') + '</th>' +
        '<td class="health">' + badge(h.status) + (h.reason ? '<br><small>' + esc(h.reason) + '</small>' : '') + '</td>' +
        '<td>' + esc(h.agents_alive || 0) + ' alive of ' + esc(h.agents_total || 0) + (failed.length ? '<br><small>failed: ' + esc(failed.join(', ')) + '</small>' : '') + '</td>' +
        '<td>' + (p ? (p.ok ? budgetBar(lat) + ' ' + lat.toFixed(1) + ' ms ' + (within ? badge('pass', 'within 500 ms') : badge('block', 'over 500 ms')) : badge('block', 'failing') + ' <small>' + esc(p.error) + '</small>') + '<br><small>' + fmtAgo(Date.now() - p.at / 1e6) + '</small>' : '<span class="empty">none yet</span>') + '</td>' +
        '<td>' + esc(r.tier) + ', ' + esc(r.status) + '</td></tr>';
    }
    const links = Object.keys(rtts).sort().map((k) => '<li>' + esc(k.replace('|', ' ↔ ')) + ': ' + rtts[k].toFixed(1) + ' ms</li>').join('');
    return '<h1>Map</h1>' + errorBox('regions', 'agents', 'peers', 'coordinates') + loading('regions') +
      '<div class="grid"><div>' + svg + '<p class="help">Colour is health (green healthy, amber degraded, red down, grey unknown); the ringed region holds the Raft leader' +
      (leader ? ' (' + esc(leader.id) + ')' : '') + '. Dashed lines carry the round-trip time estimated from Serf coordinates, closest nodes of the two regions.</p></div>' +
      '<div><table id="regions-table"><caption>Regions</caption><thead><tr><th scope="col">Region</th><th scope="col">Health</th><th scope="col">Agents</th><th scope="col">Last probe (budget 500 ms, P6)</th><th scope="col">Tier, status</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="5" class="empty">No region registered.</td></tr>') + '</tbody></table>' +
      '<h2>Measured RTT between regions</h2>' + (links ? '<ul>' + links + '</ul>' : '<p class="empty">No coordinates yet.</p>') + '</div></div>';
  }

  function budgetBar(ms) {
    const w = Math.min(ms / PROBE_BUDGET_MS, 1) * 100;
    return '<span class="bar" role="img" aria-label="' + ms.toFixed(0) + ' ms of the 500 ms budget"><svg width="100%" height="100%" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">' +
      '<rect x="0" y="0" width="' + w.toFixed(1) + '" height="10" fill="' + (ms <= PROBE_BUDGET_MS ? '#059669' : '#dc2626') + '"/></svg></span>';
  }

  // ---- tenants -----------------------------------------------------------------

  // chart draws a series of lag samples (seconds, or bytes with
  // field 'bytes') as an SVG line.
  function chart(points, w, h, label, field) {
    field = field || 'lag';
    const fmt = field === 'bytes' ? (v) => Math.round(v) + ' B' : fmtLag;
    const now = Date.now();
    // The window grows from one minute to LAG_WINDOW_MS as samples age;
    // the scale from 100 ms (or 1 KiB) to the peak.
    const span = Math.min(LAG_WINDOW_MS, Math.max(60000, points.length ? now - points[0].t : 0));
    points = points.map((p) => ({ t: p.t, lag: Number(p[field]) || 0 }));
    const max = Math.max(field === 'bytes' ? 1024 : 0.1, ...points.map((p) => p.lag));
    const x = (t) => (w - 4) * (1 - (now - t) / span) + 2;
    const y = (v) => h - 2 - (h - 4) * (v / max);
    const path = points.map((p) => x(p.t).toFixed(1) + ',' + y(p.lag).toFixed(1)).join(' ');
    const lastLag = points.length ? fmt(points[points.length - 1].lag) : 'no sample';
    let s = '<svg class="chart lag-chart" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + ' ' + h + '" role="img" data-points="' + points.length + '" aria-label="' +
      esc(label + ': ' + points.length + ' samples over the last ' + fmtDur(Math.round(span / 1000)) + ', latest ' + lastLag + ', peak ' + fmt(Math.max(0, ...points.map((p) => p.lag)))) + '">' +
      '<line class="axis" x1="2" y1="' + (h - 2) + '" x2="' + (w - 2) + '" y2="' + (h - 2) + '"/>';
    if (points.length > 1) s += '<polyline class="line" points="' + path + '"/>';
    for (const p of points.slice(-60)) s += '<circle class="pt" cx="' + x(p.t).toFixed(1) + '" cy="' + y(p.lag).toFixed(1) + '" r="1.8"/>';
    if (h > 60) s += '<text x="4" y="12">' + esc(fmt(max)) + '</text><text x="4" y="' + (h - 6) + '">0</text><text x="' + (w - 4) + '" y="' + (h - 6) + '" text-anchor="end">now</text><text x="' + (w / 2) + '" y="' + (h - 6) + '" text-anchor="middle">−' + esc(fmtDur(Math.round(span / 2000))) + '</text>';
    return s + '</svg>';
  }

  function summaryOf(id) {
    const s = data('replication');
    return ((s && s.tenants) || []).find((t) => t.tenant === id);
  }

  function pageTenants() {
    const tenants = (data('tenants') && data('tenants').tenants) || [];
    let rows = '';
    for (const t of tenants) {
      const repl = data('repl:' + t.id);
      const sum = summaryOf(t.id);
      const mirrors = ((repl && repl.mirrors) || []).filter((m) => m.ensure !== 'absent');
      const lag = mirrors.map((m) => '<div class="mirror" data-mirror="' + esc(m.region) + '">' + esc(m.region) + ' ' + badge(m.state) + ' ' + esc(fmtLag(m.lag_seconds)) + '<br>' +
        chart(((lagHistory[t.id] || {})[m.region]) || [], 180, 36, 'lag of ' + t.id + ' at ' + m.region) + '</div>').join('');
      rows += '<tr data-tenant="' + esc(t.id) + '"><th scope="row"><a id="' + idOf('t', t.id) + '" href="#/tenant/' + encodeURIComponent(t.id) + '">' + esc(t.id) + '</a></th>' +
        '<td>' + esc(t.home_region) + '</td><td>' + esc((t.mirrors || []).join(', ') || '—') + '</td>' +
        '<td>' + esc(t.sync_mode || 'async') + (sum && sum.sync_state ? ' (' + esc(sum.sync_state) + ')' : '') + '</td><td>' + esc(t.epoch || 0) + '</td>' +
        '<td>' + (sum ? badge(sum.status) + (sum.reasons && sum.reasons.length ? '<br><small>' + esc(sum.reasons.join('; ')) + '</small>' : '') : '') + '</td>' +
        '<td>' + (lag || (t.mirrors && t.mirrors.length ? '<span class="empty">waiting for reports</span>' : '—')) + '</td></tr>';
    }
    return '<h1>Tenants</h1>' + errorBox('tenants', 'replication') + loading('tenants') +
      (tenants.length > MAX_TENANT_WATCHES ? '<p class="notice">Lag charts follow the first ' + MAX_TENANT_WATCHES + ' tenants.</p>' : '') +
      '<table id="tenants-table"><caption>Tenants, their placement and replication (lag over the last 10 minutes, kept in this tab)</caption><thead><tr>' +
      '<th scope="col">Tenant</th><th scope="col">Home</th><th scope="col">Mirrors</th><th scope="col">Sync mode</th><th scope="col">Epoch</th><th scope="col">Replication</th><th scope="col">Lag per mirror</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="7" class="empty">No tenant.</td></tr>') + '</tbody></table>';
  }

  function routeBlock(name, op) {
    const r = data(name);
    if (!r) return '<p class="empty">' + (errorOf(name) ? esc(errorOf(name)) : 'Asking…') + '</p>';
    const alts = (r.alternatives || []).map((a) => '<li>' + esc(a.region) + ' ' + badge(a.eligible ? 'ok' : 'none', a.eligible ? 'eligible' : 'not eligible') + ' <small>' + esc(a.reason) + '</small></li>').join('');
    return '<p><strong>' + esc(op) + ' → ' + esc(r.region) + '</strong>' + (r.app_url ? ' (' + esc(r.app_url) + ')' : '') + ': ' + esc(r.reason) + '</p>' + (alts ? '<ul>' + alts + '</ul>' : '');
  }

  function pageTenant(id) {
    const t = ((data('tenants') && data('tenants').tenants) || []).find((x) => x.id === id);
    if (!t) return '<h1>Tenant ' + esc(id) + '</h1>' + loading('tenants') + (data('tenants') ? '<p class="error">No such tenant.</p>' : '') + '<p><a href="#/tenants">All tenants</a></p>';
    const repl = data('repl:' + id) || {};
    const sum = summaryOf(id);
    let out = '<h1>Tenant ' + esc(id) + '</h1><p><a href="#/tenants">All tenants</a></p>' + errorBox('repl:' + id) +
      '<dl class="kv"><dt>Home</dt><dd>' + esc(t.home_region) + '</dd><dt>Mirrors</dt><dd>' + esc((t.mirrors || []).join(', ') || 'none') + '</dd>' +
      '<dt>Sync mode</dt><dd>' + esc(t.sync_mode || 'async') + (t.sync_mode === 'sync' ? ' (fallback ' + esc(t.sync_fallback || 'degrade') + ')' : '') + '</dd>' +
      (repl.sync ? '<dt>Sync state</dt><dd>recorded ' + esc(repl.sync.recorded || '—') + ', current ' + esc(repl.sync.current || '—') + '</dd>' : '') +
      '<dt>Epoch</dt><dd>' + esc(t.epoch || 0) + '</dd><dt>Replication</dt><dd>' + (sum ? badge(sum.status) : badge(repl.status)) + ' ' + esc((repl.reasons || []).join('; ')) + '</dd>' +
      '<dt>Labels</dt><dd>' + esc(Object.entries(t.labels || {}).map(([k, v]) => k + '=' + v).join(', ') || '—') + '</dd></dl>';
    const mirrors = repl.mirrors || [];
    out += '<h2>Mirrors</h2><table id="mirrors-table"><caption>Replication per mirror</caption><thead><tr><th scope="col">Mirror</th><th scope="col">State</th><th scope="col">Lag</th><th scope="col">Lag (seconds), last 10 minutes at most</th><th scope="col">Bytes behind</th><th scope="col">Last error</th></tr></thead><tbody>' +
      (mirrors.map((m) => '<tr data-mirror="' + esc(m.region) + '"><th scope="row">' + esc(m.region) + (m.ensure === 'absent' ? ' (being removed)' : '') + '</th><td>' + badge(m.state) + '</td><td>' + esc(fmtLag(m.lag_seconds)) + '<br><small>' + esc(m.lag_bytes || 0) + ' bytes</small></td>' +
        '<td>' + chart(((lagHistory[id] || {})[m.region]) || [], 360, 90, 'lag of ' + id + ' at ' + m.region) + '</td>' +
        '<td>' + chart(((lagHistory[id] || {})[m.region]) || [], 240, 90, 'bytes behind of ' + id + ' at ' + m.region, 'bytes') + '</td><td>' + (m.last_error ? esc(m.last_error.code + ': ' + (m.last_error.message || '')) : '—') + '</td></tr>').join('') ||
        '<tr><td colspan="6" class="empty">No mirror.</td></tr>') + '</tbody></table>';
    out += switchoverBlock(id);
    out += '<h2>Routing answer</h2>' + routeBlock('route-write:' + id, 'write') + routeBlock('route-read:' + id, 'read');
    out += '<h2>Tables</h2><table><caption>Tables and their PII columns (names only: PII never leaves the home region)</caption><thead><tr><th scope="col">Table</th><th scope="col">PII columns</th></tr></thead><tbody>' +
      ((t.tables || []).map((x) => '<tr><th scope="row">' + esc(x.name) + '</th><td>' + esc((x.pii_columns || []).join(', ') || '—') + '</td></tr>').join('') || '<tr><td colspan="2" class="empty">No table: nothing is replicated.</td></tr>') + '</tbody></table>';
    const drift = ((data('replication') && data('replication').drift) || []).filter((d) => d.kind === 'tenant' && d.name === id);
    out += '<h2>Divergence reports</h2>' + (drift.length ? '<table><thead><tr><th scope="col">Table</th><th scope="col">Region</th><th scope="col">Source</th><th scope="col">Reason</th><th scope="col">Since</th></tr></thead><tbody>' +
      drift.map((d) => '<tr><td>' + esc(d.table) + '</td><td>' + esc(d.region) + '</td><td>' + esc(d.source_region) + '</td><td>' + esc(d.reason) + '</td><td>' + esc(fmtTime(d.since)) + '</td></tr>').join('') + '</tbody></table>' : '<p class="empty">No schema drift reported.</p>');
    if (repl.publisher) out += '<h2>Publisher at ' + esc(t.home_region) + '</h2><p>' + badge(repl.publisher.state) + ' publication <code>' + esc(repl.publisher.publication) + '</code></p>';
    return out;
  }

  // switchoverBlock is the tenant's running or last switchover: its phase,
  // where from and to, and every step it went through.
  function switchoverBlock(id) {
    const name = 'switchover:' + id;
    const w = data(name);
    let out = '<h2>Switchover</h2>' + errorBox(name) + loading(name);
    if (w === null) return out + '<p class="empty" id="switchover-none">No switchover of this tenant yet. Start one with <code>atomfed tenant switchover ' + esc(id) + ' --to REGION</code>.</p>';
    if (!w) return out;
    out += '<dl class="kv" id="switchover"><dt>Phase</dt><dd>' + badge(w.phase === 'done' ? 'ok' : w.phase === 'aborted' ? 'error' : 'pending', w.phase) +
      (w.active ? ' <small>writes are held (503) until the commit</small>' : '') + '</dd>' +
      '<dt>From, to</dt><dd>' + esc(w.from) + ' → ' + esc(w.to) + (w.others && w.others.length ? ' <small>(followed by ' + esc(w.others.join(', ')) + ')</small>' : '') + '</dd>' +
      '<dt>Epoch</dt><dd>' + esc(w.from_epoch) + ' → ' + esc(w.new_epoch) + '</dd>' +
      (w.fenced_lsn ? '<dt>Fenced at</dt><dd class="mono">' + esc(w.fenced_lsn) + '</dd>' : '') +
      '<dt>Started</dt><dd>' + esc(fmtTime(w.started_at)) + (w.ended_at ? ', ended ' + esc(fmtTime(w.ended_at)) + ' (' + esc(((w.ended_at - w.started_at) / 1e9).toFixed(2)) + ' s)' : '') + '</dd>' +
      (w.error ? '<dt>Why it rolled back</dt><dd>' + esc(w.error) + '</dd>' : '') + '</dl>';
    out += '<table id="switchover-steps"><caption>Steps of switchover ' + esc(w.id) + '</caption><thead><tr><th scope="col">Phase</th><th scope="col">At</th><th scope="col">Index</th><th scope="col">Detail</th></tr></thead><tbody>' +
      (w.steps || []).map((st) => '<tr data-phase="' + esc(st.phase) + '"><th scope="row">' + esc(st.phase) + '</th><td>' + esc(fmtTime(st.at)) + '</td><td>' + esc(st.index) + '</td><td>' + esc(st.detail || '') + '</td></tr>').join('') +
      '</tbody></table>';
    return out;
  }

  // ---- backups -----------------------------------------------------------------

  function pageBackups() {
    const b = data('backups');
    const regions = (b && b.regions) || [];
    const now = Date.now();
    const running = (b && b.running) || [];
    const rrows = regions.map((h) => {
      const lv = h.last_verified;
      const run = running.find((x) => x.region === h.region);
      const state = h.simulated ? badge('none', 'simulated') : h.stale ? badge('block', 'stale') : badge('verified', 'verified');
      return '<tr data-region="' + esc(h.region) + '"><th scope="row">' + esc(h.region) + '</th><td>' + state + (h.warning ? '<br><small>' + esc(h.warning) + '</small>' : '') + '</td>' +
        '<td>' + (lv ? '<span class="mono">' + esc(lv.id) + '</span> ' + esc(lv.type) + '<br><small>' + esc(lv.label || '') + ', ' + esc(fmtDur(Number(h.age_seconds) || 0)) + ' old</small>' : '<span class="empty">none</span>') + '</td>' +
        '<td>' + (run ? esc(run.id) + ' ' + badge(run.status) + (run.progress ? ' <small>' + esc(run.progress.phase) + (run.progress.percent ? ' ' + esc(Number(run.progress.percent).toFixed(0)) + '%' : '') + '</small>' : '') : '—') + '</td>' +
        '<td>' + (h.last_drill ? badge(h.last_drill.verdict) + ' <small>' + esc(fmtAgo(now - h.last_drill.at / 1e6)) + '</small>' : '<span class="empty">none</span>') +
        (h.drill_stale && !h.simulated ? ' ' + badge('block', 'no recent passed drill') : '') + '</td></tr>';
    }).join('');
    const crows = ((b && b.backups) || []).slice(0, 20).map((x) => '<tr data-backup="' + esc(x.id) + '"><th scope="row" class="mono">' + esc(x.id) + '</th><td>' + esc(x.region) + '</td><td>' + esc(x.type) + '</td><td>' + badge(x.status) +
      (x.status === 'succeeded' ? ' ' + (x.verified ? badge('verified') : badge('block', 'not verified')) : '') + (x.error ? '<br><small>' + esc(x.error) + '</small>' : '') + '</td>' +
      '<td>' + esc(x.size_bytes ? (x.size_bytes / 1048576).toFixed(1) + ' MiB' : '') + (x.repo_size_bytes ? '<br><small>' + esc((x.repo_size_bytes / 1048576).toFixed(1)) + ' MiB stored</small>' : '') + '</td>' +
      '<td class="mono"><small>' + esc(x.wal_start ? x.wal_start + ' … ' + x.wal_stop : '') + '</small></td><td>' + esc(x.drill ? x.drill.verdict : '—') + '</td></tr>').join('');
    return '<h1>Backups</h1>' + errorBox('backups') + loading('backups') +
      '<p class="help">Each region\'s PostgreSQL is backed up with pgBackRest by one of its agents and verified after every backup; restore drills restore the newest verified backup and compare every table. Take one now with <code>atomfed backup run REGION --wait</code>.</p>' +
      '<table id="backup-regions"><caption>Backups per region</caption><thead><tr><th scope="col">Region</th><th scope="col">State</th><th scope="col">Newest verified backup</th><th scope="col">Running</th><th scope="col">Last restore drill</th></tr></thead><tbody>' +
      (rrows || '<tr><td colspan="5" class="empty">No region.</td></tr>') + '</tbody></table>' +
      '<table id="backup-catalog"><caption>Catalog, newest first (20 at most)</caption><thead><tr><th scope="col">Backup</th><th scope="col">Region</th><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Size</th><th scope="col">WAL range</th><th scope="col">Drill</th></tr></thead><tbody>' +
      (crows || '<tr><td colspan="7" class="empty">No backup yet.</td></tr>') + '</tbody></table>';
  }

  // ---- approvals -------------------------------------------------------------

  function pageApprovals() {
    const aps = (data('approvals') && data('approvals').approvals) || [];
    const pending = aps.filter((a) => a.status === 'pending');
    const closed = aps.filter((a) => a.status !== 'pending').slice(-20).reverse();
    const now = Date.now();
    let rows = '';
    for (const a of pending) {
      const cmd = 'atomfed approve ' + a.id;
      rows += '<tr data-approval="' + esc(a.id) + '"><th scope="row" class="mono">' + esc(a.id) + '</th><td>' + esc(a.action) + '</td><td>' + esc(a.summary) + '<br><small>requested by ' + esc(a.requested_by) + '</small>' +
        '<details id="' + idOf('apcmd', a.id) + '"><summary>The command it applies</summary><pre>' + esc(commandText(a)) + '</pre></details></td>' +
        '<td>' + (a.votes || []).length + ' of ' + esc(a.required) + ((a.votes || []).length ? '<br><small>by ' + esc(a.votes.map((v) => v.approver).join(', ')) + '</small>' : '') +
        (a.approvers && a.approvers.length ? '<br><small>approvers: ' + esc(a.approvers.join(', ')) + '</small>' : '') + '</td>' +
        '<td>' + esc(fmtTime(a.expires_at)) + '<br><small>' + esc(fmtAgo(now - a.expires_at / 1e6)) + '</small></td>' +
        '<td><div class="cmd"><code id="' + idOf('cmd', a.id) + '">' + esc(cmd) + '</code><button type="button" class="secondary" id="' + idOf('copy', a.id) + '" data-copy="' + esc(cmd) + '" aria-label="Copy the command ' + esc(cmd) + '">Copy</button></div></td></tr>';
    }
    const crow = closed.map((a) => '<tr data-approval="' + esc(a.id) + '"><th scope="row" class="mono">' + esc(a.id) + '</th><td>' + esc(a.action) + '</td><td>' + esc(a.summary) + '</td><td>' + badge(a.status) + (a.result ? ' <small>' + esc(a.result) + '</small>' : '') + '</td><td>' + esc((a.votes || []).map((v) => v.approver).join(', ')) + '</td></tr>').join('');
    return '<h1>Approvals</h1>' + errorBox('approvals') + loading('approvals') +
      '<p class="help">An approver signs with their own key, outside the browser: run the command with <code>--key</code> or <code>COSIGN_KEY_PATH</code> naming the approver key, against any server.</p>' +
      '<table id="pending-approvals"><caption>Pending approvals</caption><thead><tr><th scope="col">ID</th><th scope="col">Action</th><th scope="col">What it would do</th><th scope="col">Votes</th><th scope="col">Expires</th><th scope="col">Command</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="6" class="empty">No pending approval.</td></tr>') + '</tbody></table>' +
      '<table id="closed-approvals"><caption>Recently closed</caption><thead><tr><th scope="col">ID</th><th scope="col">Action</th><th scope="col">Summary</th><th scope="col">Outcome</th><th scope="col">Approved by</th></tr></thead><tbody>' +
      (crow || '<tr><td colspan="5" class="empty">None.</td></tr>') + '</tbody></table>';
  }

  // commandText is the approval's command as it will be logged (its body
  // is JSON, codec 1), for the approvers to read before they sign.
  function commandText(a) {
    try {
      return JSON.stringify(JSON.parse(new TextDecoder().decode(b64ToBytes(a.command))), null, 2);
    } catch (e) {
      return '(command type ' + a.command_type + ', ' + b64ToBytes(a.command || '').length + ' bytes, not JSON)';
    }
  }

  // ---- policies ----------------------------------------------------------------

  function pagePolicies() {
    const st = data('policy');
    const ps = (st && st.policies) || [];
    const rows = ps.map((p) => '<tr data-policy="' + esc(p.id) + '"><th scope="row">' + esc(p.id) + '</th><td>' + esc(p.title) + '</td><td>' + badge(p.status) + '</td><td>' + esc(p.reason) + '</td>' +
      '<td>' + (p.evidence ? '<details id="' + idOf('ev', p.id) + '"><summary>Evidence</summary><pre>' + esc(JSON.stringify(p.evidence, null, 2)) + '</pre></details>' : '—') + '</td></tr>').join('');
    return '<h1>Policies</h1>' + errorBox('policy') + loading('policy') +
      (st ? '<p>As evaluated by ' + esc(st.node) + ' (' + esc(st.region) + ') at ' + esc(st.generated_at) + ': ' + esc(st.summary.pass) + ' pass, ' + esc(st.summary.block) + ' block, ' + esc(st.summary.not_evaluated) + ' not evaluated. Refreshed every 10 s.</p>' : '') +
      '<table id="policies-table"><caption>Policies P1-P7</caption><thead><tr><th scope="col">ID</th><th scope="col">Policy</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Evidence</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="5" class="empty">No policy evaluated yet.</td></tr>') + '</tbody></table>';
  }

  // ---- audit chain -------------------------------------------------------------

  function hexToBytes(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }
  function b64ToBytes(b64) {
    const s = atob(b64 || '');
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  // linkHash is sha256(prev || index as 8 bytes big-endian || type || body),
  // hex: fsm/audit.go chainHash.
  async function linkHash(prevHex, index, type, body) {
    const buf = new Uint8Array(32 + 8 + 1 + body.length);
    buf.set(hexToBytes(prevHex), 0);
    let n = BigInt(index);
    for (let i = 7; i >= 0; i--) { buf[32 + i] = Number(n & 0xffn); n >>= 8n; }
    buf[40] = type;
    buf.set(body, 41);
    const d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
    return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // verifyAudit recomputes every link after the first from the one before
  // and the log entry at its index; the first served entry is the anchor.
  async function verifyAudit(st) {
    const recent = (st && st.recent) || [];
    const logs = {};
    for (const l of (st && st.log) || []) logs[l.index] = l;
    const used = {}; // index -> next command to try
    for (let i = 0; i < recent.length; i++) {
      const e = recent[i];
      if (verified[e.hash]) { if (verified[e.hash].cmd !== undefined) used[e.index] = verified[e.hash].cmd + 1; continue; }
      if (i === 0) continue; // the anchor: nothing before it was served
      const prev = recent[i - 1].hash;
      const l = logs[e.index];
      if (!l || l.unavailable) { verified[e.hash] = { status: 'unavailable', why: l ? l.unavailable : 'the log entry was not served' }; continue; }
      const cmds = l.commands || [];
      let res = null;
      for (let k = used[e.index] || 0; k < cmds.length; k++) {
        if (cmds[k].withheld) continue;
        if (await linkHash(prev, e.index, cmds[k].type, b64ToBytes(cmds[k].body)) === e.hash) { res = { status: 'verified', why: 'recomputed from the entry before and log entry ' + e.index, cmd: k }; break; }
      }
      if (!res && cmds.some((c) => c.withheld)) res = { status: 'withheld', why: 'this token may not read the command (token commands: operator only)' };
      if (!res) res = { status: 'broken', why: 'no command of log entry ' + e.index + ' hashes to this entry from the one before' };
      if (res.cmd !== undefined) used[e.index] = res.cmd + 1;
      verified[e.hash] = res;
    }
    changed();
  }

  function pageAudit() {
    const st = data('audit');
    const recent = ((st && st.recent) || []).slice().reverse();
    const anchor = recent.length ? recent[recent.length - 1].hash : '';
    const verdict = (e) => verified[e.hash] || (e.hash === anchor ? { status: 'anchor', why: 'the oldest entry served: the chain is checked from here' } : { status: 'pending', why: 'checking' });
    const counts = {};
    for (const e of recent) { const s = verdict(e).status; counts[s] = (counts[s] || 0) + 1; }
    const headOK = st && st.recent && st.recent.length ? st.recent[st.recent.length - 1].hash === st.head : false;
    const rows = recent.map((e) => {
      const v = verdict(e);
      return '<tr data-index="' + esc(e.index) + '" data-verify="' + esc(v.status) + '"><td>' + esc(e.index) + '</td><td>' + esc(e.type) + '</td><td>' + esc(fmtTime(e.at)) + '</td>' +
        '<td class="hash">' + esc(e.hash) + '</td><td>' + badge(v.status) + '<br><small>' + esc(v.why) + '</small></td><td>' + esc(e.note || '') + '</td></tr>';
    }).join('');
    const broken = counts.broken || 0;
    return '<h1>Audit chain</h1>' + errorBox('audit') + loading('audit') +
      (st ? '<dl class="kv" id="audit-summary"><dt>Head</dt><dd class="hash">' + esc(st.head) + '</dd><dt>At index</dt><dd>' + esc(st.index) + '</dd>' +
        '<dt>Verified in this browser</dt><dd id="audit-verdict" data-broken="' + broken + '" data-verified="' + (counts.verified || 0) + '">' +
        (broken ? badge('broken', broken + ' broken link(s)') : badge('verified', (counts.verified || 0) + ' links recomputed')) +
        ' · ' + (counts.withheld || 0) + ' withheld from this token · ' + (counts.unavailable || 0) + ' not in the log · newest entry ' + (headOK ? 'is the head' : 'is not the head') + '</dd></dl>' : '') +
      '<p class="help">Each entry\'s hash is sha256(previous hash ‖ index, 8 bytes big-endian ‖ command type ‖ command body). The browser recomputes every link from the entry before it and the Raft log entry the server serves with it; equal heads on two servers mean equal histories.</p>' +
      '<table id="audit-table"><caption>The most recent entries, newest first</caption><thead><tr><th scope="col">Index</th><th scope="col">Entry</th><th scope="col">At</th><th scope="col">Hash</th><th scope="col">Verification</th><th scope="col">Note</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="6" class="empty">No entry.</td></tr>') + '</tbody></table>';
  }

  // ---- cluster ---------------------------------------------------------------

  function pageCluster() {
    const h = data('health');
    const peers = data('peers') || [];
    const members = data('members') || [];
    return '<h1>Cluster</h1>' + errorBox('health', 'peers', 'members') +
      (h ? '<h2>This server</h2><dl class="kv" id="this-server"><dt>Node</dt><dd>' + esc(h.node) + ' (' + esc(h.region) + ')</dd><dt>Raft state</dt><dd>' + esc(h.raft_state) + '</dd>' +
        '<dt>Leader</dt><dd>' + esc(h.leader || 'none known') + '</dd><dt>Term</dt><dd>' + esc(h.term) + '</dd><dt>Commit index</dt><dd>' + esc(h.commit_index) + '</dd>' +
        '<dt>Applied index</dt><dd>' + esc(h.applied_index) + '</dd><dt>Version</dt><dd>' + esc(h.version) + '</dd></dl>' : loading('health')) +
      '<table id="peers-table"><caption>Raft peers</caption><thead><tr><th scope="col">Server</th><th scope="col">Region</th><th scope="col">Address</th><th scope="col">Suffrage</th><th scope="col">Role</th><th scope="col">Serf</th></tr></thead><tbody>' +
      (peers.map((p) => '<tr><th scope="row">' + esc(p.id) + '</th><td>' + esc(p.region) + '</td><td class="mono">' + esc(p.address) + '</td><td>' + esc(p.suffrage) + '</td><td>' + (p.leader ? badge('leader', 'leader') : 'follower') + '</td><td>' + (p.serf_status ? badge(p.serf_status) : '') + '</td></tr>').join('') ||
        '<tr><td colspan="6" class="empty">No peer.</td></tr>') + '</tbody></table>' +
      '<table id="members-table"><caption>Serf members</caption><thead><tr><th scope="col">Member</th><th scope="col">Role</th><th scope="col">Region</th><th scope="col">Address</th><th scope="col">Status</th><th scope="col">Refused</th></tr></thead><tbody>' +
      (members.map((m) => '<tr><th scope="row">' + esc(m.name) + '</th><td>' + esc(m.role) + '</td><td>' + esc(m.region) + '</td><td class="mono">' + esc(m.addr) + '</td><td>' + badge(m.status) + '</td><td>' + esc(m.refused || '') + '</td></tr>').join('') ||
        '<tr><td colspan="6" class="empty">No member.</td></tr>') + '</tbody></table>';
  }

  // ---- tokens (operator) ----------------------------------------------------

  function pageTokens() {
    if (!isOperator()) {
      return '<h1>Tokens</h1><p class="notice">Managing tokens needs an operator token; this is a ' + esc(self.role) + ' token.</p>';
    }
    const toks = (data('tokens') && data('tokens').tokens) || data('tokens') || [];
    const list = Array.isArray(toks) ? toks : [];
    const readers = list.filter((t) => t.role === 'reader');
    return '<h1>Tokens</h1>' + errorBox('tokens') + loading('tokens') +
      '<p class="help">The console manages reader tokens only: it revokes them here and creates them below. Other tokens are managed with <code>atomfed token</code>.</p>' +
      '<table id="tokens-table"><caption>Reader tokens</caption><thead><tr><th scope="col">Accessor</th><th scope="col">Description</th><th scope="col">Created</th><th scope="col">Action</th></tr></thead><tbody>' +
      (readers.map((t) => '<tr data-accessor="' + esc(t.accessor) + '"><th scope="row" class="mono">' + esc(t.accessor) + '</th><td>' + esc(t.description) + '</td><td>' + esc(fmtTime(t.created_at)) + '</td>' +
        '<td>' + (self.accessor === t.accessor ? '' : '<button type="button" class="secondary" id="' + idOf('revoke', t.accessor) + '" data-revoke="' + esc(t.accessor) + '" aria-label="' + (armed === t.accessor ? 'Click again to revoke reader token ' : 'Revoke reader token ') + esc(t.accessor) + '">' + (armed === t.accessor ? 'Click again to revoke' : 'Revoke') + '</button>') + '</td></tr>').join('') ||
        '<tr><td colspan="4" class="empty">No reader token.</td></tr>') + '</tbody></table>';
  }

  // ---- events ------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const input = $('token');
      const t = input.value.trim();
      $('login-error').textContent = '';
      try {
        await login(t);
        input.value = '';
        $('main').focus();
      } catch (e) {
        token = '';
        $('login-error').textContent = e.status === 401 ? 'The server does not know this token (or it was revoked).' : 'Could not log in: ' + e.message;
      }
    });
    $('logout').addEventListener('click', () => logout(''));
    $('token-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const out = $('token-form-result');
      out.textContent = '';
      try {
        const r = await api('/v1/tokens', { method: 'POST', body: { role: 'reader', description: $('token-desc').value } });
        $('token-desc').value = '';
        out.innerHTML = 'Created reader token <code>' + esc(r.body.accessor) + '</code>. Its secret, shown once: <span class="secret">' + esc(r.body.secret) + '</span>';
      } catch (e) {
        out.innerHTML = '<span class="error">' + esc(e.message) + '</span>';
      }
    });
    $('page').addEventListener('click', async (ev) => {
      const copy = ev.target.closest('[data-copy]');
      if (copy) {
        const text = copy.getAttribute('data-copy');
        try { await navigator.clipboard.writeText(text); copy.textContent = 'Copied'; } catch (e) {
          const code = copy.parentElement.querySelector('code');
          const range = document.createRange(); range.selectNodeContents(code);
          const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
          copy.textContent = 'Selected: press Ctrl+C';
        }
        return;
      }
      const rev = ev.target.closest('[data-revoke]');
      if (rev && isOperator()) {
        // Two steps instead of a confirm() dialog: the first click arms
        // the button for 5 s, the second revokes.
        const acc = rev.getAttribute('data-revoke');
        if (armed !== acc) {
          armed = acc;
          changed();
          setTimeout(() => { if (armed === acc) { armed = ''; lastHTML = ''; changed(); } }, 5000);
          return;
        }
        armed = '';
        try { await api('/v1/tokens/' + encodeURIComponent(acc), { method: 'DELETE' }); } catch (e) {
          $('token-form-result').innerHTML = '<span class="error">Could not revoke ' + esc(acc) + ': ' + esc(e.message) + '</span>';
        }
      }
    });
    // A new page takes the focus to the main region, so that a screen
    // reader announces it and Tab starts from its top.
    window.addEventListener('hashchange', () => { route(); $('main').focus(); });
    setInterval(changed, 5000); // relative times ("12 s ago") and chart windows move on
    if (token) {
      login(token).catch((e) => logout(e.status === 401 ? 'The saved token was refused; log in again.' : 'Could not reach the server: ' + e.message));
    } else {
      logout('');
    }
  });
})();
