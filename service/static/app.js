// The page to try the models: pick or drop images, POST each to /classify, draw its top-k as bars.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const CONCURRENT = 4; // requests in flight at once: each image is its own request, so one bad file spoils nothing
// An overloaded service (503), or a rate limit in front of it (429), is asked again after its Retry-After, this
// many times: each image is its own request, so a limit per second would otherwise fail all but the first few.
const RETRIES = 3;
const LATER = new Set([429, 503]);
// The longest one Retry-After is waited, as the batch scorer's MAX_RETRY_AFTER (service/score/remote_requests.py): a service
// or gateway that asks for longer is unavailable for now, for every image alike, so the run stops and says so
// rather than hold its cards at "classifying…" for as long as a header says.
const MAX_WAIT_S = 60;
// A request is given up this long after the service's own --timeout (GET /models' limits.timeout_s), so that a live
// service's 504, which says why, comes first: this catches a connection or proxy that hangs without answering.
const TIMEOUT_MARGIN_S = 30;
// Until the service says its timeout (one from before it did says none): its default of 60 s and the margin.
const DEFAULT_TIMEOUT_S = 90;
const K_CHOICES = [1, 3, 5];
// What the chosen model's confidences mean, by /models' `calibrated`: a model exported with --calibrate none
// has none of the calibrated ones' meaning, and the page must not claim it.
const CALIBRATION = {
  true: "Confidences are calibrated: among predictions shown at 80%, about 80 in 100 are right.",
  false: "This model's confidences are not calibrated: a prediction shown at 80% may be right more or less " +
    "often than 80 in 100.",
};
// The refusals that every image of the run would get alike (the remedy "stop" of service/contract.py's REASONS;
// tests/test_page.py keeps the two the same): the first one ends the run. Any other reason is the image's own.
const STOP_REASONS = new Set([
  "unsupported_media_type", "bad_tensor", "no_images", "bad_k", "bad_min_confidence", "bad_fit", "unknown_model",
  "no_such_path", "method_not_allowed", "cors_refused", "unauthorized", "forbidden",
]);
const KEY_STORE = "cifar-api-key";
// The most images one pick or drop classifies: each is a card and a request, a person reads a few hundred at most,
// and `python -m service score` is the tool for a whole data set. A dropped folder is read only this far, so that
// a drop of a home folder ends.
const MAX_IMAGES = 500;

const $ = (id) => document.getElementById(id);
const ui = {
  controls: $("controls"), model: $("model"), modelInfo: $("model-info"), k: $("k"), fit: $("fit"),
  fitInfo: $("fit-info"), threshold: $("threshold"), keyField: $("key-field"), key: $("api-key"), drop: $("drop"),
  files: $("files"), sizeHint: $("size-hint"), limitsHint: $("limits-hint"), status: $("status"),
  error: $("error"), results: $("results"), calibration: $("calibration"),
};
let fits = {}; // name -> what it does, as the service lists them
let maxBodyBytes = null; // the service's limit on one request's body (/models), past which an image is not sent
let timeoutS = DEFAULT_TIMEOUT_S; // how long one attempt is waited for; a 503's wait is not counted
let picked = []; // the files shown, classified again when the model or k changes
let current = null; // the run on screen: {id, controller}; an older run's answers are dropped, its requests aborted
let thumbnails = []; // object URLs of the cards on screen, released when they go
// A file's place in a dropped folder ("photos/cats/1.png"), shown on its card: two folders may each hold a 1.png.
const paths = new WeakMap();
const shownName = (file) => paths.get(file) ?? file.name;
let drops = 0; // drops so far: a folder still being read when another drop comes is dropped

// "1 image", "3 images"
const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// To one decimal. A confidence that would round to 100% or to 0% is neither certain nor impossible, and is said
// as such: a calibrated 99.6% is wrong about 4 times in 1,000, which "100%" would hide.
function percent(p) {
  if (p <= 0 || p >= 1) return `${Math.round(100 * p)}%`;
  const shown = (100 * p).toFixed(1);
  if (shown === "100.0") return ">99.9%";
  if (shown === "0.0") return "<0.1%";
  return `${shown}%`;
}

