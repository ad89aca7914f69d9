// The page to try the models: pick or drop images, POST each to /classify, draw its top-k as bars.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const CONCURRENT = 4; // requests in flight at once: each image is its own request, so one bad file spoils nothing
const KEY_STORE = "cifar-api-key";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), modelInfo: $("model-info"), k: $("k"), keyField: $("key-field"), key: $("api-key"),
  drop: $("drop"), files: $("files"), status: $("status"), error: $("error"), results: $("results"),
};
let picked = []; // the files shown, classified again when the model or k changes

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
}

function headers() {
  const key = ui.key.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function loadModels() {
  try {
    const response = await fetch("models");
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const listed = await response.json();
    for (const model of listed.models) {
      const option = new Option(model.name, model.name, model.default, model.default);
      option.dataset.info = `${model.arch}, ${model.precision}, ${model.classes.length} classes` +
        (model.accuracy == null ? "" : `, validation accuracy ${percent(model.accuracy)}`);
      ui.model.add(option);
    }
    describeModel();
  } catch (error) {
    ui.error.textContent = `Could not list the models: ${error.message}`;
  }
}

function describeModel() {
  const option = ui.model.selectedOptions[0];
  ui.modelInfo.textContent = option ? option.dataset.info : "";
}

function card(file) {
  const item = document.createElement("li");
  item.className = "card";
  const thumbnail = document.createElement("img");
  thumbnail.src = URL.createObjectURL(file);
  thumbnail.alt = `thumbnail of ${file.name}`;
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("h2");
  title.textContent = file.name;
  const answer = document.createElement("div");
  answer.className = "answer";
  answer.textContent = "classifying…";
  body.append(title, answer);
  item.append(thumbnail, body);
  ui.results.append(item);
  return answer;
}

function drawBars(answer, prediction, fileName) {
  const bars = document.createElement("ol");
  bars.className = "bars";
  bars.setAttribute("aria-label", `most likely classes of ${fileName}`);
  for (const top of prediction.top_k) {
    const row = document.createElement("li");
    row.dataset.label = top.label;
    row.dataset.confidence = String(top.confidence);
    const label = document.createElement("div");
    label.className = "bar-label";
    const name = document.createElement("span");
    name.textContent = top.label;
    const value = document.createElement("span");
    value.textContent = percent(top.confidence);
    label.append(name, value);
    const track = document.createElement("div");
    track.className = "track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", top.label);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", (100 * top.confidence).toFixed(1));
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * top.confidence).toFixed(1)}%`;
    track.append(fill);
    row.append(label, track);
    bars.append(row);
  }
  answer.replaceChildren(bars);
}

async function classify(file, answer) {
  const form = new FormData();
  form.append("images", file, file.name);
  form.append("k", ui.k.value);
  if (ui.model.value) form.append("model", ui.model.value);
  let response;
  try {
    response = await fetch("classify", { method: "POST", body: form, headers: headers() });
  } catch (error) {
    answer.textContent = `The service did not answer: ${error.message}`;
    answer.className = "answer error";
    return false;
  }
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) {
      ui.keyField.hidden = false;
      ui.error.textContent = response.status === 401 ? "This service asks for an API key." : "That API key is not known.";
      ui.key.focus();
    }
    answer.textContent = body.error || `${response.status} ${response.statusText}`;
    answer.className = "answer error";
    return false;
  }
  drawBars(answer, body.predictions[0], file.name);
  return true;
}

async function run(files) {
  ui.error.textContent = "";
  ui.results.replaceChildren();
  const jobs = files.map((file) => [file, card(file)]);
  let done = 0;
  let failed = 0;
  ui.status.textContent = `Classifying ${files.length} image(s)…`;
  const worker = async () => {
    while (jobs.length) {
      const [file, answer] = jobs.shift();
      if (!(await classify(file, answer))) failed += 1;
      done += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT, files.length) }, worker));
  ui.status.textContent = `${done - failed} of ${files.length} image(s) classified by ${ui.model.value}` +
    (failed ? `; ${failed} could not be` : "") + ".";
}

function pick(fileList) {
  picked = Array.from(fileList);
  if (picked.length) run(picked);
}

ui.files.addEventListener("change", () => pick(ui.files.files));
ui.model.addEventListener("change", () => { describeModel(); if (picked.length) run(picked); });
ui.k.addEventListener("change", () => { if (picked.length) run(picked); });
ui.key.value = sessionStorage.getItem(KEY_STORE) || "";
ui.key.addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORE, ui.key.value.trim());
  if (picked.length) run(picked);
});
for (const type of ["dragenter", "dragover"]) {
  ui.drop.addEventListener(type, (event) => { event.preventDefault(); ui.drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  ui.drop.addEventListener(type, () => ui.drop.classList.remove("over"));
}
ui.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  pick(Array.from(event.dataTransfer.files).filter((file) => file.type.startsWith("image/") || !file.type));
});
loadModels();
