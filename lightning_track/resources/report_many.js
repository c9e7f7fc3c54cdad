// lt report of many runs: the runs table (sort, filter, tick), the best metric by start time, config against the
// best metric, and the curves of the ticked runs, drawn with the vendored uPlot (uPlot.iife.min.js).
// State travels in the URL's hash (#sort=best&desc=1&q=status%3Dcompleted&sel=a,b) so a view can be shared.
// What is drawn is written on <body>: data-many-rows (rows that match), data-many-listed (rows in the page), data-many-first (the first row's run),
// data-many-ticked, data-many-curves (curves drawn), data-many-config (config views drawn), data-many-best;
// errors land in data-error. #selftest-many clicks through sort, filter and ticking (data-many-selftest).
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("lt-many").textContent);
  const N = D.count, body = document.body;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (v) => (v === null || v === undefined) ? "-" :
    (Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0)) ? v.toExponential(3) : (+v.toPrecision(4)).toString();
  const pad = (n) => String(n).padStart(2, "0");
  const when = (t) => { if (t === null) return "-"; const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`; };
  const span = (s) => s === null ? "-" : s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${pad(s % 60)}s` :
    `${Math.floor(s / 3600)}h${pad(Math.floor(s % 3600 / 60))}m`;

  // columns: each gets .v (the values, codes expanded) and .show (a cell's text)
  const cols = D.columns.map((c) => {
    const v = c.codes ? c.codes.map((k) => c.dict[k]) : c.values;
    const show = c.type === "time" ? when : c.type === "duration" ? span : c.type === "num" ? fmt : (x) => (x === null || x === "" ? "-" : x);
    return Object.assign({}, c, { v, show, numeric: c.type !== "text" });
  });
  const byKey = new Map(cols.map((c) => [c.key, c]));
  const labels = byKey.get("label").v, names = byKey.get("run").v;
  const best = byKey.get("best");
  if (best && best.metric) { byKey.set("best." + best.metric, best); byKey.set(best.metric, best); }
  byKey.set("name", byKey.get("run")); byKey.set("tags", byKey.get("tag"));
  for (const c of cols) if (c.config) byKey.set("config." + c.key, c);
  const indexOfLabel = new Map(labels.map((l, i) => [l, i]));
  const state = { sort: best ? "best" : "start", desc: best ? D.mode === "max" : false, q: "", ticked: new Set(D.selected),
    all: false };
  let shown = [], filterError = "";

  // the filter: terms separated by spaces, all must hold; "key<op>value" on a column, else text in any cell
  const OPS = /^([^\s<>=!~]+)(<=|>=|!=|!~|==|=|<|>|~)(.*)$/;
  function compileTerm(term) {
    const m = OPS.exec(term);
    if (m && !byKey.has(m[1])) throw new Error(`no column ${m[1]} (${cols.slice(1).map((c) => c.key).join(", ")})`);
    if (!m) {
      const needle = term.toLowerCase();
      return (i) => cols.some((c) => c.v[i] !== null && String(c.show(c.v[i])).toLowerCase().includes(needle));
    }
    const c = byKey.get(m[1]), op = m[2], raw = m[3];
    const num = raw.trim() !== "" && Number.isFinite(+raw) ? +raw : null;
    if (op === "~" || op === "!~") {
      const re = new RegExp(raw, "i");
      return (i) => { const v = c.v[i]; const hit = v !== null && re.test(String(c.show(v))); return op === "~" ? hit : !hit; };
    }
    if (c.numeric && c.type === "num") {
      if (num === null) throw new Error(`${m[1]}: ${raw} is not a number`);
      const test = { "<": (a) => a < num, "<=": (a) => a <= num, ">": (a) => a > num, ">=": (a) => a >= num,
        "=": (a) => a === num, "==": (a) => a === num, "!=": (a) => a !== num }[op];
      return (i) => { const v = c.v[i]; return v === null ? op === "!=" : test(v); };
    }
    const glob = new RegExp("^" + raw.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$", "i");
    const holds = (v) => v !== null && (c.key === "tag" ? String(v).split(", ").some((t) => glob.test(t)) : glob.test(String(c.show(v))));
    if (op === "=" || op === "==") return (i) => holds(c.v[i]);
    if (op === "!=") return (i) => !holds(c.v[i]);
    throw new Error(`${m[1]}: ${op} needs a number column`);
  }
  function applyFilter() {
    let tests = [];
    filterError = "";
    try { tests = state.q.trim() ? state.q.trim().split(/\s+/).map(compileTerm) : []; } catch (err) { filterError = err.message; }
    const rows = [];
    for (let i = 0; i < N; i++) if (!filterError && tests.every((t) => t(i))) rows.push(i);
    const c = byKey.get(state.sort) || byKey.get("run"), dir = state.desc ? -1 : 1;
    rows.sort((a, b) => {  // missing values last, whichever the direction
      const x = c.v[a], y = c.v[b];
      if (x === null || x === "") return (y === null || y === "") ? a - b : 1;
      if (y === null || y === "") return -1;
      if (x < y) return -dir; if (x > y) return dir; return a - b;
    });
    shown = rows;
  }

  const table = document.getElementById("lt-runs"), count = document.getElementById("lt-count");
  const more = document.getElementById("lt-all");
  const ROWS = 1000;  // rows in the page at once: 10,000 rows of cells make every sort and tick slow
  function renderTable() {
    applyFilter();
    const head = ['<tr><th title="tick to draw the curve">✓</th>'];
    for (const c of cols) {
      const mark = c.key === state.sort ? (state.desc ? " ▼" : " ▲") : "";
      head.push(`<th data-key="${esc(c.key)}" class="sortable">${esc(c.label)}${mark}</th>`);
    }
    table.tHead.innerHTML = head.join("") + "</tr>";
    const out = [], limit = state.all ? shown.length : Math.min(shown.length, ROWS);
    for (const i of shown.slice(0, limit)) {
      const ticked = state.ticked.has(i);
      const cells = cols.map((c) => `<td${c.numeric ? ' class="num"' : c.key === "status" ? ` class="st-${esc(c.v[i])}"` : ""}>${esc(c.show(c.v[i]))}</td>`);
      out.push(`<tr data-i="${i}"${ticked ? ' class="ticked"' : ""}><td><input type="checkbox" data-i="${i}"${ticked ? " checked" : ""}></td>${cells.join("")}</tr>`);
    }
    table.tBodies[0].innerHTML = out.join("");
    more.hidden = limit === shown.length;
    more.textContent = `show all ${shown.length} rows`;
    count.textContent = filterError ? `filter: ${filterError}` : `${shown.length} of ${N} runs match` +
      (limit < shown.length ? ` (the first ${limit} listed)` : "") + `, ${state.ticked.size} ticked`;
    count.classList.toggle("bad", !!filterError);
    body.dataset.manyRows = String(shown.length);
    body.dataset.manyListed = String(limit);
    body.dataset.manyFirst = shown.length ? names[shown[0]] : "";
    body.dataset.manyTicked = String(state.ticked.size);
  }

  function saveHash() {
    const parts = [`sort=${encodeURIComponent(state.sort)}`, `desc=${state.desc ? 1 : 0}`];
    if (state.q) parts.push(`q=${encodeURIComponent(state.q)}`);
    parts.push(`sel=${[...state.ticked].map((i) => labels[i]).join(",")}`);
    history.replaceState(null, "", "#" + parts.join("&"));
  }
  function loadHash() {
    const text = location.hash.replace(/^#/, "");
    if (!text.includes("=")) return;
    const p = new URLSearchParams(text);
    if (p.has("sort") && byKey.has(p.get("sort"))) state.sort = p.get("sort");
    if (p.has("desc")) state.desc = p.get("desc") === "1";
    if (p.has("q")) state.q = p.get("q");
    if (p.has("sel")) state.ticked = new Set(p.get("sel").split(",").filter((l) => indexOfLabel.has(l)).map((l) => indexOfLabel.get(l)));
  }

  const width = (el) => Math.max(320, (el.clientWidth || 900) - 4);
  const plots = [];
  let pointRuns = [];  // the best view's runs, point by point
  function scatter(el, title, xs, ys, runsAt, opts) {  // xs ascending; runsAt[k]: the run of point k
    const box = document.createElement("div");
    box.className = "uwrap";
    el.appendChild(box);
    const u = new uPlot(Object.assign({
      title, width: opts.width || width(el), height: opts.height || 220, legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { size: 8 } },
      // a margin beyond the extremes: uPlot draws the points of an x range's ends only once each otherwise
      scales: { x: Object.assign({ time: false, range: opts.log ? (u, lo, hi) => [lo / 1.5, hi * 1.5] :
        (u, lo, hi) => { const d = (hi - lo) * 0.04 || Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; } }, opts.x || {}) },
      axes: [Object.assign({}, opts.xAxis || {}), { size: 60 }],
      series: [{}, { stroke: "#1f77b4", fill: "#1f77b455", paths: () => null, points: { show: true, size: 4 } },
        ...(opts.extra || [])],
      hooks: { draw: [() => { box.dataset.drawn = "1"; }] },
    }), [xs, ys, ...(opts.extraData || [])], box);
    u.over.addEventListener("click", () => { const k = u.cursor.idx; if (k !== null && k !== undefined) toggle(runsAt[k]); });
    plots.push(u);
    return u;
  }

  function drawBest() {
    const el = document.getElementById("lt-best");
    if (!el || !best) return;
    const start = byKey.get("start").v, order = [];
    for (let i = 0; i < N; i++) if (start[i] !== null && best.v[i] !== null) order.push(i);
    order.sort((a, b) => start[a] - start[b] || a - b);
    const xs = order.map((i) => start[i]), ys = order.map((i) => best.v[i]), sofar = [];
    let top = null;
    for (const y of ys) { if (top === null || (D.mode === "max" ? y > top : y < top)) top = y; sofar.push(top); }
    pointRuns = order;
    scatter(el, `best ${best.metric} of each run, by start`, xs, ys, order, {
      x: { time: true }, extra: [{ stroke: "#d62728", width: 1.5, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } }],
      extraData: [sofar] });
    body.dataset.manyBest = String(order.length);
  }

  function drawConfig() {
    const el = document.getElementById("lt-config");
    if (!el || !best) return 0;
    const keys = cols.filter((c) => c.config).slice(0, D.scatter_keys);
    for (const c of keys) {
      const order = [];
      for (let i = 0; i < N; i++) if (c.v[i] !== null && best.v[i] !== null) order.push(i);
      let xs, opts = { width: 360, height: 200 };
      if (c.numeric) {
        order.sort((a, b) => c.v[a] - c.v[b] || a - b);
        xs = order.map((i) => c.v[i]);
        const pos = xs.length && xs[0] > 0;
        if (pos && xs[xs.length - 1] / xs[0] >= 100) { opts.x = { distr: 3, log: 10 }; opts.log = true; }  // a learning rate
        opts.xAxis = { values: (u, splits) => splits.map((v) => v === null ? "" : fmt(v)) };
      } else {
        const cats = [...new Set(order.map((i) => c.v[i]))].sort();
        const at = new Map(cats.map((v, k) => [v, k]));
        // a small spread inside each category so that equal values do not hide each other
        const spread = new Map(order.map((i, k) => [i, at.get(c.v[i]) + ((k * 0.618034) % 1 - 0.5) * 0.5]));
        order.sort((a, b) => spread.get(a) - spread.get(b) || a - b);
        xs = order.map((i) => spread.get(i));
        opts.x = { range: [-0.6, cats.length - 0.4] };
        opts.xAxis = { splits: () => cats.map((_, k) => k), values: (u, splits) => splits.map((k) => String(cats[k] ?? "")) };
      }
      scatter(el, c.key, xs, order.map((i) => best.v[i]), order, opts);
    }
    return keys.length;
  }

  let curvePlot = null;
  function drawCurves() {
    const el = document.getElementById("lt-curves");
    if (!el) return;
    if (curvePlot) { curvePlot.destroy(); curvePlot = null; }
    const have = [], missing = [];
    for (const i of state.ticked) (D.curves[i] ? have : missing).push(i);
    have.sort((a, b) => a - b);
    const note = document.getElementById("lt-nocurve");
    note.textContent = missing.length ? `no curve in this file for ${missing.length} ticked run(s): ` +
      missing.slice(0, 20).map((i) => labels[i]).join(", ") + (missing.length > 20 ? ", ..." : "") : "";
    body.dataset.manyCurves = String(have.length);
    if (!have.length) { el.textContent = state.ticked.size ? "" : "tick runs in the table to draw their curves"; return; }
    el.textContent = "";
    const tables = have.map((i) => {
      const [dx, y] = D.curves[i], x = new Array(dx.length);
      let s = 0;
      for (let k = 0; k < dx.length; k++) { s += dx[k]; x[k] = s; }
      return [x, y];
    });
    const data = uPlot.join(tables);
    const series = [{ label: "step" }, ...have.map((i, n) => ({
      label: `${labels[i]} ${names[i]}`, stroke: PALETTE[n % PALETTE.length], width: 1.5, spanGaps: true,
      value: (u, v) => fmt(v) }))];
    curvePlot = new uPlot({ width: width(el), height: 320, scales: { x: { time: false } }, series,
      axes: [{}, { size: 60 }], legend: { live: true } }, data, el);
  }

  function toggle(i) {
    if (state.ticked.has(i)) state.ticked.delete(i); else state.ticked.add(i);
    renderTable(); drawCurves(); saveHash();
  }

  function setup() {
    loadHash();
    const filter = document.getElementById("lt-filter");
    filter.value = state.q;
    renderTable();
    table.tHead.addEventListener("click", (e) => {
      const th = e.target.closest("th[data-key]");
      if (!th) return;
      if (state.sort === th.dataset.key) state.desc = !state.desc; else { state.sort = th.dataset.key; state.desc = false; }
      renderTable(); saveHash();
    });
    table.tBodies[0].addEventListener("change", (e) => { if (e.target.dataset.i !== undefined) toggle(+e.target.dataset.i); });
    let pending = null;
    filter.addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(() => { state.q = filter.value; renderTable(); saveHash(); }, 150);
    });
    more.addEventListener("click", () => { state.all = true; renderTable(); });
    document.getElementById("lt-none").addEventListener("click", () => { state.ticked.clear(); renderTable(); drawCurves(); saveHash(); });
    drawBest();
    body.dataset.manyConfig = String(drawConfig());
    drawCurves();
    if (location.hash.includes("selftest-many")) setTimeout(() => selftest(filter), 200);  // after uPlot's first draw
  }

  // What a person does, through the page's own events; each step's reading goes into data-many-selftest.
  function selftest(filter) {
    const out = { first: body.dataset.manyFirst, rows: +body.dataset.manyRows, listed: +body.dataset.manyListed,
      curves: +body.dataset.manyCurves };  // as the hash left them
    try {
      const click = (el) => el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
      const th = (key) => table.tHead.querySelector(`th[data-key="${key}"]`);
      filter.value = ""; state.q = ""; renderTable();
      click(th("run")); out.run_asc = body.dataset.manyFirst;
      click(th("run")); out.run_desc = body.dataset.manyFirst;
      if (best) { click(th("best")); out.best_asc = body.dataset.manyFirst; }
      const typed = (text) => { filter.value = text; state.q = text; renderTable(); return +body.dataset.manyRows; };
      out.completed = typed("status=completed");
      out.under = typed("best<0.1 completed");  // a term on a column and a text one: both must hold
      typed("nosuch<1"); out.bad = count.textContent;
      filter.value = ""; state.q = ""; renderTable();
      click(document.getElementById("lt-none")); out.none = +body.dataset.manyCurves;
      for (let k = 0; k < 3; k++) {  // the first three rows, as a person ticks them (each tick redraws the table)
        const box = table.tBodies[0].querySelectorAll("input[type=checkbox]")[k];
        box.checked = true; box.dispatchEvent(new Event("change", { bubbles: true }));
      }
      out.ticked = +body.dataset.manyTicked; out.ticked_curves = +body.dataset.manyCurves;
      out.series = curvePlot ? curvePlot.series.length - 1 : 0;
      out.canvases = document.querySelectorAll("#lt-curves canvas").length;
      if (plots.length) {  // a click on the best view's middle point (by start) ticks (or unticks) that run
        const u = plots[0], r = u.over.getBoundingClientRect(), before = new Set(state.ticked);
        const k = Math.floor(u.data[0].length / 2);
        const inside = (v, size) => Math.min(Math.max(v, 1), size - 1);  // a point on the plot's edge: just inside
        const x = inside(u.valToPos(u.data[0][k], "x"), r.width), y = inside(u.valToPos(u.data[1][k], "y"), r.height);
        for (const kind of ["mouseenter", "mousemove", "mousedown", "mouseup", "click"]) {  // a click, as a mouse makes it
          u.over.dispatchEvent(new MouseEvent(kind, { clientX: r.left + x, clientY: r.top + y, bubbles: true, button: 0 }));
        }
        const changed = [...state.ticked].filter((i) => !before.has(i)).concat([...before].filter((i) => !state.ticked.has(i)));
        out.point = changed.map((i) => names[i]).join(",");
      }
      body.dataset.manySelftest = JSON.stringify(out);
    } catch (err) {
      body.dataset.manySelftest = "fail " + err.message;
    }
  }
  window.addEventListener("error", (e) => body.setAttribute("data-error", String(e.message)));
  try { setup(); } catch (err) { body.setAttribute("data-error", String(err && err.message || err)); throw err; }
})();