// A threshold as the person typed it (99.95 stays 99.95%), not rounded to the confidences' one decimal.
const typedPercent = (fraction) => `${Number((100 * fraction).toPrecision(12))}%`;

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
      // marked: after a change of model, which one the service answers with when asked for none
      const shown = model.default ? `${model.name} (default)` : model.name;
      const option = new Option(shown, model.name, model.default, model.default);
      option.dataset.info = `${model.arch}, ${model.precision}, ${model.classes.length} classes` +
        (model.accuracy == null ? "" : `, validation accuracy ${percent(model.accuracy)}`);
      option.dataset.classes = String(model.classes.length);
      option.dataset.size = Array.isArray(model.input_size) ? model.input_size.join(" x ") : "";
      option.dataset.fit = model.fit || "";
      // true or false as the service says; absent from a service from before it said, which claims neither
      option.dataset.calibrated = typeof model.calibrated === "boolean" ? String(model.calibrated) : "";
      ui.model.add(option);
    }
    fits = Object.fromEntries((listed.fits || []).map((fit) => [fit.name, fit.help]));
    ui.fit.replaceChildren(new Option("the model's own", ""), ...Object.keys(fits).map((name) => new Option(name, name)));
    if (listed.limits) {
      ui.limitsHint.textContent = limitsText(listed.limits);
      maxBodyBytes = listed.limits.max_body_bytes;
      if (Number.isFinite(listed.limits.timeout_s)) timeoutS = listed.limits.timeout_s + TIMEOUT_MARGIN_S;
    }
    describeModel();
  } catch (error) {
    ui.error.textContent = `Could not list the models: ${error.message}. Reload the page to try again.`;
  }
}

const figure = (value) => String(Number(value.toPrecision(3)));

function limitsText(limits) {
  return `up to ${figure(limits.max_body_bytes / 2 ** 20)} MiB and ${figure(limits.max_pixels / 1e6)} megapixels each`;
}

function describeFit() {
  const own = ui.model.selectedOptions[0]?.dataset.fit;
  ui.fit.options[0].text = own ? `the model's own (${own})` : "the model's own";
  const name = ui.fit.value || own;
  ui.fitInfo.textContent = name && fits[name] ? `${name}: ${fits[name]}` : "";
}

// The threshold as the service takes it (0 to 1), null when off, or undefined when it is not a percentage.
function minConfidence() {
  const text = ui.threshold.value.trim();
  if (!text && ui.threshold.validity.valid) return null;
  const percentage = Number(text);
  return text && Number.isFinite(percentage) && percentage >= 0 && percentage <= 100 ? percentage / 100 : undefined;
}

function describeModel() {
  describeFit();
  const option = ui.model.selectedOptions[0];
  ui.modelInfo.textContent = option ? option.dataset.info : "";
  ui.calibration.textContent = CALIBRATION[option ? option.dataset.calibrated : ""] ?? "";
  if (option && option.dataset.size) {
    ui.sizeHint.textContent = `each is shrunk to the model's ${option.dataset.size} pixels`;
  }
  // The service refuses a k above the model's class count: offer only what this model can answer.
  const classes = option ? Number(option.dataset.classes) : Infinity;
  const choices = K_CHOICES.filter((k) => k < classes);
  if (classes !== Infinity && !choices.includes(classes) && classes <= K_CHOICES.at(-1)) choices.push(classes);
  const wanted = Number(ui.k.value) || 3;
  ui.k.replaceChildren(...choices.map((k) => new Option(String(k), String(k))));
  const kept = choices.filter((k) => k <= wanted).at(-1) ?? choices[0];
  ui.k.value = String(kept);
}

function card(file) {
  const item = document.createElement("li");
  item.className = "card";
  const thumbnail = document.createElement("img");
  thumbnail.src = URL.createObjectURL(file);
  thumbnails.push(thumbnail.src);
  thumbnail.alt = `thumbnail of ${shownName(file)}`;
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("h2");
  title.textContent = shownName(file);
  const answer = document.createElement("div");
  answer.className = "answer";
  answer.textContent = "classifying…";
  body.append(title, answer);
  item.append(thumbnail, body);
  ui.results.append(item);
  return answer;
}

