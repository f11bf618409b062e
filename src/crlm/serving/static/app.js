/* The CRLM calculator: a form generated from GET /schema/patient, POST /predict, and the answer drawn
   with plain DOM and inline SVG. No libraries and no request leaves this server. */
"use strict";

const BLOCKS = [
  ["clinical", "Clinical"],
  ["genomic", "Tumour genomics"],
  ["response", "Preoperative chemotherapy and response"],
  ["operative", "Operative and pathology (postoperative)"],
];
const SCORE_ORDER = ["fong", "game", "mcs", "tbs", "nordlinger"];
const EXAMPLE = {
  age_years: 64, sex: "male", primary_side: "left", primary_t_stage: "T3", primary_node_positive: true,
  primary_grade: "moderate", disease_free_interval_months: 0, n_liver_metastases: 3, largest_metastasis_cm: 4.2,
  bilobar_disease: true, cea_ng_ml: 35, ca19_9_u_ml: 60, extrahepatic_disease: false, major_comorbidity: false,
  body_mass_index: 27, kras_status: "mutant", nras_status: "wild_type", braf_v600e_status: "wild_type",
  neoadjuvant_chemotherapy: true, chemo_regimen: "folfox", chemo_biologic: "bevacizumab", chemo_cycles: 6,
  chemo_line: "first", recist_response: "PR", tumour_size_change_percent: -35, progression_before_surgery: false,
  resection_margin: "R0",
};
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { fields: [], labels: {}, apiKeyRequired: false, lastAnswer: null, models: [], defaults: {} };
const SCENARIO_COLORS = ["#1f5f8b", "#2e7d5b", "#8a6d1d", "#a23b3b", "#6b3fa0"];

