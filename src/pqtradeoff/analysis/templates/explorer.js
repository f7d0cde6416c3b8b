// The report's explorer (pqtradeoff.analysis.explorer writes its data). Plotly draws; this script wires the
// controls and lists strings. Every text from the data is set with textContent, never parsed as HTML; texts that
// go into plotly's labels (which read a few tags) are escaped first.
(function () {
  'use strict';
  const root = document.getElementById('pq-explorer');
  const DATA = JSON.parse(document.getElementById('pq-explorer-data').textContent);
  const S = DATA.strings;
  const C = DATA.configs;
  const colour = DATA.colours;  // the static figures' colours (matplotlib's tab10, or tab20 past 10 families)
  const families = Object.keys(colour);
  // null: no single temperature (a mixture of adaptors), listed last
  const temperatures = [...new Set(C.map(c => c.temperature))].sort((a, b) => (a === null) - (b === null) || a - b);
  const state = {
    plane: 'imh', reward: DATA.rewards[0], families: new Set(families), temperatures: new Set(temperatures),
    whatIf: true, cloud: true, sort: {key: null, dir: 1},
  };
  const LOCAL = (c, r) => (c.rewards[r] || {}).local;
  const PLANES = {
    imh: {label: 'mean log prior (IMH-corrected)', x: c => c.lp_imh, y: (c, r) => (c.rewards[r] || {}).imh,
      yLabel: 'mean reward (IMH-corrected)'},
    local: {label: 'mean log prior (sampled strings)', x: c => c.lp_local, y: LOCAL,
      yLabel: 'mean reward (sampled strings)'},
    per_token: {label: 'log prior per token (sampled strings)', x: c => (c.lp_tok == null ? null : [c.lp_tok, null]),
      y: LOCAL, yLabel: 'mean reward (sampled strings)'},
    kl: {label: 'KL(q ‖ p₊) (sampled strings, nats)', x: c => c.kl, y: LOCAL, yLabel: 'mean reward (sampled strings)'},
  };
  const KINDS = {analysed: 'analysed', skipped: 'skipped by the correction', 'what-if': 'what-if: estimated from the pool, never sampled'};

  // ------------------------------------------------------------------------------------------ formatting
  function fmt(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return 'n/a';
    const d = digits || 4;
    const a = Math.abs(v);
    let t;
    if (a !== 0 && (a < 1e-4 || a >= 1e7)) t = v.toExponential(d - 1);
    else t = v.toLocaleString('en-US', {maximumSignificantDigits: d, minimumSignificantDigits: Math.min(d, a === 0 ? 1 : d)});
    return t.replace(/^-/, '−');
  }
  function count(v) { return v === null || v === undefined ? 'n/a' : v.toLocaleString('en-US'); }
  function pm(pair) { return pair ? (pair[1] === null ? fmt(pair[0]) : fmt(pair[0]) + ' ± ' + fmt(pair[1])) : 'n/a'; }
  function ci(pair) {
    if (!pair) return 'n/a';
    if (pair[1] === null) return fmt(pair[0]);
    const h = DATA.z * pair[1];
    return fmt(pair[0]) + ' [' + fmt(pair[0] - h) + ', ' + fmt(pair[0] + h) + ']';
  }
  function esc(text) {  // for plotly's labels, which read <b>, <br>, <a> ...
    return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  }
  function wrap(text, width) {  // escaped lines of at most ~width characters, joined by <br>
    const words = String(text).split(/\s+/);
    const lines = [];
    let line = '';
    for (const w of words) {
      if (line && line.length + w.length + 1 > width) { lines.push(line); line = w; } else line = line ? line + ' ' + w : w;
    }
    if (line) lines.push(line);
    return lines.map(esc).join('<br>');
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function shade(hex, t) {  // lighter for lower temperatures: t in [0, 1], 1 = the family's own colour
    const n = parseInt(hex.slice(1), 16);
    const mix = v => Math.round(255 - (255 - v) * (0.35 + 0.65 * t));
    return 'rgb(' + mix(n >> 16) + ',' + mix((n >> 8) & 255) + ',' + mix(n & 255) + ')';
  }
  function temperatureShade(t) {
    if (temperatures.length < 2) return 1;
    return temperatures.indexOf(t) / (temperatures.length - 1);
  }
  const rewardLabel = r => (r === 'reward' ? 'reward' : 'reward ' + r);

  // ------------------------------------------------------------------------------------------ hover text
  function hoverText(c) {
    const r = state.reward;
    const rw = c.rewards[r] || {};
    const lines = ['<b>' + esc(c.adaptor) + '</b>', esc(KINDS[c.kind]) + (c.n ? ' · ' + count(c.n) + ' strings' : '')];
    const conf = Math.round(DATA.confidence * 100) + '% interval';
    if (c.lp_imh) lines.push('IMH-corrected (' + conf + '): ' + esc(rewardLabel(r)) + ' ' + ci(rw.imh) + ', log prior ' + ci(c.lp_imh));
    if (c.lp_local) lines.push('sampled strings: ' + esc(rewardLabel(r)) + ' ' + ci(rw.local) + ', log prior ' + ci(c.lp_local));
    if (c.pool_lp && rw.pool) lines.push('from the what-if pool: ' + esc(rewardLabel(r)) + ' ' + ci(rw.pool) + ', log prior ' + ci(c.pool_lp));
    const ess = [];
    if (c.is_ess != null) ess.push('IS ESS ' + fmt(c.is_ess));
    if (c.chain_ess != null) ess.push('chain ESS ' + fmt(c.chain_ess));
    if (c.pool_ess != null) ess.push('pool ESS ' + fmt(c.pool_ess));
    if (c.local_ess != null) ess.push('local pool ESS ' + fmt(c.local_ess));
    if (ess.length) lines.push(ess.join(' · '));
    if (c.kl) lines.push('KL(q ‖ p₊) ' + pm(c.kl) + (c.lp_tok != null ? ' · log prior per token ' + fmt(c.lp_tok) : ''));
    if (c.reason) lines.push('<i>' + wrap((c.kind === 'analysed' ? 'note: ' : 'skipped: ') + c.reason, 80) + '</i>');
    lines.push(c.kind === 'what-if' ? '(never sampled: no strings to list)' : '(click: its strings below)');
    return lines.join('<br>') + '<extra></extra>';
  }

  // ------------------------------------------------------------------------------------------ the plane
  function shown(c) {
    return state.families.has(c.family) && state.temperatures.has(c.temperature) && (state.whatIf || c.kind !== 'what-if');
  }
  function planeTraces() {
    const plane = PLANES[state.plane];
    const traces = [];
    C.forEach((c, i) => {
      if (!shown(c)) return;
      const x = plane.x(c), y = plane.y(c, state.reward);
      const tint = shade(colour[c.family], temperatureShade(c.temperature));
      const hover = hoverText(c);
      const cloud = (c.cloud || {})[state.reward];
      if (state.plane === 'imh' && state.cloud && cloud && cloud[0].length) {
        traces.push({type: 'scatter', mode: 'markers', x: cloud[0], y: cloud[1], name: c.adaptor, legendgroup: c.adaptor,
          showlegend: false, customdata: cloud[0].map(() => i), hovertemplate: hover,
          marker: {size: 4, color: tint, opacity: 0.25}, meta: {config: i, role: 'cloud'}});
      }
      if (!x || !y) return;
      const symbol = c.kind === 'what-if' ? 'circle-open' : (c.kind === 'skipped' ? 'x' : 'circle');
      traces.push({type: 'scatter', mode: 'markers', x: [x[0]], y: [y[0]], name: c.adaptor, legendgroup: c.adaptor,
        showlegend: false, customdata: [i], hovertemplate: hover, meta: {config: i, role: 'centre'},
        error_x: {type: 'data', array: [x[1] || 0], visible: x[1] != null, color: tint, thickness: 1},
        error_y: {type: 'data', array: [y[1] || 0], visible: y[1] != null, color: tint, thickness: 1},
        marker: {size: c.kind === 'what-if' ? 9 : 11, symbol: symbol, color: tint,
          line: {color: c.frontier ? '#000' : tint, width: c.frontier ? 2 : 1}}});
    });
    return traces;
  }
  function drawPlane() {
    const plane = PLANES[state.plane];
    const layout = {
      margin: {l: 70, r: 20, t: 20, b: 55}, height: 520, hovermode: 'closest', dragmode: 'zoom',
      xaxis: {title: {text: plane.label}, zeroline: false}, showlegend: false,
      yaxis: {title: {text: plane.yLabel.replace('reward', rewardLabel(state.reward))}, zeroline: false},
      hoverlabel: {align: 'left'},
    };
    const traces = planeTraces();
    if (!traces.length) layout.annotations = [{text: 'nothing to show: every configuration is toggled off or has no value on this plane', showarrow: false, xref: 'paper', yref: 'paper', x: 0.5, y: 0.5}];
    return Plotly.react('pq-plane', traces, layout, {displaylogo: false, responsive: true});
  }

  // ------------------------------------------------------------------------------------------ the hexbin
  function drawHexbin() {
    const h = DATA.hexbin[state.reward];
    const box = document.getElementById('pq-hexbin');
    if (!h) { box.textContent = 'No strings of an analysed configuration to bin.'; return Promise.resolve(); }
    const g = h.geometry, cells = h.cells, px = DATA.limits.hex_plot_px;
    const text = cells.count.map((n, k) => count(n) + ' strings<br>log prior ' + fmt(cells.x[k] - g.half_width) + ' to ' +
      fmt(cells.x[k] + g.half_width) + '<br>' + esc(rewardLabel(state.reward)) + ' ' + fmt(cells.y[k] - g.radius_y) + ' to ' +
      fmt(cells.y[k] + g.radius_y) + '<br>(click: ' + (cells.strings[k].length ? 'up to ' + DATA.limits.per_cell + ' of its strings' : 'none embedded') + ')');
    const trace = {type: 'scatter', mode: 'markers', x: cells.x, y: cells.y, text: text, hovertemplate: '%{text}<extra></extra>',
      customdata: cells.count.map((n, k) => k),
      marker: {symbol: 'hexagon', size: g.size_px, color: cells.count.map(n => Math.log10(n)), colorscale: 'Viridis',
        line: {width: 0}, colorbar: {title: {text: 'strings (log₁₀)'}, thickness: 14}}};
    const margin = {l: 70, r: 100, t: 20, b: 55};
    const layout = {margin: margin, width: px[0] + margin.l + margin.r, height: px[1] + margin.t + margin.b, autosize: false,
      hovermode: 'closest', showlegend: false,
      xaxis: {title: {text: 'log prior of the string'}, range: [g.x_range_0, g.x_range_1], zeroline: false},
      yaxis: {title: {text: rewardLabel(state.reward) + ' of the string'}, range: [g.y_range_0, g.y_range_1], zeroline: false}};
    return Plotly.react(box, [trace], layout, {displaylogo: false, responsive: false}).then(() => {
      if (!box.dataset.wired) {
        box.dataset.wired = '1';
        box.on('plotly_relayout', () => {  // keep the hexagons tiling when zoomed
          const hh = DATA.hexbin[state.reward].geometry, xa = box.layout.xaxis.range, ya = box.layout.yaxis.range;
          const scale = Math.min((hh.x_range_1 - hh.x_range_0) / (xa[1] - xa[0]), (hh.y_range_1 - hh.y_range_0) / (ya[1] - ya[0]));
          const size = hh.size_px * scale;
          if (Math.abs(box.data[0].marker.size - size) > 1e-6) Plotly.restyle(box, {'marker.size': size});
        });
        box.on('plotly_click', ev => showCell(ev.points[0].customdata));
      }
    });
  }

  // ------------------------------------------------------------------------------------------ the strings
  const panel = document.getElementById('pq-strings');
  function stringTable(rows) {
    const wrapDiv = el('div', {class: 'scroll'});
    const table = el('table', {class: 'pq-strings'});
    const head = el('tr');
    const rewards = DATA.rewards;
    for (const h of ['prompt', 'completion', ...rewards.map(rewardLabel), 'log prior', 'tokens', 'finished', 'prompt id', 'sample id'])
      head.appendChild(el('th', {class: h === 'prompt' || h === 'completion' ? 'l' : ''}, h));
    const thead = el('thead'); thead.appendChild(head); table.appendChild(thead);
    const body = el('tbody');
    for (const k of rows) {
      const tr = el('tr', {'data-row': S.row[k], 'data-prompt-id': S.prompt_id[k], 'data-sample-id': S.sample_id[k],
        'data-adaptor': S.adaptor[k]});
      const p = S.prompt[k] === null ? null : S.prompts[S.prompt[k]];
      const pc = el('td', {class: 'l text'});
      pc.appendChild(el('span', {class: 'pq-text'}, p ? p[0] : 'n/a'));
      if (p && p[0] === '') pc.appendChild(el('span', {class: 'cut'}, '(empty)'));
      if (p && p[1] > p[0].length) pc.appendChild(el('span', {class: 'cut'}, ' … [' + count(p[1]) + ' characters; the first ' + count(DATA.limits.prompt_chars) + ' shown]'));
      tr.appendChild(pc);
      const tc = el('td', {class: 'l text'});
      tc.appendChild(el('span', {class: 'pq-text'}, S.text[k] === null ? 'n/a' : S.text[k]));
      if (S.text[k] !== null && S.text_length[k] > S.text[k].length) tc.appendChild(el('span', {class: 'cut'}, ' … [' + count(S.text_length[k]) + ' characters; the first ' + count(DATA.limits.text_chars) + ' shown]'));
      tr.appendChild(tc);
      for (const r of rewards) tr.appendChild(el('td', {class: 'num', 'data-reward': r}, fmt(S.rewards[r][k])));
      tr.appendChild(el('td', {class: 'num', 'data-log-prior': ''}, fmt(S.log_prior[k])));
      tr.appendChild(el('td', {}, count(S.length[k])));
      tr.appendChild(el('td', {}, S.finished[k] ? 'yes' : 'no'));
      tr.appendChild(el('td', {}, count(S.prompt_id[k])));
      tr.appendChild(el('td', {}, count(S.sample_id[k])));
      body.appendChild(tr);
    }
    table.appendChild(body);
    wrapDiv.appendChild(table);
    return wrapDiv;
  }
  const position = new Map(S.row.map((r, k) => [r, k]));
  function showConfig(i) {
    const c = C[i];
    panel.replaceChildren();
    panel.dataset.adaptor = c.adaptor;
    panel.appendChild(el('h3', {}, 'Strings of ' + c.adaptor));
    const groups = Object.entries(c.groups || {});
    let intro = KINDS[c.kind] + (c.reason ? ' (' + c.reason + ')' : '') + '. ';
    if (c.kind === 'what-if') intro += 'Never sampled: its estimates come from the pool of the sampled configurations, so it has no strings of its own.';
    else if (!groups.length) intro += 'No usable strings.';
    else intro += count(c.n) + ' usable strings; shown here: ' + groups.map(([g, rows]) => rows.length + ' ' + g).join(', ') +
      ' (each chosen by the analysis seed; a string may appear in several groups). Every string: the scored corpus.';
    panel.appendChild(el('p', {class: 'note'}, intro));
    for (const [g, rows] of groups) {
      if (!rows.length) continue;
      const section = el('div', {class: 'pq-group', 'data-group': g});
      section.appendChild(el('h4', {}, g + ' (' + rows.length + ')'));
      section.appendChild(stringTable(rows.map(r => position.get(r))));
      panel.appendChild(section);
    }
    panel.scrollIntoView({block: 'nearest'});
  }
  const cellPanel = document.getElementById('pq-cell-strings');
  function showCell(k) {
    const h = DATA.hexbin[state.reward], cells = h.cells, g = h.geometry;
    const panel = cellPanel;
    panel.replaceChildren();
    panel.dataset.reward = state.reward;
    panel.dataset.cell = String(k);
    const rows = cells.strings[k];
    panel.appendChild(el('h3', {}, 'Strings of one cell: log prior ' + fmt(cells.x[k] - g.half_width) + ' to ' + fmt(cells.x[k] + g.half_width) +
      ', ' + rewardLabel(state.reward) + ' ' + fmt(cells.y[k] - g.radius_y) + ' to ' + fmt(cells.y[k] + g.radius_y)));
    panel.appendChild(el('p', {class: 'note'}, count(cells.count[k]) + ' strings lie in this hexagon; ' + rows.length +
      ' drawn at random are shown (the rest: the scored corpus).'));
    const section = el('div', {class: 'pq-group', 'data-group': 'cell'});
    section.appendChild(stringTable(rows.map(r => position.get(r))));
    panel.appendChild(section);
    panel.scrollIntoView({block: 'nearest'});
  }

  // ------------------------------------------------------------------------------------------ the table
  const COLUMNS = [
    {key: 'adaptor', label: 'adaptor', text: c => c.adaptor, value: c => c.adaptor},
    {key: 'kind', label: 'kind', text: c => c.kind, value: c => c.kind},
    {key: 'n', label: 'strings', text: c => count(c.n), value: c => c.n},
    {key: 'r_imh', label: () => rewardLabel(state.reward) + ' (IMH) ± s.e.', text: c => pm((c.rewards[state.reward] || {}).imh), value: c => ((c.rewards[state.reward] || {}).imh || [null])[0]},
    {key: 'lp_imh', label: 'log prior (IMH) ± s.e.', text: c => pm(c.lp_imh), value: c => (c.lp_imh || [null])[0]},
    {key: 'r_local', label: () => rewardLabel(state.reward) + ' (sampled) ± s.e.', text: c => pm((c.rewards[state.reward] || {}).local), value: c => ((c.rewards[state.reward] || {}).local || [null])[0]},
    {key: 'lp_local', label: 'log prior (sampled) ± s.e.', text: c => pm(c.lp_local), value: c => (c.lp_local || [null])[0]},
    {key: 'lp_tok', label: 'log prior per token', text: c => fmt(c.lp_tok), value: c => c.lp_tok},
    {key: 'kl', label: 'KL(q ‖ p₊)', text: c => pm(c.kl), value: c => (c.kl || [null])[0]},
    {key: 'length', label: 'mean length', text: c => fmt(c.length), value: c => c.length},
    {key: 'is_ess', label: 'IS ESS', text: c => fmt(c.is_ess), value: c => c.is_ess},
    {key: 'chain_ess', label: 'chain ESS', text: c => fmt(c.chain_ess), value: c => c.chain_ess},
    {key: 'frontier', label: 'frontier', text: c => (c.frontier ? 'yes' : ''), value: c => (c.frontier ? 1 : 0)},
    {key: 'reason', label: 'note', text: c => c.reason || '', value: c => c.reason || ''},
  ];
  function drawTable() {
    const table = document.getElementById('pq-table');
    table.replaceChildren();
    const thead = el('thead'), head = el('tr');
    for (const col of COLUMNS) {
      const label = typeof col.label === 'function' ? col.label() : col.label;
      const th = el('th', {'data-key': col.key, class: col.key === 'adaptor' || col.key === 'reason' || col.key === 'kind' ? 'l sortable' : 'sortable',
        'aria-sort': state.sort.key === col.key ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none', title: 'sort by ' + label}, label);
      th.addEventListener('click', () => {
        state.sort = {key: col.key, dir: state.sort.key === col.key ? -state.sort.dir : 1};
        drawTable();
      });
      head.appendChild(th);
    }
    thead.appendChild(head);
    table.appendChild(thead);
    let order = C.map((c, i) => i);
    const col = COLUMNS.find(k => k.key === state.sort.key);
    if (col) {
      order.sort((a, b) => {
        const va = col.value(C[a]), vb = col.value(C[b]);
        if (va === null || va === undefined) return (vb === null || vb === undefined) ? a - b : 1;  // missing last
        if (vb === null || vb === undefined) return -1;
        const d = typeof va === 'string' ? va.localeCompare(vb) : va - vb;
        return d === 0 ? a - b : d * state.sort.dir;
      });
    }
    const body = el('tbody');
    for (const i of order) {
      const c = C[i];
      const tr = el('tr', {'data-adaptor': c.adaptor, tabindex: '0'});
      for (const k of COLUMNS) tr.appendChild(el('td', {class: k.key === 'adaptor' || k.key === 'kind' ? 'l' : (k.key === 'reason' ? 'l wrap' : '')}, k.text(c)));
      tr.addEventListener('click', () => showConfig(i));
      tr.addEventListener('keydown', e => { if (e.key === 'Enter') showConfig(i); });
      body.appendChild(tr);
    }
    table.appendChild(body);
  }

  // ------------------------------------------------------------------------------------------ controls
  function checkbox(container, label, checked, onChange, attrs, swatch) {
    const id = 'pq-' + Math.random().toString(36).slice(2);
    const box = el('input', Object.assign({type: 'checkbox', id: id}, attrs || {}));
    box.checked = checked;
    box.addEventListener('change', () => onChange(box.checked));
    const lab = el('label', {for: id});
    if (swatch) lab.appendChild(el('span', {class: 'swatch', style: 'background:' + swatch}));
    lab.appendChild(document.createTextNode(label));
    const span = el('span', {class: 'pq-check'});
    span.appendChild(box); span.appendChild(lab);
    container.appendChild(span);
  }
  function select(container, label, options, value, onChange, id) {
    const lab = el('label', {for: id}, label + ' ');
    const sel = el('select', {id: id});
    for (const [v, text] of options) { const o = el('option', {value: v}, text); if (v === value) o.selected = true; sel.appendChild(o); }
    sel.addEventListener('change', () => onChange(sel.value));
    container.appendChild(lab); container.appendChild(sel);
  }
  function controls() {
    const box = document.getElementById('pq-controls');
    const planes = Object.entries(PLANES).filter(([k, p]) => C.some(c => p.x(c) && p.y(c, state.reward))).map(([k, p]) => [k, p.label]);
    const line1 = el('div', {class: 'pq-row'});
    select(line1, 'plane:', planes, state.plane, v => { state.plane = v; redraw(); }, 'pq-plane-select');
    if (DATA.rewards.length > 1) select(line1, ' reward:', DATA.rewards.map(r => [r, rewardLabel(r)]), state.reward,
      v => { state.reward = v; redraw(); drawHexbin(); }, 'pq-reward-select');
    checkbox(line1, 'what-if estimates', true, v => { state.whatIf = v; redraw(); }, {'data-toggle': 'what-if'});
    checkbox(line1, 'bootstrapped corpora (IMH plane)', true, v => { state.cloud = v; redraw(); }, {'data-toggle': 'cloud'});
    box.appendChild(line1);
    const line2 = el('div', {class: 'pq-row'});
    line2.appendChild(el('b', {}, 'families: '));
    for (const f of families) checkbox(line2, f, true, v => { v ? state.families.add(f) : state.families.delete(f); redraw(); }, {'data-family': f}, colour[f]);
    box.appendChild(line2);
    const line3 = el('div', {class: 'pq-row'});
    line3.appendChild(el('b', {}, 'temperatures: '));
    for (const t of temperatures) checkbox(line3, t === null ? 'mixed T' : 'T = ' + t, true, v => { v ? state.temperatures.add(t) : state.temperatures.delete(t); redraw(); }, {'data-temperature': String(t)});
    box.appendChild(line3);
  }
  function redraw() { drawTable(); return drawPlane(); }

  controls();
  const plane = document.getElementById('pq-plane');
  Promise.all([redraw(), drawHexbin()]).then(() => {
    plane.on('plotly_click', ev => {
      const p = ev.points[0];
      const i = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      showConfig(i);
    });
    root.dataset.ready = '1';
  });
})();