function drawBars(answer, prediction, fileName, threshold) {
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
    track.setAttribute("aria-valuetext", value.textContent); // read as shown: not "100" for a 99.96
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * top.confidence).toFixed(1)}%`;
    track.append(fill);
    row.append(label, track);
    bars.append(row);
  }
  answer.replaceChildren(bars);
  if (typeof prediction.confident === "boolean") {
    const mark = document.createElement("p");
    mark.className = prediction.confident ? "mark confident" : "mark unsure";
    mark.textContent = prediction.confident ? `confident (at least ${typedPercent(threshold)})` :
      `unsure: under ${typedPercent(threshold)}`;
    answer.append(mark);
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  if (signal.aborted) return resolve();
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

class TimedOut extends Error {}

// The seconds a Retry-After asks to wait (a number, or an HTTP date), or null where it says neither.
function retryAfter(response) {
  const value = (response.headers.get("Retry-After") || "").trim();
  if (!value) return null;
  const seconds = /^\d+(\.\d*)?$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
  return Number.isFinite(seconds) ? Math.max(0, seconds) : null;
}

const duration = (seconds) => (seconds < 120 ? `${Math.ceil(seconds)} s` : `${Math.round(seconds / 60)} min`);

// What an error answer says: the service's message, or its status where it has none of the service's shape.
function said(response, body) {
  // A proxy or gateway in front of the service may answer with an `error` of its own shape (an object): only the
  // service's message, a string, is shown as it is.
  const message = body && typeof body.error === "string" ? body.error : "";
  return message || `${response.status} ${response.statusText}`;
}

// Whether `file` cannot be read. A file deleted or changed on disk since it was picked, or a folder dropped with
// the images, fails its request as a network failure does: without this, one such file read as the service gone
// and ended the whole run. Its first chunk is read, not a slice: a deleted file's size reads as 0, and an empty
// slice of it reads fine.
async function unreadable(file) {
  const reader = file.stream().getReader();
  try {
    await reader.read();
    return false;
  } catch {
    return true;
  } finally {
    reader.cancel().catch(() => {});
  }
}

// One POST and its JSON body (null where it is none), within timeoutS; throws TimedOut when that passed, or
// what fetch threw (an AbortError once `signal` is aborted, a TypeError when the service cannot be reached).
async function post(form, signal) {
  signal.throwIfAborted(); // its abort event is past: the listener below would never hear it
  const attempt = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; attempt.abort(); }, 1000 * timeoutS);
  const abort = () => attempt.abort();
  signal.addEventListener("abort", abort, { once: true });
  try {
    const response = await fetch("classify", { method: "POST", body: form, headers: headers(), signal: attempt.signal });
    const body = await response.json().catch(() => null);
    // a body cut short, not one that is no JSON (a proxy's page): what is said of it is why it was cut
    if (body === null && attempt.signal.aborted) throw timedOut ? new TimedOut() : new Error("aborted");
    return { response, body };
  } catch (error) {
    throw timedOut && !signal.aborted ? new TimedOut() : error;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", abort);
  }
}

// One image's answer: its prediction, {error} with a message for a person (and `stop`, a short why, where every
// other image would be refused alike), or {aborted} once `signal` is. Never throws. `waiting` is told, each
// second, what to show while a 429 or 503 is waited out, and null when the image is sent again.
async function classify(file, settings, signal, waiting) {
  // Not sent: a service refuses a body over its limit before reading it, and over a real network that early
  // answer can arrive as a reset connection, which would read as the service gone and end the run.
  if (maxBodyBytes !== null && file.size > maxBodyBytes) {
    return { error: `Not sent: ${figure(file.size / 2 ** 20)} MiB, over the service's limit of ` +
      `${figure(maxBodyBytes / 2 ** 20)} MiB per image.` };
  }
  for (let attempt = 0; ; attempt += 1) {
    const form = new FormData();
    form.append("images", file, file.name);
    form.append("k", settings.k);
    if (settings.model) form.append("model", settings.model);
    if (settings.fit) form.append("fit", settings.fit);
    if (settings.minConfidence !== null) form.append("min_confidence", String(settings.minConfidence));
    let response, body;
    try {
      ({ response, body } = await post(form, signal));
    } catch (error) {
      if (signal.aborted) return { aborted: true };
      if (error instanceof TimedOut) {
        // the image's own: a large one on a slow link takes longer than the rest
        return { error: `No answer within ${timeoutS} s: the service or the connection to it is stuck. ` +
          "Pick the image again to retry." };
      }
      if (await unreadable(file)) {
        return { error: "Could not read this file: it was moved or changed after it was picked, or it is a " +
          "folder. Pick the images again." };
      }
      const message = `The service could not be reached: ${error.message}`;
      return { error: message, stop: { why: "the service could not be reached", message } };
    }
    if (LATER.has(response.status) && attempt < RETRIES) {
      const asked = retryAfter(response);
      if (asked !== null && asked > MAX_WAIT_S) {
        const why = `the service asks to be asked again in ${duration(asked)}`;
        const message = `${said(response, body)}: ${why}. Pick the images again then.`;
        return { error: message, stop: { why, message } };
      }
      const busy = response.status === 429 ? "too many requests" : "service busy";
      for (let left = 1000 * (asked || 1); left > 0 && !signal.aborted;) {
        waiting(`${busy}: trying again in ${Math.ceil(left / 1000)} s`);
        const step = left % 1000 || 1000; // to the next whole second left, so that the count is never stale
        await sleep(step, signal);
        left -= step;
      }
      waiting(null);
      continue; // once aborted, post throws: {aborted}
    }
    if (!response.ok) {
      const error = said(response, body);
      // by status too: a gateway asking for its own credentials names no reason of the service's
      if (response.status === 401 || response.status === 403) {
        const stop = response.status === 401 ?
          { why: "this service asks for an API key", message: "This service asks for an API key." } :
          { why: "that API key is not known", message: "That API key is not known." };
        return { error, stop: { ...stop, key: true } };
      }
      if (body && STOP_REASONS.has(body.reason)) return { error, stop: { why: error, message: error } };
      return { error };
    }
    const prediction = body && Array.isArray(body.predictions) ? body.predictions[0] : null;
    if (!prediction || !Array.isArray(prediction.top_k)) {
      // e.g. a proxy in front of the service answering with its own page
      return { error: `Not an answer of this service (${response.status}, ${response.headers.get("content-type")})` };
    }
    return { prediction };
  }
}

