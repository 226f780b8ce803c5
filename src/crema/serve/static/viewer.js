// The viewer page: send the dropped files to /api/analyze and draw what comes back.
// Everything from the server or from a file name is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
// The viewer refuses writes without this header: a page of another site cannot send it.
const WRITE_HEADER = "X-Crema-Viewer";
let uploadLimit = null;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function header(table, names) {
  const row = table.createTHead().insertRow();
  for (const name of names) {
    const th = document.createElement("th");
    th.textContent = name;
    row.appendChild(th);
  }
}

async function loadInfo() {
  const info = await (await fetch("/api/info")).json();
  uploadLimit = info.upload_limit_bytes || null;
  const parts = [info.model];
  if (info.reference) parts.push(`reference: ${info.reference.records} ECGs`);
  $("model-info").textContent = parts.join(" · ");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("results").hidden = true;
}

function megabytes(n) {
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

// The body's JSON error, or the status when the answer is not JSON (a refused host, a proxy).
async function answer(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    return { error: `error ${response.status}: ${text.slice(0, 200)}` };
  }
}

async function analyze(files) {
  if (!files.length) return;
  const total = [...files].reduce((sum, f) => sum + f.size, 0);
  if (uploadLimit && total > uploadLimit) {
    return showError(`the upload: ${megabytes(total)}, over the viewer's upload limit of ${megabytes(uploadLimit)}`);
  }
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  form.append("fs", $("fs").value);
  form.append("leads", $("leads").value);
  $("error").hidden = true;
  $("status").textContent = `analysing ${[...files].map((f) => f.name).join(", ")}…`;
  try {
    const response = await fetch("/api/analyze", { method: "POST", body: form, headers: { [WRITE_HEADER]: "1" } });
    const body = await answer(response);
    $("status").textContent = "";
    if (!response.ok) return showError(body.error || `error ${response.status}`);
    render(body);
  } catch (err) {
    $("status").textContent = "";
    showError(`the viewer could not be reached: ${err}`);
  }
}

function render(r) {
  $("record-title").textContent =
    `${r.file}: ${r.duration_s.toFixed(1)} s at ${r.fs} Hz, ${r.leads_in_file.length} leads in the file, ` +
    `${r.windows} window${r.windows > 1 ? "s" : ""} of 10 s`;
  renderContract(r.contract);
  renderPredictions(r.predictions);
  renderNeighbours(r.neighbours);
  $("plot").src = r.plot_png;
  $("reconstruction").hidden = !r.reconstruction_png;
  if (r.reconstruction_png) {
    $("reconstruction").src = r.reconstruction_png;
    $("reconstruction-note").textContent =
      "grey: patches hidden from the encoder; red: the decoder's reconstruction of them; black: the input (z-scored)";
  } else {
    $("reconstruction-note").textContent =
      "no pretrained model with a decoder (serve a pretrained checkpoint, or pass --pretrained)";
  }
  $("results").hidden = false;
}

function renderContract(contract) {
  const table = $("contract");
  table.replaceChildren();
  for (const check of contract.checks) {
    const row = table.insertRow();
    cell(row, check.ok ? "✓" : "✗", check.ok ? "ok" : "bad");
    cell(row, check.name);
    cell(row, check.detail);
  }
  const states = $("lead-states");
  states.replaceChildren();
  for (const [lead, state] of Object.entries(contract.leads)) {
    const span = document.createElement("span");
    span.className = `lead ${state}`;
    span.textContent = state === "recorded" ? lead : `${lead} ${state}`;
    span.title = state;
    states.appendChild(span);
  }
}

function renderPredictions(predictions) {
  const table = $("predictions");
  table.replaceChildren();
  if (!predictions) {
    $("predictions-note").textContent = "a pretrained model makes no predictions (serve a fine-tuned classifier)";
    return;
  }
  if (predictions.length && predictions[0].value !== undefined) {
    renderValues(table, predictions);
    return;
  }
  header(table, ["class", "probability", "", "threshold"]);
  const body = table.createTBody();
  for (const p of predictions) {
    const row = body.insertRow();
    if (p.positive) row.className = "positive";
    cell(row, p.class);
    cell(row, p.probability.toFixed(2));
    row.insertCell().appendChild(probabilityBar(p));
    cell(row, p.threshold.toFixed(2));
  }
  const positives = predictions.filter((p) => p.positive).map((p) => p.class);
  $("predictions-note").textContent = positives.length
    ? `at or above threshold: ${positives.join(", ")} (thresholds picked on the validation set)`
    : "no class at or above its threshold (thresholds picked on the validation set)";
}

// A regression model: its predicted value of the target, in the target's units (no threshold).
function renderValues(table, predictions) {
  header(table, ["target", "predicted value"]);
  const body = table.createTBody();
  for (const p of predictions) {
    const row = body.insertRow();
    cell(row, p.class);
    cell(row, Number(p.value).toFixed(2));
  }
  $("predictions-note").textContent =
    "a regression model: its predicted value, the mean over the record's 10 s windows";
}

// Built element by element (the page's Content-Security-Policy allows no inline style markup).
function probabilityBar(p) {
  const bar = document.createElement("div");
  bar.className = "bar" + (p.positive ? " positive" : "");
  const fill = document.createElement("span");
  fill.style.width = `${(100 * Number(p.probability)).toFixed(1)}%`;
  const mark = document.createElement("i");
  mark.style.left = `${(100 * Number(p.threshold)).toFixed(1)}%`;
  mark.title = "threshold";
  bar.append(fill, mark);
  return bar;
}

function renderNeighbours(neighbours) {
  const table = $("neighbours");
  table.replaceChildren();
  if (!neighbours || !neighbours.length) {
    $("neighbours-note").textContent = "no reference set (start crema serve with --reference)";
    return;
  }
  header(table, ["record", "labels", "similarity"]);
  const body = table.createTBody();
  for (const n of neighbours) {
    const row = body.insertRow();
    cell(row, n.record_id).title = n.source;
    cell(row, n.labels || "");
    cell(row, n.similarity.toFixed(3));
  }
  $("neighbours-note").textContent =
    "cosine similarity of record embeddings, centred on the reference set's mean; hover an id for its source";
}

const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  analyze(e.dataTransfer.files);
});
$("file-input").addEventListener("change", (e) => analyze(e.target.files));
loadInfo();
