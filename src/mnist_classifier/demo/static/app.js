// Drawing pad -> POST /api/predict (canvas as PNG) -> big digit, bars, 28x28 preview.
// After an answer, a label button or key 0-9 saves the drawing (POST /api/examples) for
// `mnist-classifier finetune`; U undoes. No libraries and nothing fetched from elsewhere:
// the page must work offline.
"use strict";

const pad = document.getElementById("pad");
// Opaque canvas: cheaper to draw, and the PNG carries no alpha for the server to composite.
const ink = pad.getContext("2d", { alpha: false });
const view = {
  digit: document.getElementById("digit"),
  confidence: document.getElementById("confidence"),
  preview: document.getElementById("preview"),
  bars: document.getElementById("bars"),
  status: document.getElementById("status"),
  model: document.getElementById("model"),
  notice: document.getElementById("notice"),
  teach: document.getElementById("teach"),
  labels: document.getElementById("labels"),
  saved: document.getElementById("saved"),
  spoken: document.getElementById("spoken"),
};
const LINE_WIDTH = pad.width / 14; // MNIST strokes are about 1/8 of the digit's height
const LIVE_INTERVAL_MS = 150; // predictions while drawing, at most this often
const ANSWER_TIMEOUT_MS = 10000; // a server that hangs is said to, rather than leave the pad unanswered

const state = {
  drawing: false, // a pointer is down on the pad
  pointer: null, // which one: a second finger must not join the stroke
  last: null, // previous point of the stroke
  hasInk: false,
  answered: false, // the drawing on the pad has an answer: it may be labelled
  strokes: 0, // counts strokes: a drawing changed while it was being saved is not cleared
  generation: 0, // bumped by clear(): answers about a cleared drawing are dropped
  inFlight: false, // at most one request at a time...
  again: false, // ...and one more queued when the drawing changed meanwhile
  request: null, // the AbortController of the request out, if any: clearing the pad drops it
  lastSent: 0,
  refusal: "not a digit?", // what a refused answer is called: a clothes model's is "not recognised?"
};

// ------------------------------------------------------------------ drawing

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  state.hasInk = false;
  state.generation += 1;
  state.again = false; // a check queued for the drawing just cleared: nobody asked about the empty pad
  state.request?.abort(); // nor is its answer awaited: the next drawing is asked about at once
  showEmpty();
  showStatus(""); // the last answer's timing is not this pad's
}

// Clear asked for (button or C): said aloud too, so that the last answer read is not taken for the pad's.
function clearAsked() {
  clearPad();
  view.spoken.textContent = "cleared";
}

function toCanvas(event) {
  // CSS size and canvas size differ (phones, zoom): map client px to canvas px.
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function strokeTo(point) {
  const from = state.last || point;
  ink.beginPath();
  ink.moveTo(from.x, from.y);
  ink.lineTo(point.x + 0.01, point.y); // +0.01: a single click still leaves a dot
  ink.stroke();
  state.last = point;
  state.hasInk = true;
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || state.drawing) return; // left button, finger or pen tip; one at a time
  event.preventDefault();
  pad.setPointerCapture(event.pointerId); // keep the stroke when leaving the box
  state.drawing = true;
  state.strokes += 1;
  state.pointer = event.pointerId;
  state.last = null;
  ink.strokeStyle = "#111";
  ink.lineWidth = LINE_WIDTH;
  ink.lineCap = ink.lineJoin = "round";
  strokeTo(toCanvas(event));
});

pad.addEventListener("pointermove", (event) => {
  if (!state.drawing || event.pointerId !== state.pointer) return;
  // Coalesced events hold the points the browser merged between frames: smoother curves.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) strokeTo(toCanvas(e));
  if (performance.now() - state.lastSent > LIVE_INTERVAL_MS) predict();
});