async function run(files) {
  // read once: a change starts another run
  const settings = { model: ui.model.value, k: ui.k.value, fit: ui.fit.value, minConfidence: minConfidence() };
  // Refused before the run on screen is stopped: stopped for nothing, its cards would say "classifying…" for good.
  if (settings.minConfidence === undefined) {
    ui.error.textContent = "Mark unsure below: enter a percentage from 0 to 100, or leave it empty.";
    ui.threshold.focus();
    return;
  }
  if (current) current.controller.abort();
  const self = { controller: new AbortController(), stop: null };
  current = self;
  ui.error.textContent = "";
  for (const url of thumbnails) URL.revokeObjectURL(url);
  thumbnails = [];
  ui.results.replaceChildren();
  const jobs = files.map((file) => [file, card(file)]);
  let classified = 0;
  let unsent = 0;
  const notSent = (answer) => {
    answer.textContent = `not sent: ${self.stop.why}`;
    answer.className = "answer error unsent";
    unsent += 1;
  };
  ui.status.textContent = `Classifying ${count(files.length, "image")}…`;
  const worker = async () => {
    while (jobs.length && current === self && !self.stop) {
      const [file, answer] = jobs.shift();
      const result = await classify(file, settings, self.controller.signal, (text) => {
        answer.textContent = text || "classifying…";
      });
      if (current !== self) return; // a newer run owns the page now
      if (result.prediction) {
        drawBars(answer, result.prediction, shownName(file), settings.minConfidence);
        classified += 1;
      } else if (self.stop && (result.aborted || result.stop)) {
        notSent(answer); // in flight when the run stopped: its answer, were it to come, is the same refusal
      } else if (result.stop) {
        self.stop = result.stop;
        answer.textContent = result.error;
        answer.className = "answer error";
        // Said once for the run, after what pick() may have noted about the files dropped.
        ui.error.textContent = `${ui.error.textContent} ${result.stop.message}`.trim();
        if (result.stop.key) {
          ui.keyField.hidden = false;
          ui.key.focus();
        }
        // the requests still in flight would be refused alike
        self.controller.abort();
      } else {
        answer.textContent = result.error;
        answer.className = "answer error";
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT, files.length) }, worker));
  if (current !== self) return;
  for (const [, answer] of jobs) notSent(answer);
  const failed = files.length - classified - unsent;
  ui.status.textContent = `${classified} of ${count(files.length, "image")} classified` +
    (settings.model ? ` by ${settings.model}` : "") + (failed ? `; ${failed} could not be` : "") +
    (unsent ? `; ${unsent} not sent` : "") + ".";
}

