// lt report: interactive curves on <canvas>, no library. Drag to zoom (x), double-click to reset,
// hover for values, smoothing (EMA, debiased like TensorBoard), log scale, click a run to hide it.
// Marks <body data-drawn="N"> once N charts are drawn; errors land in data-error.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("lt-data").textContent);
  const state = { smooth: 0, log: false, hidden: new Set() };
  const charts = [];
  const fmt = (v) => (v === null || v === undefined || Number.isNaN(v)) ? "nan" :
    (Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0)) ? v.toExponential(3) : (+v.toPrecision(5)).toString();

  function smoothed(y, w) {
    if (!w) return y;
    const out = new Array(y.length); let last = 0, n = 0;
    for (let i = 0; i < y.length; i++) {
      const v = y[i];
      if (v === null || !Number.isFinite(v)) { out[i] = null; continue; }
      last = last * w + (1 - w) * v; n++;
      out[i] = last / (1 - Math.pow(w, n));
    }
    return out;
  }
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step0 = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
    const out = [];
    // a span below the numbers' precision (a near-constant series) would never move t: one tick then
    for (let t = Math.ceil(lo / step) * step, prev = NaN; t <= hi + step * 1e-9; prev = t, t += step) {
      if (t === prev || out.length > 4 * count) return [lo];
      out.push(+t.toPrecision(12));
    }
    return out;
  }
  function bsearch(xs, x) {
    let a = 0, b = xs.length - 1;
    while (a < b) { const m = (a + b) >> 1; if (xs[m] < x) a = m + 1; else b = m; }
    if (a > 0 && Math.abs(xs[a - 1] - x) <= Math.abs(xs[a] - x)) a--;
    return a;
  }

  class Chart {
    constructor(spec, el) {
      this.spec = spec; this.el = el; this.canvas = el.querySelector("canvas"); this.tip = el.querySelector(".tip");
      this.view = null; this.drag = null; this.hoverX = null; this.pad = { l: 58, r: 10, t: 10, b: 26 };
      const c = this.canvas;
      c.addEventListener("mousedown", (e) => { this.drag = { x0: this.px(e), x1: this.px(e) }; });
      c.addEventListener("mousemove", (e) => {
        if (this.drag) this.drag.x1 = this.px(e);
        this.hoverX = this.px(e); this.draw();
      });
      c.addEventListener("mouseleave", () => { this.hoverX = null; this.drag = null; this.draw(); });
      window.addEventListener("mouseup", () => {
        if (!this.drag) return;
        const a = Math.min(this.drag.x0, this.drag.x1), b = Math.max(this.drag.x0, this.drag.x1);
        this.drag = null;
        if (b - a > 4) this.zoom(this.toX(a), this.toX(b)); else this.draw();
      });
      c.addEventListener("dblclick", () => { this.view = null; this.draw(); });
    }
    px(e) { const r = this.canvas.getBoundingClientRect(); return e.clientX - r.left; }
    visible() { return this.spec.series.filter((s) => !state.hidden.has(s.run)); }
    zoom(x0, x1) { this.view = { x0, x1 }; this.draw(); }
    ty(v) { return state.log ? (v > 0 ? Math.log10(v) : null) : v; }
    extent() {
      let x0 = Infinity, x1 = -Infinity;
      for (const s of this.visible()) if (s.x.length) { x0 = Math.min(x0, s.x[0]); x1 = Math.max(x1, s.x[s.x.length - 1]); }
      if (this.view) { x0 = this.view.x0; x1 = this.view.x1; }
      let y0 = Infinity, y1 = -Infinity;
      for (const s of this.visible()) {
        const ys = smoothed(s.y, state.smooth);
        for (let i = 0; i < s.x.length; i++) {
          if (s.x[i] < x0 || s.x[i] > x1) continue;
          for (const v of [ys[i], s.y[i], s.lo ? s.lo[i] : null, s.hi ? s.hi[i] : null]) {
            const t = v === null ? null : this.ty(v);
            if (t !== null && Number.isFinite(t)) { y0 = Math.min(y0, t); y1 = Math.max(y1, t); }
          }
        }
      }
      if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; }
      if (x1 === x0) { x0 -= 1; x1 += 1; }
      if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const m = (y1 - y0) * 0.05;
      return { x0, x1, y0: y0 - m, y1: y1 + m };
    }
    toX(px) { const e = this.ext, w = this.w - this.pad.l - this.pad.r; return e.x0 + (px - this.pad.l) / w * (e.x1 - e.x0); }
    sx(x) { const e = this.ext; return this.pad.l + (x - e.x0) / (e.x1 - e.x0) * (this.w - this.pad.l - this.pad.r); }
    sy(t) { const e = this.ext; return this.pad.t + (e.y1 - t) / (e.y1 - e.y0) * (this.h - this.pad.t - this.pad.b); }
    path(ctx, xs, ys) {
      let pen = false;
      ctx.beginPath();
      for (let i = 0; i < xs.length; i++) {
        const t = ys[i] === null ? null : this.ty(ys[i]);
        if (t === null || !Number.isFinite(t)) { pen = false; continue; }
        const X = this.sx(xs[i]), Y = this.sy(t);
        if (pen) ctx.lineTo(X, Y); else ctx.moveTo(X, Y);
        pen = true;
      }
      ctx.stroke();
    }
    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      this.w = c.clientWidth || 400; this.h = c.clientHeight || 240;
      if (c.width !== Math.round(this.w * dpr)) { c.width = Math.round(this.w * dpr); c.height = Math.round(this.h * dpr); }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, this.w, this.h);
      const e = this.ext = this.extent(), p = this.pad;
      ctx.font = "10px system-ui,sans-serif"; ctx.fillStyle = "#5b6475"; ctx.strokeStyle = "#eceff3"; ctx.lineWidth = 1;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      for (const t of ticks(e.y0, e.y1, 5)) {
        const Y = this.sy(t); ctx.beginPath(); ctx.moveTo(p.l, Y); ctx.lineTo(this.w - p.r, Y); ctx.stroke();
        ctx.fillText(state.log ? fmt(Math.pow(10, t)) : fmt(t), p.l - 4, Y);
      }
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      for (const t of ticks(e.x0, e.x1, 6)) ctx.fillText(fmt(t), this.sx(t), this.h - p.b + 4);
      ctx.save(); ctx.beginPath(); ctx.rect(p.l, p.t, this.w - p.l - p.r, this.h - p.t - p.b); ctx.clip();
      for (const s of this.visible()) {
        const color = D.runs[s.run].color;
        if (s.lo && s.hi) {
          ctx.fillStyle = color; ctx.globalAlpha = 0.15; ctx.beginPath();
          for (let i = 0; i < s.x.length; i++) {
            const a = s.lo[i] === null ? null : this.ty(s.lo[i]), b = s.hi[i] === null ? null : this.ty(s.hi[i]);
            if (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b)) continue;
            ctx.rect(this.sx(s.x[i]) - 0.5, this.sy(b), 1.5, Math.max(1, this.sy(a) - this.sy(b)));
          }
          ctx.fill();
          ctx.globalAlpha = 1;
        }
        ctx.strokeStyle = color;
        if (state.smooth) { ctx.globalAlpha = 0.25; ctx.lineWidth = 1; this.path(ctx, s.x, s.y); ctx.globalAlpha = 1; }
        ctx.lineWidth = 1.6; this.path(ctx, s.x, smoothed(s.y, state.smooth));
        if (s.x.length <= 60) {
          ctx.fillStyle = color;
          for (let i = 0; i < s.x.length; i++) {
            const t = s.y[i] === null ? null : this.ty(s.y[i]);
            if (t !== null && Number.isFinite(t)) { ctx.beginPath(); ctx.arc(this.sx(s.x[i]), this.sy(t), 2.2, 0, 7); ctx.fill(); }
          }
        }
        ctx.fillStyle = "#d0021b";
        for (const [step] of s.bad) {
          if (step < e.x0 || step > e.x1) continue;
          const X = this.sx(step); ctx.beginPath(); ctx.moveTo(X - 4, p.t); ctx.lineTo(X + 4, p.t); ctx.lineTo(X, p.t + 7); ctx.fill();
        }
      }
      ctx.restore();
      if (this.drag) {
        ctx.fillStyle = "rgba(11,99,196,0.12)";
        ctx.fillRect(Math.min(this.drag.x0, this.drag.x1), p.t, Math.abs(this.drag.x1 - this.drag.x0), this.h - p.t - p.b);
      }
      this.hover(ctx);
    }
    hover(ctx) {
      const tip = this.tip;
      if (this.hoverX === null || this.hoverX < this.pad.l || this.hoverX > this.w - this.pad.r) { tip.style.display = "none"; return; }
      const x = this.toX(this.hoverX), rows = [];
      for (const s of this.visible()) {
        if (!s.x.length) continue;
        const i = bsearch(s.x, x), ys = smoothed(s.y, state.smooth), r = D.runs[s.run];
        let text = `<span style="color:${r.color}">■</span> ${r.label} step ${s.x[i]}: ${fmt(ys[i])}`;
        if (state.smooth) text += ` (raw ${fmt(s.y[i])})`;
        if (s.lo && s.hi && s.lo[i] !== s.hi[i]) text += ` [${fmt(s.lo[i])} … ${fmt(s.hi[i])}]`;
        const near = s.bad.filter(([st]) => Math.abs(this.sx(st) - this.hoverX) < 5);
        if (near.length) text += ` <b style="color:#ff8a80">${near.map(([st, k]) => k + "@" + st).join(" ")}</b>`;
        rows.push(text);
      }
      ctx.strokeStyle = "#9aa3b2"; ctx.lineWidth = 1; ctx.beginPath();
      ctx.moveTo(this.hoverX, this.pad.t); ctx.lineTo(this.hoverX, this.h - this.pad.b); ctx.stroke();
      if (!rows.length) { tip.style.display = "none"; return; }
      tip.innerHTML = rows.join("<br>"); tip.style.display = "block";
      const left = this.hoverX + 14 + tip.offsetWidth > this.w ? this.hoverX - tip.offsetWidth - 6 : this.hoverX + 14;
      tip.style.left = Math.max(0, left) + "px"; tip.style.top = "30px";
    }
  }

  function drawAll() { for (const c of charts) c.draw(); }
  function setup() {
    for (const el of document.querySelectorAll(".chart[data-chart]")) {
      const chart = new Chart(D.charts[+el.dataset.chart], el);
      charts.push(chart);
    }
    const slider = document.getElementById("smooth"), shown = document.getElementById("smooth-value");
    if (slider) {  // absent in the report of many runs (report_many.js draws its views)
      slider.addEventListener("input", () => { state.smooth = +slider.value; shown.textContent = slider.value; drawAll(); });
      document.getElementById("logy").addEventListener("change", (e) => { state.log = e.target.checked; drawAll(); });
    }
    for (const chip of document.querySelectorAll(".legend span[data-run]")) {
      chip.addEventListener("click", () => {
        const run = +chip.dataset.run;
        if (state.hidden.has(run)) state.hidden.delete(run); else state.hidden.add(run);
        chip.classList.toggle("off"); drawAll();
      });
    }
    let pending = null;
    window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(drawAll, 100); });
    drawAll();
    document.body.setAttribute("data-drawn", String(charts.length));
    if (location.hash === "#selftest") selftest();
  }
  // Exercises what a person does (zoom, hover, smoothing, log scale, hiding a run) inside the browser
  // the test drives; the verdict goes into <body data-selftest>.
  function selftest() {
    const out = [];
    try {
      const c = charts[0];
      if (!c) throw new Error("no chart");
      const full = c.extent();
      c.zoom(full.x0 + (full.x1 - full.x0) / 4, full.x1 - (full.x1 - full.x0) / 4);
      if (!(c.ext.x1 - c.ext.x0 < (full.x1 - full.x0) * 0.6)) throw new Error("zoom did not narrow the view");
      out.push("zoom");
      c.hoverX = (c.pad.l + c.w - c.pad.r) / 2; c.draw();
      if (c.tip.style.display !== "block" || !c.tip.textContent.includes("step")) throw new Error("no hover values");
      out.push("hover");
      c.view = null; state.smooth = 0.9; drawAll(); state.log = true; drawAll(); state.log = false; state.smooth = 0;
      state.hidden.add(0); drawAll(); state.hidden.delete(0); drawAll();
      out.push("smooth", "log", "hide");
      document.body.setAttribute("data-selftest", "ok " + out.join(","));
    } catch (err) {
      document.body.setAttribute("data-selftest", "fail " + err.message);
    }
  }
  window.addEventListener("error", (e) => document.body.setAttribute("data-error", String(e.message)));
  try { setup(); } catch (err) { document.body.setAttribute("data-error", String(err && err.message || err)); throw err; }
})();