function endStroke(event) {
  if (!state.drawing || event.pointerId !== state.pointer) return;
  state.drawing = false;
  state.last = null;
  predict();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

// ------------------------------------------------------------------ predicting

async function predict() {
  if (!state.hasInk) {
    view.spoken.textContent = "nothing drawn";
    return showEmpty();
  }
  // Not "draw something" under a drawing, even while an earlier drawing's request is still out
  if (!state.answered) view.confidence.textContent = "answering…";
  if (state.inFlight) {
    state.again = true;
    return;
  }
  state.inFlight = true;
  state.lastSent = performance.now();
  const generation = state.generation;
  const strokeDone = !state.drawing; // its answer is the one to read aloud
  const request = (state.request = new AbortController());
  const timer = setTimeout(() => request.abort(new DOMException("no answer", "TimeoutError")), ANSWER_TIMEOUT_MS);
  try {
    const png = await canvasPng();
    const started = performance.now();
    const response = await fetch("api/predict", {
      method: "POST", headers: { "Content-Type": "image/png" }, body: png, signal: request.signal,
    });
    const answer = await readAnswer(response);
    if (generation !== state.generation) return; // cleared while waiting
    if (!response.ok || answer.notJson) return unanswered(`error ${response.status}: ${answer.detail}`);
    showPrediction(answer, performance.now() - started);
    if (strokeDone && !state.again) speak(answer);
  } catch (error) {
    if (generation !== state.generation) return;
    const why = error.name === "TimeoutError" ? `none in ${ANSWER_TIMEOUT_MS / 1000} s` : error.message;
    unanswered(`no answer from the server (${why}); is it still running?`);
  } finally {
    clearTimeout(timer);
    state.request = null;
    state.inFlight = false;
    if (state.again) {
      state.again = false;
      predict();
    }
  }
}

// A failed request's queued successor is dropped: the next stroke or S asks again, not a loop of retries.
function unanswered(text) {
  state.again = false;
  showUnanswered(text);
}

function canvasPng() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

// ------------------------------------------------------------------ labelling

// busy: one save or undo at a time; total: drawings stored, as the server last said
const teach = { buttons: [], names: [], busy: false, total: null };

function buildLabelButtons(names) {
  teach.names = names;
  teach.buttons = names.map((name, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.setAttribute("aria-label", `save the drawing as ${name}`);
    if (index < 10) button.title = `shortcut: ${index}`;
    button.addEventListener("click", () => saveExample(index));
    return button;
  });
  view.labels.replaceChildren(...teach.buttons);
  enableLabels();
}

function enableLabels() {
  const on = state.answered && !teach.busy;
  for (const button of teach.buttons) button.disabled = !on;
}

function countsText(result, label) {
  const examples = result.total === 1 ? "example" : "examples";
  return `${result.total} ${examples}, ${result.counts[label]} of ${teach.names[label] ?? label}`;
}

// Save what is on the pad as `label`; the server answers it again and keeps that answer.
async function saveExample(label) {
  if (view.teach.hidden || !state.answered || teach.busy || label >= teach.buttons.length) return;
  const before = { generation: state.generation, strokes: state.strokes };
  await talkToStore(async () => {
    const response = await fetch(`api/examples?label=${label}`, {
      method: "POST", headers: { "Content-Type": "image/png" }, body: await canvasPng(),
    });
    const result = await readAnswer(response);
    if (!response.ok || result.notJson) return showSaved(`not saved: ${result.detail}`);
    teach.total = result.total;
    // Ready for the next one, unless the user went on drawing while it was saved.
    if (before.generation === state.generation && before.strokes === state.strokes) clearPad();
    showSaved(`saved as ${teach.names[label]}: ${countsText(result, label)}`);
  });
}

async function undoExample() {
  if (view.teach.hidden || teach.busy) return;
  await talkToStore(async () => {
    // Asked first when none is known to be stored: a 404 would be logged in the browser's console
    if (!teach.total && (await storedTotal()) === 0) return showSaved("nothing to undo");
    const response = await fetch("api/examples/last", { method: "DELETE" });
    const result = await readAnswer(response);
    if (response.status === 404) return showSaved("nothing to undo"); // another page undid it first
    if (!response.ok || result.notJson) return showSaved(`not undone: ${result.detail}`);
    teach.total = result.total;
    const name = teach.names[result.label] ?? result.label;
    showSaved(`removed the ${name} saved last: ${countsText(result, result.label)}`);
  });
}

async function talkToStore(request) {
  teach.busy = true;
  enableLabels();
  try {
    await request();
  } catch (error) {
    showSaved(`no answer from the server (${error.message}); is it still running?`);
  } finally {
    teach.busy = false;
    enableLabels();
  }
}

function showSaved(text) {
  view.saved.textContent = text;
}

async function storedTotal() {
  const response = await fetch("api/examples/stats");
  teach.total = response.ok ? (await response.json()).total : null;
  return teach.total;
}

async function showCollecting(collecting) {
  view.teach.hidden = !collecting; // `serve --no-collect`: nothing can be saved, so no row
  document.getElementById("examples-api").hidden = !collecting; // nor the route offered in the footer
  if (!collecting) return;
  await talkToStore(async () => {
    const response = await fetch("api/examples/stats");
    const stats = await readAnswer(response);
    if (!response.ok || stats.notJson) return showSaved(`cannot read the saved drawings: ${stats.detail}`);
    teach.total = stats.total;
    const drawings = stats.total === 1 ? "drawing" : "drawings";
    showSaved(stats.total ? `${stats.total} labelled ${drawings} saved so far` : "nothing saved yet");
  });
}

// ------------------------------------------------------------------ showing

const bars = [];
function buildBars(names) {
  view.bars.replaceChildren();
  bars.length = 0;
  for (const name of names) {
    const row = document.createElement("li");
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
      '<span class="value"></span>';
    row.querySelector(".name").textContent = name;
    view.bars.append(row);
    bars.push({ row, fill: row.querySelector(".fill"), value: row.querySelector(".value") });
  }
  // One name column for every row, as wide as the longest name ("Ankle boot", not "Ank")
  const longest = Math.max(...names.map((name) => name.length));
  view.bars.style.setProperty("--name-width", `${Math.max(1.6, longest * 0.62)}em`);
}

// A percent, never "100%" short of certainty: as the commands and the desktop demo print it (answer.percent)
function percentText(p, decimals) {
  const text = (p * 100).toFixed(decimals);
  if (text !== (100).toFixed(decimals) || p >= 1) return `${text}%`;
  return `≥${(100 - 0.5 * 10 ** -decimals).toFixed(decimals + 1)}%`;
}

function showBars(probabilities, top) {
  probabilities.forEach((p, i) => {
    if (!bars[i]) return;
    bars[i].fill.style.width = `${(p * 100).toFixed(1)}%`;
    bars[i].value.textContent = p > 0 ? percentText(p, 0) : "";
    bars[i].row.classList.toggle("top", i === top);
  });
}

function showPrediction(answer, roundTripMs) {
  if (answer.verdict === "empty") return showEmpty();
  const refused = answer.verdict === "not_a_digit";
  const percentSure = percentText(answer.confidence, 1);
  if (refused) {
    // The model does not take this for a digit: say so, and show its guess small.
    view.digit.textContent = state.refusal;
    view.digit.dataset.state = "refused";
    view.confidence.textContent = `best guess ${answer.label}, ${percentSure}`;
  } else {
    view.digit.textContent = answer.label ?? String(answer.digit);
    view.digit.classList.toggle("word", view.digit.textContent.length > 2); // a class name, not a numeral
    view.digit.dataset.state = answer.confidence < 0.6 ? "unsure" : "sure";
    view.confidence.textContent = `${percentSure} sure`;
  }
  view.bars.classList.toggle("refused", refused);
  view.preview.src = `data:image/png;base64,${answer.preview_png}`;
  view.preview.hidden = false;
  showBars(answer.probabilities, answer.best_guess);
  state.answered = true;
  enableLabels();
  const timing = `${answer.model}: ${answer.latency_ms.toFixed(1)} ms on the server, ` +
    `${Math.round(roundTripMs)} ms round trip`;
  showStatus(answer.hint ? `${answer.hint} (${timing})` : timing);
}

// The server's JSON; a proxy's HTML page (a 502, a sign-in page) as its status line instead of a
// parse error, and never taken for an answer, whatever its status.
async function readAnswer(response) {
  if ((response.headers.get("Content-Type") ?? "").includes("json")) return response.json();
  return { detail: (!response.ok && response.statusText) || "the server's answer is not JSON", notJson: true };
}

// What a screen reader announces: the verdict of the finished drawing, once.
function speak(answer) {
  const percentSure = percentText(answer.confidence, 0);
  if (answer.verdict === "empty") view.spoken.textContent = "nothing drawn";
  else if (answer.verdict === "not_a_digit") {
    const hint = answer.hint ? `; ${answer.hint}` : "";
    view.spoken.textContent = `${state.refusal.replace("?", "")}, best guess ${answer.label}, ${percentSure}${hint}`;
  } else view.spoken.textContent = `${answer.label ?? answer.digit}, ${percentSure} sure`;
}

function showEmpty() {
  view.digit.textContent = "–";
  view.digit.classList.remove("word");
  view.digit.dataset.state = "empty";
  view.confidence.textContent = "draw something";
  view.preview.hidden = true;
  view.preview.removeAttribute("src");
  view.bars.classList.remove("refused");
  showBars(new Array(bars.length).fill(0), -1);
  state.answered = false;
  enableLabels();
}

// The last answer was for an earlier drawing: take it down rather than leave it beside this one.
function showUnanswered(text) {
  showEmpty();
  view.confidence.textContent = "no answer";
  showStatus(text);
  view.spoken.textContent = text;
}

function showStatus(text) {
  view.status.textContent = text;
}

function percent(x) {
  return typeof x === "number" ? `${(x * 100).toFixed(2)}%` : "n/a";
}

async function loadModelCard() {
  buildBars([...Array(10).keys()].map(String)); // until the model says otherwise
  try {
    const card = await (await fetch("api/model")).json();
    buildBars(card.class_names);
    buildLabelButtons(card.class_names);
    showEmpty();
    const parameters = card.parameters ? `${card.parameters.toLocaleString("en")} parameters, ` : "";
    const file = card.file ? ` (${card.file})` : "";
    const tuned = card.user_model ? ", fine-tuned on your drawings" : "";
    view.model.textContent = `${card.name}${file}${tuned} · ${parameters}validation ` +
      `${percent(card.validation_accuracy)}, test ${percent(card.test_accuracy)}`;
    view.model.classList.toggle("tuned", card.user_model === true);
    if (!card.drawable) {
      state.refusal = "not recognised?"; // as `predict` says it: these are no digits
      view.notice.textContent = `This model was trained on "${card.dataset}", which is not a set of ` +
        "handwritten digits: the drawing demo is digit-only, so expect odd answers.";
      view.notice.hidden = false;
    }
    await showCollecting(card.collecting === true);
  } catch (error) {
    view.model.textContent = "could not read /api/model";
  }
}

// ------------------------------------------------------------------ controls

document.getElementById("clear").addEventListener("click", clearAsked);
document.getElementById("predict").addEventListener("click", predict);
document.getElementById("undo").addEventListener("click", undoExample);
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return; // keep Ctrl+C = copy
  const key = event.key.toLowerCase();
  if (key === "c") clearAsked();
  else if (key === "s") predict();
  else if (key === "u") undoExample();
  else if (/^[0-9]$/.test(key)) saveExample(Number(key));
});

clearPad();
loadModelCard();