// What a drop left out, in a sentence for each kind; `more`: images past MAX_IMAGES.
function leftOutNotes({ notImages = 0, unreadable = 0, more = false }) {
  const notes = [];
  if (notImages) {
    notes.push(`${count(notImages, "dropped file")} left out: ${notImages === 1 ? "not an image" : "not images"}.`);
  }
  if (unreadable) {
    notes.push(`${count(unreadable, "file or folder", "files or folders")} in the drop could not be read.`);
  }
  if (more) {
    notes.push(`Only the first ${MAX_IMAGES} images are classified: the page takes ${MAX_IMAGES} at a time ` +
      "(python -m service score scores a whole folder).");
  }
  return notes;
}

function pick(files, leftOut = {}) {
  picked = Array.from(files).slice(0, MAX_IMAGES);
  const notes = leftOutNotes({ ...leftOut, more: leftOut.more || files.length > MAX_IMAGES });
  ui.files.value = ""; // choosing the same file again is then a change too (to retry it)
  if (picked.length) run(picked);
  // after the run's own message (a refused threshold), not in its place
  if (notes.length) ui.error.textContent = `${ui.error.textContent} ${notes.join(" ")}`.trim();
}

// What the page sends: a file the browser types as an image, or one it cannot type (the service reads it by its
// bytes, and refuses it alone where it is no image).
const isImage = (file) => file.type.startsWith("image/") || !file.type;
// Hidden files and folders in a dropped folder (.DS_Store, .thumbnails/, .git/) are no one's images: left out as
// the batch scorer leaves them (inference/tree_files.py).
const isHidden = (name) => name.startsWith(".") && name !== "." && name !== "..";
// What an operating system leaves in the folders it shows, as training's folder reader names them
// (training/data/folder_tree.py's SYSTEM_FILES): Windows' thumbnail cache and folder settings, untyped, so that they
// were sent and refused one card each. A Mac's zip keeps its metadata in __MACOSX/ beside the photos.
const SYSTEM_FILES = new Set(["thumbs.db", "desktop.ini"]);
const SYSTEM_FOLDERS = new Set(["__MACOSX"]);
// Whether a dropped folder's `entry` is the system's, not the user's: left out without a word, as training's folder
// reader leaves such files (no one left them out by mistake); __MACOSX/ holds only hidden ._ files, which both it
// and the batch scorer skip.
const isSystem = (entry) => isHidden(entry.name) ||
  (entry.isDirectory ? SYSTEM_FOLDERS.has(entry.name) : SYSTEM_FILES.has(entry.name.toLowerCase()));

// All of a folder's entries: readEntries answers in batches (Chrome's hold 100) until it answers an empty one.
function entriesOf(directory) {
  const reader = directory.createReader();
  const entries = [];
  return new Promise((resolve, reject) => {
    const more = () => reader.readEntries((batch) => {
      if (!batch.length) return resolve(entries);
      entries.push(...batch);
      more();
    }, reject);
    more();
  });
}