function $(id) { return document.getElementById(id); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function pct(x) { return (100 * x).toFixed(1) + "%"; }
function ci(lo, hi) { return "(" + (100 * lo).toFixed(1) + "\u2013" + (100 * hi).toFixed(1) + ")"; }
function horizonLabel(months) {
  const years = months / 12;
  return Number.isInteger(years) ? `${years} year${years === 1 ? "" : "s"}` : `${months} months`;
}
function nice(name) { return String(name).replace(/_/g, " "); }

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

/* ------------------------------------------------------------------ the form */

function hintFor(f) {
  const parts = [];
  if (f.kind === "float" || f.kind === "int") {
    if (f.minimum !== null && f.maximum !== null) parts.push(`${f.minimum}\u2013${f.maximum}${f.unit ? " " + f.unit : ""}`);
    if (f.kind === "int") parts.push("whole number");
  }
  if (f.derived_from.length) {
    const labels = f.derived_from.map((n) => (state.labels[n] || nice(n)).toLowerCase());
    parts.push(`derived from ${labels.join(" and ")} when left empty`);
  }
  return parts.join("; ");
}

function controlFor(f) {
  const id = "f-" + f.name;
  if (f.kind === "bool") {
    return el("select", { id, name: f.name, "data-kind": "bool" },
      el("option", { value: "", text: "unknown" }), el("option", { value: "true", text: "yes" }),
      el("option", { value: "false", text: "no" }));
  }
  if (f.kind === "category") {
    const select = el("select", { id, name: f.name, "data-kind": "category" },
      el("option", { value: "", text: "not recorded" }));
    for (const c of f.categories) select.append(el("option", { value: c, text: nice(c) }));
    return select;
  }
  return el("input", {
    id, name: f.name, type: "number", inputmode: "decimal", "data-kind": f.kind,
    min: f.minimum, max: f.maximum, step: f.kind === "int" ? 1 : "any", required: f.required,
  });
}

function fieldRow(f) {
  const label = el("label", { for: "f-" + f.name, title: f.description }, f.label);
  if (f.required) label.append(" ", el("span", { class: "req", "aria-hidden": "true", text: "*" }));
  if (f.timing === "postoperative") label.append(el("span", { class: "tag", text: "postoperative" }));
  if (f.used_by_models === false) {
    label.append(el("span", { class: "tag", text: f.used_by_scores ? "scores only" : "not used by the models" }));
  }
  const control = el("div", { class: "control" }, controlFor(f));
  if (f.unit && f.kind !== "category" && f.kind !== "bool") control.append(el("span", { class: "unit", text: f.unit }));
  const row = el("div", { class: "field", "data-field": f.name }, label, control);
  const hint = hintFor(f);
  if (hint) row.append(el("div", { class: "hint", text: hint }));
  return row;
}

function buildForm(doc) {
  const kept = state.fields.length ? collectPatient() : {};  // a model change keeps what was typed
  state.labels = Object.fromEntries(doc.fields.map((f) => [f.name, f.label]));
  state.fields = doc.fields.filter((f) => BLOCKS.some(([b]) => b === f.block));
  const host = $("fieldsets");
  host.replaceChildren();
  for (const [block, title] of BLOCKS) {
    const fields = state.fields.filter((f) => f.block === block);
    if (!fields.length) continue;
    const usedByModels = fields.some((f) => f.used_by_models !== false);
    if (usedByModels) {
      const fs = el("fieldset", { id: "block-" + block }, el("legend", { text: title }));
      fields.forEach((f) => fs.append(fieldRow(f)));
      host.append(fs);
    } else {  // e.g. operative fields with preoperative models: only the Nordlinger score reads them
      const box = el("details", { class: "block", id: "block-" + block },
        el("summary", { text: title + " \u2014 used by the clinical scores only" }));
      fields.forEach((f) => box.append(fieldRow(f)));
      host.append(box);
    }
  }
  for (const [name, v] of Object.entries(kept)) {
    const node = $("f-" + name);
    if (node) node.value = String(v);
  }
}

function collectPatient() {
  const patient = {};
  for (const f of state.fields) {
    const node = $("f-" + f.name);
    if (!node || node.value === "") continue;
    if (f.kind === "bool") patient[f.name] = node.value === "true";
    else if (f.kind === "int") patient[f.name] = parseInt(node.value, 10);
    else if (f.kind === "float") patient[f.name] = Number(node.value);
    else patient[f.name] = node.value;
  }
  return patient;
}

function fillExample() {
  for (const f of state.fields) {
    const node = $("f-" + f.name);
    if (!node) continue;
    const v = EXAMPLE[f.name];
    node.value = v === undefined ? "" : String(v);
  }
  const operative = $("block-operative");
  if (operative && operative.tagName === "DETAILS") operative.open = true;
}

function clearErrors() {
  document.querySelectorAll(".field.invalid").forEach((n) => n.classList.remove("invalid"));
  document.querySelectorAll(".field-error").forEach((n) => n.remove());
  $("form-error").hidden = true;
}

function showErrors(message, errors) {
  $("form-error").textContent = message;
  $("form-error").hidden = false;
  for (const e of errors || []) {
    const row = document.querySelector(`.field[data-field="${CSS.escape(e.field)}"]`);
    if (!row) continue;
    row.classList.add("invalid");
    row.append(el("div", { class: "field-error", text: `${e.message} (rule: ${e.rule})` }));
  }
}

/* ------------------------------------------------------------------ the answer */

function renderSurvival(answer) {
  const body = $("survival-rows");
  body.replaceChildren();
  const os = answer.os, rfs = answer.rfs;
  os.horizons.forEach((h, j) => {
    const r = rfs.horizons[j];
    const row = el("tr", {}, el("th", { scope: "row", text: horizonLabel(h.months) }));
    for (const [key, x] of [["os", h], ["rfs", r]]) {
      const cell = el("td", { class: "num", id: `${key}-${h.months}`, "data-survival": x.survival },
        el("span", { class: "pct", text: pct(x.survival) }), el("span", { class: "ci", text: ci(x.lower, x.upper) }));
      row.append(cell);
    }
    body.append(row);
  });
  const last = (a) => a.curve.months[a.curve.months.length - 1];
  const median = (a) => a.median_reached ? `${a.median_months.toFixed(1)} months` : `not reached (> ${last(a)} months)`;
  body.append(el("tr", {}, el("th", { scope: "row", text: "Median" }),
    el("td", { id: "os-median", text: median(os) }), el("td", { id: "rfs-median", text: median(rfs) })));
  body.append(el("tr", {}, el("th", { scope: "row", text: "Risk group" }),
    el("td", { id: "os-group", class: "group-" + os.risk_group, text: os.risk_group }),
    el("td", { id: "rfs-group", class: "group-" + rfs.risk_group, text: rfs.risk_group })));
}

/* Curves with their 95% bands in one inline SVG. series: [{key, curve, color, name}]; marks: vertical lines. */
function drawCurves(series, marks, ariaLabel) {
  const W = 640, H = 320, m = { l: 48, r: 14, t: 12, b: 40 };
  const xmax = Math.max(...series.map((s) => s.curve.months[s.curve.months.length - 1]));
  const x = (t) => m.l + (t / xmax) * (W - m.l - m.r);
  const y = (v) => m.t + (1 - v) * (H - m.t - m.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": ariaLabel });
  for (let v = 0; v <= 1.0001; v += 0.25) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), stroke: "#e1e6ea" }));
    const label = svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6773" });
    label.textContent = `${Math.round(v * 100)}%`;
    root.append(label);
  }
  for (let t = 0; t <= xmax + 1e-9; t += 12) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: H - m.b, y2: H - m.b + 4, stroke: "#8d98a3" }));
    const label = svg("text", { x: x(t), y: H - m.b + 16, "text-anchor": "middle", "font-size": 11, fill: "#5b6773" });
    label.textContent = String(t);
    root.append(label);
  }
  const xlabel = svg("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", "font-size": 12, fill: "#1d2733" });
  xlabel.textContent = "Months after liver resection";
  root.append(xlabel);
  for (const t of marks) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: m.t, y2: H - m.b, stroke: "#b8c1ca", "stroke-dasharray": "3 3" }));
  }
  root.append(svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: "#8d98a3" }));
  root.append(svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, stroke: "#8d98a3" }));
  for (const s of series) {
    const c = s.curve;
    const upper = c.months.map((t, i) => `${x(t).toFixed(1)},${y(c.upper[i]).toFixed(1)}`);
    const lower = c.months.map((t, i) => `${x(t).toFixed(1)},${y(c.lower[i]).toFixed(1)}`).reverse();
    root.append(svg("polygon", { points: upper.concat(lower).join(" "), fill: s.color, "fill-opacity": series.length > 2 ? 0.07 : 0.14, stroke: "none", "data-series": s.key + "-band" }));
    const line = c.months.map((t, i) => `${x(t).toFixed(1)},${y(c.survival[i]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: line, fill: "none", stroke: s.color, "stroke-width": 2.2, "data-series": s.key }));
  }
  return root;
}

function legendFor(series) {
  return el("div", { class: "legend" }, ...series.map((s) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = s.color;  // CSSOM: the CSP allows no inline style attribute
    return el("span", {}, swatch, s.name);
  }));
}

function renderChart(answer) {
  const series = [{ key: "os", curve: answer.os.curve, color: "#1f5f8b", name: "Overall survival" },
    { key: "rfs", curve: answer.rfs.curve, color: "#b5651d", name: "Recurrence-free survival" }];
  $("chart").replaceChildren(drawCurves(series, answer.os.horizons.map((h) => h.months), "Predicted survival curves"));
  const legend = $("legend");
  legend.replaceChildren();
  for (const s of series) {
    legend.append(el("span", {}, el("span", { class: "swatch " + s.key }), s.name + " (shaded: 95% CI of the estimate)"));
  }
}

function cell(id, x) {
  if (!x || x.available === false) return el("td", { id, class: "muted small", text: (x && x.reason) || "\u2014" });
  return el("td", { class: "num", id, "data-survival": x.survival },
    el("span", { class: "pct", text: pct(x.survival) }), el("span", { class: "ci", text: ci(x.lower, x.upper) }));
}

function renderConditional(answer) {
  const box = $("conditional-box");
  const cond = answer.conditional;
  box.hidden = !cond;
  if (!cond) return;
  const s = cond.os.event_free_at_months;
  $("conditional-title").textContent = `Given event-free ${s} months after resection`;
  $("conditional-caption").textContent = `OS: ${cond.os.condition}; RFS: ${cond.rfs.condition}. ` +
    "Survival from now on (95% interval).";
  const body = $("conditional-rows");
  body.replaceChildren();
  const rows = (cond.os.horizons || cond.rfs.horizons || []);
  rows.forEach((h, j) => {
    const months = h.months_from_now;
    const tr = el("tr", {}, el("th", { scope: "row", text: `${horizonLabel(months)} more (at ${months + s} months)` }));
    for (const key of ["os", "rfs"]) {
      const c = cond[key];
      tr.append(c.available ? cell(`cond-${key}-${months}`, c.horizons[j]) : cell(`cond-${key}-${months}`, c));
    }
    body.append(tr);
  });
  const series = [];
  if (cond.os.available) series.push({ key: "cond-os", curve: cond.os.curve, color: "#1f5f8b", name: "Overall survival, given alive" });
  if (cond.rfs.available) series.push({ key: "cond-rfs", curve: cond.rfs.curve, color: "#b5651d", name: "Recurrence-free survival, given recurrence-free" });
  const host = $("conditional-chart");
  host.replaceChildren();
  if (series.length) host.append(drawCurves(series, [s], "Conditional survival curves"), legendFor(series));
}

function renderScenarios(answer) {
  const box = $("scenario-box");
  const sc = answer.scenarios;
  box.hidden = !sc;
  if (!sc) return;
  const usable = ["os", "rfs"].filter((ep) => sc[ep].available);
  const sameLabel = usable.length === 2 && sc.os.label === sc.rfs.label;  // one cohort: say it once
  $("scenario-label").textContent = sameLabel ? sc.os.label : ["os", "rfs"].map((ep) => sc[ep].available
    ? `${ep.toUpperCase()}: ${sc[ep].label}` : `${ep.toUpperCase()}: no scenarios (${sc[ep].reason}).`).join(" ");
  const horizons = answer.os.horizons.map((h) => h.months);
  const head = el("tr", {}, el("th", { scope: "col", text: "Response" }), el("th", { scope: "col", text: "Training patients" }));
  for (const ep of usable) for (const h of horizons) head.append(el("th", { scope: "col", text: `${ep.toUpperCase()} ${horizonLabel(h)}` }));
  $("scenario-head").replaceChildren(head);
  const body = $("scenario-rows");
  body.replaceChildren();
  const base = sc[usable[0]] || { scenarios: [] };
  const notes = [...(sc.os.notes || []), ...(sc.rfs.notes || [])];
  base.scenarios.forEach((item, i) => {
    const tr = el("tr", { id: "scenario-" + item.key }, el("th", { scope: "row", text: item.label }),
      el("td", { class: "num", text: item.training_patients === null || item.training_patients === undefined ? "\u2014" : String(item.training_patients) }));
    for (const ep of usable) {
      const s = sc[ep].scenarios[i];
      horizons.forEach((h, j) => tr.append(s.available ? cell(`scn-${ep}-${item.key}-${h}`, s.horizons[j])
        : cell(`scn-${ep}-${item.key}-${h}`, s)));
      for (const n of s.notes || []) notes.push(`${item.label} (${ep.toUpperCase()}): ${n}`);
    }
    body.append(tr);
  });
  $("scenario-notes").textContent = [...new Set(notes)].join(" ");
  for (const ep of ["os", "rfs"]) {
    const host = $("scenario-chart-" + ep);
    host.replaceChildren();
    if (!sc[ep].available) { host.append(el("p", { class: "muted small", text: sc[ep].reason })); continue; }
    const series = sc[ep].scenarios.filter((s) => s.available).map((s, i) => ({
      key: `scn-${ep}-${s.key}`, curve: s.curve, color: SCENARIO_COLORS[i % SCENARIO_COLORS.length], name: s.label }));
    host.append(drawCurves(series, horizons, `${ep.toUpperCase()} by response`), legendFor(series));
  }
}

function cohortText(ref) {
  const c = ref.training_cohort || {};
  const size = c.patients ? `${c.patients} patients${c.events ? `, ${c.events} events` : ""}` : "size not recorded";
  return `${c.name || "unknown cohort"} (${c.kind || "?"}; ${size})`;
}

function renderAnswerModels(answer) {
  const host = $("answer-models");
  host.replaceChildren();
  for (const ep of ["os", "rfs"]) {
    const ref = answer.models[ep];
    const line = el("p", { class: "answer-model", id: "answer-model-" + ep },
      el("strong", { text: ep === "os" ? "Overall survival" : "Recurrence-free survival" }),
      `: ${ref.name}${ref.version ? " v" + ref.version : ""}, trained on ${cohortText(ref)}`);
    if (ref.label) line.append(" ", el("span", { class: "demo-badge", text: ref.label }));
    host.append(line);
  }
}

function renderPrint(answer, patient) {
  $("print-meta").textContent = `Printed ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC. ` +
    ["os", "rfs"].map((ep) => `${ep.toUpperCase()} model ${answer.models[ep].name}, trained on ` +
      cohortText(answer.models[ep]) + (answer.models[ep].label ? ` \u2014 ${answer.models[ep].label}` : "")).join("; ") +
    ". " + (answer.disclaimer || "");
  const body = $("print-inputs").querySelector("tbody");
  body.replaceChildren(...Object.entries(patient).map(([k, v]) => el("tr", {},
    el("th", { scope: "row", text: state.labels[k] || nice(k) }), el("td", { text: String(v) }))));
  if (answer.conditional) body.append(el("tr", {}, el("th", { scope: "row", text: "Already event-free for" }),
    el("td", { text: `${answer.conditional.os.event_free_at_months} months` })));
}

function renderScores(scores) {
  const body = $("scores-rows");
  body.replaceChildren();
  for (const name of SCORE_ORDER) {
    const s = scores[name];
    if (!s) continue;
    const value = s.total === null ? "\u2014" : (name === "tbs" ? s.total.toFixed(1) : String(Math.round(s.total)));
    let note = s.reason || "";
    if (!note && !s.preoperative) note = "uses postoperative information (resection margin)";
    if (!note && name !== "tbs") note = `groups: ${s.groups.join(" / ")}`;
    body.append(el("tr", { id: "score-" + name },
      el("th", { scope: "row", text: s.label }), el("td", { class: "num", text: value }),
      el("td", { text: s.group || "not computable" }), el("td", { class: "small muted", text: note })));
  }
}

function renderContributions(answer) {
  const all = [...answer.os.contributions, ...answer.rfs.contributions];
  const scale = Math.max(1e-9, ...all.map((c) => Math.abs(c.size)));
  for (const key of ["os", "rfs"]) {
    const host = $("contrib-" + key);
    host.replaceChildren();
    for (const c of answer[key].contributions) {
      const bar = el("div", { class: "bar " + c.direction });
      bar.style.width = `${(50 * Math.abs(c.size)) / scale}%`;
      const sign = c.size > 0 ? "+" : "\u2212";
      host.append(el("div", { class: "bar-row", "data-field": c.field },
        el("div", { class: "sentence", text: c.sentence }),
        el("div", { class: "bar-track", title: `${sign}${Math.abs(c.size).toFixed(2)}` }, el("div", { class: "axis" }), bar),
        el("div", { class: "size", text: `${sign}${Math.abs(c.size).toFixed(2)} (log hazard ratio)` })));
    }
    if (!answer[key].contributions.length) host.append(el("p", { class: "muted small", text: "No contributor stands out." }));
  }
}

function renderWarnings(warnings) {
  const list = $("warnings");
  list.replaceChildren(...warnings.map((w) => el("li", { text: w })));
  $("warning-count").textContent = String(warnings.length);
}

function renderAnswer(answer, patient) {
  state.lastAnswer = answer;
  renderAnswerModels(answer);
  renderSurvival(answer);
  renderChart(answer);
  renderConditional(answer);
  renderScenarios(answer);
  renderPrint(answer, patient || {});
  renderScores(answer.scores);
  renderContributions(answer);
  renderWarnings(answer.warnings || []);
  const refs = Object.values(answer.models || {});
  $("answered-by").textContent = "Answered by " + refs.map((r) =>
    `${r.name}${r.version ? " v" + r.version : ""}${r.alias ? " @" + r.alias : ""}`).join(" and ") +
    ". " + (answer.notices || []).join(". ") + (answer.notices && answer.notices.length ? ". " : "") +
    (answer.disclaimer || "");
  $("results-empty").hidden = true;
  $("results-body").hidden = false;
}

/* ------------------------------------------------------------------ wiring */

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const form = $("patient-form");
  if (!form.checkValidity()) {  // the browser enforces min / max / step / required
    form.reportValidity();
    showErrors("Please correct the highlighted fields.", [...form.querySelectorAll(":invalid")]
      .map((n) => ({ field: n.name, message: n.validationMessage, rule: hintFor(state.fields.find((f) => f.name === n.name) || { derived_from: [] }) || "required" })));
    return;
  }
  const button = $("submit");
  button.disabled = true;
  document.body.dataset.state = "busy";
  try {
    const patient = collectPatient();
    const request = { patient, models: chosenModels() };
    const s = $("f-event_free_at_months").value;
    if (s !== "") request.event_free_at_months = Number(s);
    if ($("f-scenarios").checked) request.scenarios = true;
    const resp = await fetch("/predict", { method: "POST", headers: headers(), body: JSON.stringify(request) });
    const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (resp.ok) {
      renderAnswer(body, patient);
      document.body.dataset.state = "done";
    } else {
      if (resp.status === 401) $("api-key-row").hidden = false;
      showErrors(body.error || `HTTP ${resp.status}`, body.errors);
      document.body.dataset.state = "error";
    }
  } catch (err) {
    showErrors(`The service did not answer (${err}).`, []);
    document.body.dataset.state = "error";
  } finally {
    button.disabled = false;
  }
}

function chosenModels() {
  return { os: $("model-os").value || undefined, rfs: $("model-rfs").value || undefined };
}

function modelOption(m) {
  const c = m.training_cohort || {};
  const size = c.patients ? `, ${c.patients} patients` : "";
  const text = `${m.name} (${m.model_name || "model"}; ${c.name || "cohort"}${size})` +
    (m.label ? ` \u2014 ${m.label}` : "") + (m.default ? " [default]" : "");
  return el("option", { value: m.name, text, selected: m.default });
}

function describeChoice() {
  const chosen = chosenModels();
  const parts = [], cohorts = [];
  for (const ep of ["os", "rfs"]) {
    const m = state.models.find((x) => x.name === chosen[ep]);
    if (!m) continue;
    const c = m.training_cohort || {};
    parts.push(`${ep.toUpperCase()} ${m.name}${m.version ? " v" + m.version : ""} (${m.model_name || "model"})`);
    cohorts.push(`${ep.toUpperCase()}: ${c.name || "unknown cohort"}, ${c.kind || "?"}` +
      `${c.patients ? `, ${c.patients} patients, ${c.events} events` : ""}${c.source ? ` (${c.source}` +
      `${c.licence ? `; ${c.licence}` : ""})` : ""}${m.label ? ` \u2014 ${m.label}` : ""}`);
  }
  $("model-line").textContent = "Models: " + parts.join(" \u00b7 ") + " \u2014 trained on " + cohorts.join("; ");
  $("model-cohorts").textContent = cohorts.join(". ");
  $("cohort-line").textContent = "Training cohorts: " + cohorts.join("; ") +
    ". Not for clinical use without local validation.";
  const method = state.models.filter((m) => Object.values(chosen).includes(m.name)).map((m) => m.explainer).find(Boolean);
  if (method) $("contrib-method").textContent = `Contributions: ${method}. Red raises the risk, green lowers it.`;
}

let schemaRequest = 0;

async function loadSchema() {
  const chosen = chosenModels();
  const query = Object.entries(chosen).filter(([, v]) => v).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
  const mine = ++schemaRequest;
  const doc = await fetch("/schema/patient" + (query ? "?" + query : "")).then((r) => r.json());
  if (mine !== schemaRequest) return;  // the models were changed again meanwhile: the later answer builds the form
  buildForm(doc);
  describeChoice();
}

async function loadModels(attempt = 0) {
  const resp = await fetch("/models", { headers: headers() });
  if (resp.status === 503 && attempt < 60) {
    $("model-line").textContent = "The models are loading\u2026";
    await new Promise((r) => setTimeout(r, 1000));
    return loadModels(attempt + 1);
  }
  if (resp.status === 401) {
    $("api-key-row").hidden = false;
    $("model-line").textContent = "This service needs an API key: enter it in the form.";
    return;
  }
  if (!resp.ok) { $("model-line").textContent = `Model information unavailable (HTTP ${resp.status}).`; return; }
  const info = await resp.json();
  const explainers = await fetch("/model_info", { headers: headers() }).then((r) => r.ok ? r.json() : {}).catch(() => ({}));
  state.models = info.models.map((m) => ({ ...m, explainer: Object.values(explainers.models || {})
    .filter((x) => x.registered_name === m.registered_name).map((x) => x.explainer)[0] }));
  state.defaults = info.defaults;
  for (const ep of ["os", "rfs"]) {
    $("model-" + ep).replaceChildren(...state.models.filter((m) => m.endpoint === ep).map(modelOption));
  }
  await loadSchema();
}

async function init() {
  const config = await fetch("/ui/config.json").then((r) => r.json()).catch(() => ({}));
  state.apiKeyRequired = Boolean(config.api_key_required);
  $("api-key-row").hidden = !state.apiKeyRequired;
  const doc = await fetch("/schema/patient").then((r) => r.json());
  buildForm(doc);
  $("patient-form").addEventListener("submit", submit);
  $("example").addEventListener("click", fillExample);
  $("patient-form").addEventListener("reset", () => { clearErrors(); });
  $("api-key").addEventListener("change", () => loadModels().catch(() => {}));
  $("model-os").addEventListener("change", () => loadSchema().catch(() => {}));
  $("model-rfs").addEventListener("change", () => loadSchema().catch(() => {}));
  $("print").addEventListener("click", () => window.print());
  try {
    await loadModels();
  } catch (err) {
    $("model-line").textContent = "Model information unavailable.";
  }
  document.body.dataset.state = "ready";
}

document.addEventListener("DOMContentLoaded", init);
