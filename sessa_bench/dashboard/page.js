// The offline dashboard (sessa_bench/dashboard/page.py inlines this after plotly.js and the data).
// Every panel and table is recomputed from the embedded runs whenever a filter changes.
"use strict";
const DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
const COLORS = {sessa: "#d62728", transformer: "#1f77b4", mamba2: "#2ca02c", sessa_nofb: "#ff7f0e"};
const uniq = (xs) => [...new Set(xs)];
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs) => xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)) : null;

const FILTERS = {
  experiment: uniq(DATA.runs.map((r) => r.experiment)).sort(),
  family: uniq(DATA.sections.flatMap((s) => s.families).concat(DATA.runs.map((r) => r.family))),
  seed: uniq(DATA.runs.map((r) => r.seed)).sort((a, b) => a - b),
  rate: uniq(DATA.runs.map((r) => r.rate)).sort(),  // DATA.rates.chosen (the tables' runs) or .other (the rest)
};
// Unticked at first, so the page opens on what the tables report; while no run is at a chosen rate (every
// sweep under way) the page opens on the sweep instead of on nothing.
const OFF = {rate: new Set(FILTERS.rate.includes(DATA.rates.chosen) ? [DATA.rates.other] : [])};

function buildFilters() {
  const box = document.getElementById("filters");
  for (const [field, values] of Object.entries(FILTERS)) {
    const fs = document.createElement("fieldset");
    fs.innerHTML = `<legend>${field}</legend>`;
    for (const v of values) {
      const label = document.createElement("label");
      const on = OFF[field] && OFF[field].has(String(v)) ? "" : " checked";
      label.innerHTML = `<input type="checkbox"${on} data-field="${field}" value="${v}"> ${v}`;
      fs.appendChild(label);
    }
    box.appendChild(fs);
  }
  box.addEventListener("change", draw);
}

function selectedRuns() {
  const on = {};
  for (const field of Object.keys(FILTERS)) {
    on[field] = new Set([...document.querySelectorAll(`input[data-field="${field}"]:checked`)].map((i) => i.value));
  }
  return DATA.runs.filter((r) => on.experiment.has(r.experiment) && on.family.has(r.family) && on.seed.has(String(r.seed))
    && on.rate.has(r.rate));
}

function fmt(values, digits, missing = "not run") {
  if (!values.length) return missing;
  const m = mean(values), s = std(values);
  return s === null ? m.toFixed(digits) : `${m.toFixed(digits)} ± ${s.toFixed(digits)}`;
}

// The paper table's marks (spec.py Chosen.marks): `*` when a shown run is not converged; `(k of n seeds)` when
// the shown runs are all ones the table counts and fewer than the seeds the cell asks for.
function marks(shown, experiment, fam) {
  if (!shown.length) return "";
  const star = shown.some((r) => r.converged === false) ? "*" : "";
  const asked = (DATA.asked || {})[`${experiment}|${fam}`];
  const counted = shown.every((r) => r.converged !== null && r.converged !== undefined);
  return star + (asked && counted && shown.length < asked ? ` (${shown.length} of ${asked} seeds)` : "");
}

function tableHtml(section, runs) {
  let head = "<tr><th>family</th>";
  for (const c of section.columns) head += `<th>${c.title}</th><th>paper</th>`;
  let body = "";
  for (const fam of section.families) {
    body += `<tr><td>${fam}</td>`;
    section.columns.forEach((c, i) => {
      const scale = c.percent ? 100 : 1;
      const shown = runs.filter((r) => r.experiment === c.experiment && r.family === fam && c.metric in r.final);
      const vals = shown.map((r) => r.final[c.metric] * scale);
      const paper = section.paper[fam][i];
      const p = paper === null ? "not run" : (paper[1] === null ? paper[0].toFixed(c.digits)
        : `${paper[0].toFixed(c.digits)} ± ${paper[1].toFixed(c.digits)}`);
      const missing = (DATA.undecided || {})[`${c.experiment}|${fam}`] || "not run";  // a sweep under way
      body += `<td>${fmt(vals, c.digits, missing)}${marks(shown, c.experiment, fam)}</td><td>${p}</td>`;
    });
    body += "</tr>";
  }
  return `<table class="paper-table" data-table="${section.name}">${head}</tr>${body}</table>`;
}