const fileOf = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));

// The images among what was dropped, each {file} or {directory: a FileSystemDirectoryEntry}: folders are read
// depth first in name order, at most `limit` images are taken, and the reading stops there. Inside a folder, the
// system's files and folders are left out, unread and uncounted against `limit`; what is dropped by its own name
// is the user's choice, and taken as it is.
// Returns {images: [{file, path}], notImages, unreadable, more}; `more`: there were images past `limit`.
async function imagesDropped(dropped, limit) {
  const found = { images: [], notImages: 0, unreadable: 0, more: false };
  const take = (file, path) => {
    if (!isImage(file)) found.notImages += 1;
    else if (found.images.length < limit) found.images.push({ file, path });
    else found.more = true;
  };
  const read = async (directory) => {
    let entries;
    try {
      entries = await entriesOf(directory);
    } catch {
      found.unreadable += 1;
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (found.more) return;
      if (isSystem(entry)) continue;
      if (entry.isDirectory) {
        await read(entry);
        continue;
      }
      try {
        take(await fileOf(entry), entry.fullPath.replace(/^\//, ""));
      } catch {
        found.unreadable += 1;
      }
    }
  };
  for (const item of dropped) {
    if (found.more) break;
    if (item.directory) await read(item.directory);
    else take(item.file, item.file.name);
  }
  return found;
}

async function drop(dataTransfer) {
  const self = ++drops;
  // Taken now: the drop's items are gone once its event is handled. A folder is an entry to read; a browser
  // without webkitGetAsEntry, or a file a script put in the DataTransfer (no entry), is the File itself.
  const items = Array.from(dataTransfer.items || []).filter((item) => item.kind === "file");
  const dropped = items.length ?
    items.map((item) => {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      return entry && entry.isDirectory ? { directory: entry } : { file: item.getAsFile() };
    }) :
    Array.from(dataTransfer.files, (file) => ({ file }));
  const before = ui.status.textContent;
  const reading = "Reading the dropped folder…";
  if (dropped.some((item) => item.directory)) ui.status.textContent = reading;
  const found = await imagesDropped(dropped, MAX_IMAGES);
  if (self !== drops) return; // a later drop is the one to classify
  if (ui.status.textContent === reading) ui.status.textContent = before; // what is still on screen, if no images
  for (const { file, path } of found.images) paths.set(file, path);
  if (found.images.length) pick(found.images.map(({ file }) => file), found);
  else if (dropped.length) {
    const unread = leftOutNotes({ unreadable: found.unreadable });
    ui.error.textContent = ["None of the dropped files is an image.", ...unread].join(" ");
  }
}

// The form holds only choices: Enter in the key field must not submit it (the key would go into the URL).
ui.controls.addEventListener("submit", (event) => event.preventDefault());
ui.files.addEventListener("change", () => pick(ui.files.files));
ui.model.addEventListener("change", () => { describeModel(); if (picked.length) run(picked); });
ui.k.addEventListener("change", () => { if (picked.length) run(picked); });
ui.fit.addEventListener("change", () => { describeFit(); if (picked.length) run(picked); });
ui.threshold.addEventListener("change", () => { if (picked.length) run(picked); });
// A browser that blocks site data (cookies) throws on any use of sessionStorage: the key is then typed again
// after a reload, where an uncaught throw here stopped the script before the models were listed or drops taken.
const session = {
  get: () => { try { return sessionStorage.getItem(KEY_STORE); } catch { return null; } },
  set: (value) => { try { sessionStorage.setItem(KEY_STORE, value); } catch { /* kept in the field only */ } },
};
ui.key.value = session.get() || "";
ui.key.addEventListener("change", () => {
  session.set(ui.key.value.trim());
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
  drop(event.dataTransfer);
});
// A file dropped beside the zone would otherwise replace the page with itself.
for (const type of ["dragover", "drop"]) {
  document.addEventListener(type, (event) => { if (!ui.drop.contains(event.target)) event.preventDefault(); });
}
loadModels();
