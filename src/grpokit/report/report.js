// grpokit run report: draws the embedded runs as SVG plots and a completion browser.
// Every piece of run data reaches the page through textContent or an SVG attribute,
// never through innerHTML, so text a model wrote cannot become markup.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  const PARTS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"];
  const SVGNS = "http://www.w3.org/2000/svg";
  const app = document.getElementById("app");
  const color = (i) => COLORS[i % COLORS.length];

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    const a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(2) : v.toPrecision(3).replace(/\.?0+$/, "");
  }
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1; lo -= d; hi += d; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    // the axis runs from a tick at or below the data to a tick at or above it
    const first = Math.floor(lo / step + 1e-9) * step, last = Math.ceil(hi / step - 1e-9) * step, t = [];
    for (let x = first; x <= last + step * 1e-9; x += step) t.push(+x.toPrecision(12));
    return { lo: first, hi: last, ticks: t, step };
  }
  // Tick labels with as many decimals as the tick spacing needs (4.651, 4.652, not 4.65 twice).
  function tickLabel(v, step) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-4)) return v.toExponential(1);
    return v.toFixed(Math.max(0, Math.min(8, -Math.floor(Math.log10(step)))));
  }
  function intTicks(lo, hi) {
    const span = Math.max(1, hi - lo), step = Math.max(1, niceTicks(0, span, 6).ticks[1] || 1);
    const t = [];
    for (let x = Math.ceil(lo / step) * step; x <= hi; x += step) t.push(x);
    return t.length ? t : [lo];
  }

  // A line plot: series [{label, color, xs, ys}] against step; hover shows the values.
  const W = 380, H = 210, M = { l: 52, r: 10, t: 24, b: 28 };
  function frame(title, xs, ys) {
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
    svg.append(sv("text", { x: M.l, y: 15, class: "ptitle" }, title));
    const xlo = Math.min(...xs), xhi = Math.max(...xs);
    const yt = niceTicks(Math.min(...ys), Math.max(...ys), 4);
    const X = (x) => M.l + (xhi > xlo ? (x - xlo) / (xhi - xlo) : 0.5) * (W - M.l - M.r);
    const Y = (y) => H - M.b - (y - yt.lo) / (yt.hi - yt.lo) * (H - M.t - M.b);
    for (const t of yt.ticks) {
      svg.append(sv("line", { x1: M.l, x2: W - M.r, y1: Y(t), y2: Y(t), class: "grid" }));
      svg.append(sv("text", { x: M.l - 4, y: Y(t) + 3, class: "ytick" }, tickLabel(t, yt.step)));
    }
    for (const t of intTicks(xlo, xhi)) svg.append(sv("text", { x: X(t), y: H - M.b + 14, class: "xtick" }, String(t)));
    svg.append(sv("text", { x: W - M.r, y: H - 2, class: "xlabel" }, "step"));
    return { svg, X, Y };
  }
  function linePlot(title, series) {
    const pts = series.flatMap((s) => s.xs.map((x, i) => [x, s.ys[i]]).filter((p) => p[1] !== null));
    if (!pts.length) return null;
    const { svg, X, Y } = frame(title, pts.map((p) => p[0]), pts.map((p) => p[1]));
    for (const s of series) {
      let d = "", pen = false;
      s.xs.forEach((x, i) => {
        const y = s.ys[i];
        if (y === null || y === undefined) { pen = false; return; }
        d += `${pen ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`; pen = true;
      });
      if (!d) continue;
      svg.append(sv("path", { d, class: "series", stroke: s.color, "data-run": s.label }));
      if (s.xs.length <= 60) s.xs.forEach((x, i) => {
        if (s.ys[i] !== null && s.ys[i] !== undefined)
          svg.append(sv("circle", { cx: X(x).toFixed(1), cy: Y(s.ys[i]).toFixed(1), r: 2, fill: s.color, class: "pt" }));
      });
    }
    hover(svg, series, X);
    return svg;
  }
  function hover(svg, series, X) {
    const label = sv("text", { x: W - M.r, y: 15, class: "hover" }, "");
    const rule = sv("line", { y1: M.t, y2: H - M.b, class: "rule", visibility: "hidden" });
    svg.append(rule, label);
    svg.addEventListener("mousemove", (ev) => {
      const box = svg.getBoundingClientRect(), px = (ev.clientX - box.left) / box.width * W;
      let best = null;
      for (const s of series) s.xs.forEach((x) => { if (best === null || Math.abs(X(x) - px) < Math.abs(X(best) - px)) best = x; });
      if (best === null) return;
      rule.setAttribute("x1", X(best)); rule.setAttribute("x2", X(best)); rule.setAttribute("visibility", "visible");
      label.textContent = `step ${best}: ` + series.map((s) => fmt(s.ys[s.xs.indexOf(best)])).join(" / ");
    });
    svg.addEventListener("mouseleave", () => { rule.setAttribute("visibility", "hidden"); label.textContent = ""; });
  }
  // Stacked areas: parts [{label, ys}] over xs, each layer on top of the ones before.
  function stackedPlot(title, xs, parts) {
    const base = xs.map(() => 0), tops = [];
    for (const p of parts) { const top = p.ys.map((y, i) => base[i] + (y || 0)); tops.push(top); top.forEach((v, i) => { base[i] = v; }); }
    const { svg, X, Y } = frame(title, xs, [0, ...base]);
    let below = xs.map(() => 0);
    parts.forEach((p, j) => {
      const top = tops[j];
      let d = xs.map((x, i) => `${i ? "L" : "M"}${X(x).toFixed(1)},${Y(top[i]).toFixed(1)}`).join("");
      d += xs.slice().reverse().map((x, k) => `L${X(x).toFixed(1)},${Y(below[xs.length - 1 - k]).toFixed(1)}`).join("") + "Z";
      svg.append(sv("path", { d, class: "area", fill: PARTS[j % PARTS.length] }));
      below = top;
    });
    const legend = el("div", { class: "legend" }, ...parts.map((p, j) => el("span", { class: "key" },
      el("i", { style: `background:${PARTS[j % PARTS.length]}` }), p.label.replace(/^time\//, ""))));
    hover(svg, parts.map((p) => ({ xs, ys: p.ys })), X);
    return el("div", { class: "panel" }, svg, legend);
  }
  function barPlot(title, labels, values, xlabel) {
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot bars", role: "img" });
    svg.append(sv("text", { x: M.l, y: 15, class: "ptitle" }, title));
    const yt = niceTicks(0, Math.max(...values), 4);
    const Y = (y) => H - M.b - (y - yt.lo) / (yt.hi - yt.lo) * (H - M.t - M.b);
    for (const t of yt.ticks) {
      svg.append(sv("line", { x1: M.l, x2: W - M.r, y1: Y(t), y2: Y(t), class: "grid" }));
      svg.append(sv("text", { x: M.l - 4, y: Y(t) + 3, class: "ytick" }, fmt(t)));
    }
    svg.append(sv("text", { x: W - M.r, y: H - 2, class: "xlabel" }, xlabel));
    const bw = (W - M.l - M.r) / labels.length;
    labels.forEach((lab, i) => {
      svg.append(sv("rect", { x: M.l + i * bw + bw * 0.1, y: Y(values[i]), width: bw * 0.8, height: Y(0) - Y(values[i]), class: "bar" }));
      svg.append(sv("text", { x: M.l + (i + 0.5) * bw, y: H - M.b + 14, class: "xtick" }, lab));
    });
    return svg;
  }
  const panel = (...kids) => el("div", { class: "panel" }, ...kids.filter(Boolean));
  function section(id, title, ...kids) { const s = el("section", { id }, el("h2", {}, title), ...kids); app.append(s); return s; }

  // ---- runs and headline numbers
  const runs = D.runs;
  const legend = el("div", { class: "legend runs" }, ...runs.map((r, i) =>
    el("span", { class: "key" }, el("i", { style: `background:${color(i)}` }), r.label)));
  const headRow = el("tr", {}, ...["run", "steps", "reward: first → last tenth", "accuracy: first → last tenth", "held-out accuracy: first → last", "mean step time", "directory"].map((h) => el("th", {}, h)));
  const sumRows = runs.map((r, i) => {
    const s = r.summary, fl = (k) => s[k] ? `${fmt(s[k].first)} → ${fmt(s[k].last)}` : "–";
    return el("tr", {}, el("td", {}, el("i", { class: "sw", style: `background:${color(i)}` }), r.label), el("td", {}, s.steps),
      el("td", {}, fl("reward")), el("td", {}, fl("accuracy")), el("td", {}, fl("eval/accuracy")),
      el("td", {}, s.step_time ? fmt(s.step_time.mean) + " s" : "–"), el("td", { class: "path" }, r.path));
  });
  section("overview", "Runs", el("table", { class: "summary" }, el("thead", {}, headRow), el("tbody", {}, ...sumRows)),
    el("p", { class: "note" }, `Generated ${D.generated}. Hover a plot for values at a step.`));

  // ---- metric plots, by family
  const plots = section("metrics", "Metrics against step", legend);
  let family = null, grid = null;
  for (const p of D.panels) {
    if (p.family !== family) { family = p.family; plots.append(el("h3", {}, family)); grid = el("div", { class: "grid" }); plots.append(grid); }
    const series = runs.map((r, i) => ({ label: r.label, color: color(i), xs: r.metrics.step, ys: r.metrics.keys[p.key] || [] }))
      .filter((s) => s.ys.some((y) => y !== null && y !== undefined));
    const svg = linePlot(p.key, series);
    if (svg) grid.append(panel(svg));
  }
  const timeGrid = el("div", { class: "grid" });
  runs.forEach((r) => r.time_splits.forEach((t) => timeGrid.append(stackedPlot(`${r.label}: ${t.title}`, r.metrics.step,
    t.parts.map((k) => ({ label: k, ys: r.metrics.keys[k] }))))));
  if (timeGrid.childElementCount) plots.append(el("h3", {}, "Where the step time goes"), timeGrid);

  // ---- groups
  const gsec = section("groups", "Groups");
  runs.forEach((r, ri) => {
    const g = r.group_series;
    if (!g.step.length) { gsec.append(el("p", { class: "note" }, `${r.label}: no groups.jsonl in this run.`)); return; }
    gsec.append(el("h3", {}, r.label));
    const grid = el("div", { class: "grid" });
    const ser = (key) => g.scales.map((s, j) => ({ label: s.name, color: PARTS[j % PARTS.length], xs: g.step, ys: s[key] }));
    grid.append(panel(linePlot("groups per step, by scale", ser("count")), scaleLegend(g.scales)));
    grid.append(panel(linePlot("mean group size, by scale", ser("size_mean")), scaleLegend(g.scales)));
    grid.append(panel(linePlot("share of groups with zero reward spread", ser("zero_spread")), scaleLegend(g.scales)));
    for (const s of g.scales) {
      const labels = Object.keys(s.size_hist).sort((a, b) => a - b);
      grid.append(panel(barPlot(`${s.name}: groups of each size (all steps)`, labels, labels.map((k) => s.size_hist[k]), "group size")));
    }
    if (g.difficulty) {
      grid.append(panel(linePlot(`mean reward by ${g.difficulty.field} (the complexity field)`, g.difficulty.series.map((d, j) =>
        ({ label: d.value, color: PARTS[j % PARTS.length], xs: g.step, ys: d.mean }))),
        el("div", { class: "legend" }, ...g.difficulty.series.map((d, j) => el("span", { class: "key" },
          el("i", { style: `background:${PARTS[j % PARTS.length]}` }), `${g.difficulty.field} = ${d.value}`)))));
    }
    gsec.append(grid);
    for (const s of g.scales) {
      if (!s.last || s.last.size.length <= 1) continue;
      const order = s.last.size.map((_, i) => i).sort((a, b) => s.last.mean[b] - s.last.mean[a]).slice(0, 40);
      gsec.append(el("details", {}, el("summary", {}, `${s.name}: the ${s.last.size.length} groups of step ${s.last.step}`),
        el("table", { class: "small" }, el("tr", {}, el("th", {}, "group"), el("th", {}, "size"), el("th", {}, "mean reward"), el("th", {}, "reward std")),
          ...order.map((i) => el("tr", {}, el("td", {}, i), el("td", {}, s.last.size[i]), el("td", {}, fmt(s.last.mean[i])), el("td", {}, fmt(s.last.std[i])))))));
    }
  });
  function scaleLegend(scales) {
    return el("div", { class: "legend" }, ...scales.map((s, j) => el("span", { class: "key" }, el("i", { style: `background:${PARTS[j % PARTS.length]}` }), s.name)));
  }

  // ---- completion browser
  const rows = [];
  runs.forEach((r, ri) => r.samples.forEach((s) => rows.push({ run: ri, s, text: (s.prompt + "\n" + s.segments.map((x) => x[1]).join("")).toLowerCase() })));
  const steps = [...new Set(rows.map((x) => x.s.step))].sort((a, b) => a - b);
  const opt = (v, t) => el("option", { value: v }, t);
  const fRun = el("select", { id: "f-run" }, opt("", "all runs"), ...runs.map((r, i) => opt(i, r.label)));
  const fStep = el("select", { id: "f-step" }, opt("", "all steps"), ...steps.map((s) => opt(s, `step ${s}`)));
  const fRmin = el("input", { id: "f-rmin", type: "number", step: "any", placeholder: "min" });
  const fRmax = el("input", { id: "f-rmax", type: "number", step: "any", placeholder: "max" });
  const fAdv = el("select", { id: "f-adv" }, opt("", "any advantage"), opt("pos", "advantage > 0"), opt("neg", "advantage < 0"), opt("zero", "advantage = 0"));
  const fCor = el("select", { id: "f-correct" }, opt("", "correct or not"), opt("yes", "correct"), opt("no", "wrong"));
  const fText = el("input", { id: "f-text", type: "search", placeholder: "search prompt and completion" });
  const count = el("span", { id: "count" });
  const tbody = el("tbody", {});
  const rewardNames = [...new Set(rows.flatMap((x) => Object.keys(x.s.rewards)))];
  const LIMIT = 300;
  function keep(x) {
    const s = x.s, num = (e) => e.value === "" ? null : Number(e.value);
    if (fRun.value !== "" && x.run !== Number(fRun.value)) return false;
    if (fStep.value !== "" && s.step !== Number(fStep.value)) return false;
    if (num(fRmin) !== null && !(s.reward >= num(fRmin))) return false;
    if (num(fRmax) !== null && !(s.reward <= num(fRmax))) return false;
    if (fAdv.value === "pos" && !(s.advantage > 0)) return false;
    if (fAdv.value === "neg" && !(s.advantage < 0)) return false;
    if (fAdv.value === "zero" && s.advantage !== 0) return false;
    if (fCor.value === "yes" && s.correct !== true) return false;
    if (fCor.value === "no" && s.correct !== false) return false;
    const q = fText.value.trim().toLowerCase();
    return !q || x.text.includes(q);
  }
  function completionCell(s) {
    const body = el("div", { class: "completion" }, ...s.segments.map(([kind, t]) =>
      el("span", { class: `seg ${kind}`, title: kind === "call" ? "tool call (model)" : kind === "result" ? "tool result (runtime, not trained)" : "" }, t)));
    const out = el("td", { class: "ctext" }, el("div", { class: "prompt" }, s.prompt), body);
    if (s.steps && s.steps.length) out.append(el("ol", { class: "steps" }, ...s.steps.map((e) =>
      el("li", { class: e.holds ? "ok" : "bad" }, `${e.holds ? "✓" : "✗"} ${e.expr} = ${e.result}`))));
    else if (s.steps) out.append(el("div", { class: "note" }, "no equation written"));
    return out;
  }
  function render() {
    const shown = rows.filter(keep);
    tbody.replaceChildren(...shown.slice(0, LIMIT).map((x) => {
      const s = x.s;
      return el("tr", { class: "sample" }, el("td", {}, el("i", { class: "sw", style: `background:${color(x.run)}` }), runs[x.run].label),
        el("td", {}, s.step), el("td", {}, s.group === undefined ? "–" : s.group), el("td", { class: "num" }, fmt(s.reward)),
        el("td", { class: "num " + (s.advantage > 0 ? "pos" : s.advantage < 0 ? "neg" : "") }, fmt(s.advantage)),
        el("td", {}, s.correct === null ? "–" : s.correct ? "✓" : "✗"),
        el("td", { class: "small" }, ...rewardNames.filter((n) => n in s.rewards).map((n) => el("span", { class: "rw" }, `${n} ${fmt(s.rewards[n])}`))),
        completionCell(s));
    }));
    count.textContent = `${shown.length} of ${rows.length} completions` + (shown.length > LIMIT ? ` (first ${LIMIT} shown)` : "");
  }
  for (const f of [fRun, fStep, fRmin, fRmax, fAdv, fCor, fText]) { f.addEventListener("input", render); f.addEventListener("change", render); }
  const head = el("tr", {}, ...["run", "step", "group", "reward", "advantage", "correct", "rewards", "prompt and completion"].map((h) => el("th", {}, h)));
  section("samples", "Completions",
    el("div", { class: "filters" }, fRun, fStep, el("label", {}, "reward ", fRmin, " to ", fRmax), fAdv, fCor, fText, count),
    el("p", { class: "note" }, "Model text is plain; ", el("span", { class: "seg call" }, "tool calls"), " and ",
      el("span", { class: "seg result" }, "tool results"), " (inserted by the runtime, masked out of the loss) are marked. ",
      "Reasoning steps checked by the reasoning_steps reward are listed under each completion: ✓ holds, ✗ wrong."),
    el("table", { id: "samples-table" }, el("thead", {}, head), tbody));
  render();

  // ---- configs
  const csec = section("config", "Configuration");
  if (D.diff.length) {
    csec.append(el("h3", {}, "Differences between the runs"), el("table", { id: "config-diff", class: "small" },
      el("tr", {}, el("th", {}, "key"), ...runs.map((r) => el("th", {}, r.label))),
      ...D.diff.map((d) => el("tr", {}, el("td", { class: "path" }, d.key), ...d.values.map((v) => el("td", {}, typeof v === "string" ? v : JSON.stringify(v)))))));
  } else if (runs.length > 1) csec.append(el("p", { class: "note" }, "The runs' configurations are the same (apart from run.out)."));
  runs.forEach((r) => csec.append(el("details", {}, el("summary", {}, `${r.label}: config.yaml`), el("pre", {}, r.config_text))));
  document.body.setAttribute("data-ready", "1");
})();