function meanCurve(runs, metric) {
  const byStep = new Map();
  for (const r of runs) for (const [s, v] of r.curves[metric] || []) {
    if (!byStep.has(s)) byStep.set(s, []);
    byStep.get(s).push(v);
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return {x: steps, y: steps.map((s) => mean(byStep.get(s)))};
}

function traces(panel, runs) {
  const out = [];
  for (const fam of panel.families) {
    const rs = runs.filter((r) => r.experiment === panel.experiment && r.family === fam);
    const color = COLORS[fam];
    const name = `${fam} (${rs.length} run${rs.length === 1 ? "" : "s"})`;
    if (panel.kind === "curve") {
      const c = meanCurve(rs, panel.metrics[0]);
      if (c.x.length) out.push({type: "scatter", mode: "lines+markers", name, x: c.x, y: c.y, marker: {color, size: 4}});
    } else if (panel.kind === "slices") {
      const xs = [], ys = [], es = [];
      for (const m of panel.metrics) {
        const vals = rs.filter((r) => m in r.final).map((r) => r.final[m]);
        if (vals.length) { xs.push(m.replace("test/acc/", "")); ys.push(mean(vals)); es.push(std(vals) || 0); }
      }
      if (xs.length) out.push({type: "bar", name, x: xs, y: ys, error_y: {type: "data", array: es}, marker: {color}});
    } else {
      const key = panel.metrics[0];
      const vals = rs.map((r) => (panel.kind === "throughput" ? r.throughput_tokens_per_s : r.final[key]))
        .filter((v) => v !== null && v !== undefined);
      if (vals.length) out.push({type: "bar", name, x: [fam], y: [mean(vals)],
                                  error_y: {type: "data", array: [std(vals) || 0]}, marker: {color}});
    }
  }
  return out;
}

// An empty panel says why when the rate filter hides its experiment's runs (a sweep still under way).
function layout(panel, n, hidden) {
  const yTitle = panel.kind === "throughput" ? "tokens/s" : panel.kind === "slices" ? "test/acc" : panel.metrics[0];
  return {title: {text: panel.title, font: {size: 13}}, margin: {l: 55, r: 10, t: 40, b: 70}, barmode: "group",
          xaxis: {title: {text: panel.kind === "curve" ? "training step" : ""}}, yaxis: {title: {text: yTitle}},
          legend: {orientation: "h", y: -0.3}, showlegend: true,
          annotations: n ? [] : [{text: hidden ? "no runs at a chosen rate yet: tick \u201cother runs\u201d for the sweep"
                                          : "no selected runs", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5}]};
}

function buildSections() {
  const root = document.getElementById("sections");
  DATA.sections.forEach((s, si) => {
    const sec = document.createElement("section");
    sec.dataset.table = s.name;
    sec.innerHTML = `<h2>${s.title}</h2><div class="table-box"></div><div class="grid"></div>`;
    s.panels.forEach((p, pi) => {
      const div = document.createElement("div");
      div.className = "panel";
      div.id = `panel-${si}-${pi}`;
      div.dataset.kind = p.kind;
      div.dataset.experiment = p.experiment;
      sec.querySelector(".grid").appendChild(div);
    });
    root.appendChild(sec);
  });
}

function draw() {
  const runs = selectedRuns();
  const other = document.querySelector(`input[data-field="rate"][value="${DATA.rates.other}"]`);
  const hidden = (p) => other !== null && !other.checked
    && DATA.runs.some((r) => r.experiment === p.experiment && r.rate === DATA.rates.other);
  DATA.sections.forEach((s, si) => {
    document.querySelectorAll(".table-box")[si].innerHTML = tableHtml(s, runs);
    s.panels.forEach((p, pi) => {
      const t = traces(p, runs);
      Plotly.react(`panel-${si}-${pi}`, t, layout(p, t.length, hidden(p)), {displaylogo: false, responsive: true});
    });
  });
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
}

buildFilters();
buildSections();
draw();
