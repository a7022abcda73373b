// The page's only script: reads the model's description, sends each chosen image to the server's
// own v2 infer endpoint (one request per image, so one bad file does not sink the others), and
// shows the answer. Text goes in with textContent only: nothing an answer says can become markup.
"use strict";

let model = null;

function byId(id) { return document.getElementById(id); }

function percent(p) { return (100 * p).toFixed(1) + " %"; }

async function loadModel() {
  const response = await fetch("/ui/model.json");
  if (!response.ok) { throw new Error("the model's description did not load (" + response.status + ")"); }
  model = await response.json();
  byId("notice").textContent = model.notice;
  const gate = model.gate && model.gate.passed === false ? " \u2014 this release FAILED its gate: its answers are no better than a trivial model's" : "";
  const label = model.positive.smear;
  byId("model").textContent = "Model " + model.version + " (endpoint " + model.name + "); smears are called " + label
    + " at P(" + label + ") \u2265 "
    + model.settings.threshold.toFixed(3) + ": " + model.settings.threshold_source + gate;
  byId("model").dataset.version = model.version;
  byId("card").textContent = model.card || "(this release carries no model card)";
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(file.name + ": cannot be read"));
    reader.readAsDataURL(file);
  });
}

function output(body, name) {
  const found = (body.outputs || []).find((o) => o.name === name);
  return found ? found.data : null;
}

async function infer(file, kind, explain) {
  const b64 = await readBase64(file);
  const request = {
    id: file.name,
    parameters: { kind: kind, overlay: true, explain: explain },
    inputs: [
      { name: "image", shape: [1], datatype: "BYTES", data: [b64] },
      { name: "name", shape: [1], datatype: "BYTES", data: [file.name] },
    ],
  };
  const text = JSON.stringify(request);
  if (model && text.length > model.max_request_bytes) {
    throw new Error(file.name + ": " + file.size.toLocaleString() + " bytes is more than this server accepts");
  }
  const response = await fetch("/v2/models/" + encodeURIComponent(model.name) + "/infer",
    { method: "POST", headers: { "content-type": "application/json" }, body: text });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || ("the server answered " + response.status));
  }
  const answer = JSON.parse(output(body, "prediction")[0]);
  answer.overlay = (output(body, "overlay_png") || [null])[0];
  answer.explanation = (output(body, "explanation_png") || [null])[0];
  return answer;
}

function show(node, selector, text) {
  const element = node.querySelector(selector);
  element.textContent = text;
  element.hidden = !text;
}

function picture(node, selector, b64) {
  if (!b64) { return; }
  node.querySelector(selector).src = "data:image/png;base64," + b64;
  node.querySelector(selector + "-figure").hidden = false;
}

function render(fileName, answer, error) {
  const node = byId("answer-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".image-name").textContent = fileName;
  if (error) {
    node.classList.add("failed");
    show(node, ".error", "Not classified: " + error.message);
    show(node, ".verdict", "");
    byId("results").prepend(node);
    return;
  }
  const label = model.positive.smear;  // the positive verdicts come from the server: the page knows no class name
  const positive = answer.verdict === (answer.kind === "cell" ? model.positive.cell : label);
  node.classList.add(positive ? "positive" : "negative");
  node.dataset.verdict = answer.verdict;
  if (answer.kind === "cell") {
    show(node, ".verdict", "Single cell: " + answer.verdict + " (P(blast) " + percent(answer.all_probability) + ")");
    show(node, ".operating-point", "Called a blast at P(blast) \u2265 " + answer.threshold.toFixed(2) + " (the cell model's boundary).");
  } else {
    show(node, ".verdict", (positive ? label + " suspected" : "No " + label + " found") + ": P(" + label + ") "
      + percent(answer.all_probability));
    show(node, ".operating-point", "Operating point: called " + label + " at P(" + label + ") \u2265 " + answer.threshold.toFixed(3)
      + " (" + model.settings.threshold_source.split(" (smears;")[0] + ").");
  }
  if (answer.fab) {  // the type only for a smear called ALL
    const others = Object.entries(answer.fab.probabilities).filter(([c]) => c !== answer.fab.type)
      .map(([c, p]) => c + " " + percent(p)).join(", ");
    show(node, ".fab", "FAB type " + answer.fab.type + " (" + percent(answer.fab.probability) + "; " + others + ")"
      + (answer.fab.note ? ". Note: " + answer.fab.note : ""));
  }
  show(node, ".cells", answer.cells.length + " cell(s) segmented, " + answer.cells_scored_as_blasts + " scored as blasts"
    + (answer.cells.length ? " (P(blast): " + answer.cells.map((c) => percent(c.blast_probability)).join(", ") + ")" : "") + ".");
  show(node, ".disagreement", answer.disagreement ? "Look again: " + answer.disagreement : "");
  picture(node, ".overlay", answer.overlay);
  picture(node, ".explanation", answer.explanation);
  node.querySelector(".meta").textContent = "Model " + answer.model_version + "; pixel scale " + answer.pixel_scale
    + " (" + answer.pixel_scale_source + ").";
  byId("results").prepend(node);
}

async function classify(event) {
  event.preventDefault();
  await classifyFiles(Array.from(byId("files").files));
}

async function classifyFiles(files) {
  if (!files.length || !model || byId("submit").disabled) { return; }
  byId("status").dataset.done = "";
  const kind = byId("kind").value;
  const explain = byId("explain").checked;
  byId("submit").disabled = true;
  let done = 0;
  for (const file of files) {
    byId("status").textContent = "Classifying " + file.name + " (" + (done + 1) + " of " + files.length + ")\u2026";
    try {
      render(file.name, await infer(file, kind, explain), null);
    } catch (error) {
      render(file.name, null, error);
    }
    done += 1;
  }
  byId("status").textContent = "Done: " + done + " image(s).";
  byId("status").dataset.done = String(done);
  byId("submit").disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  byId("upload").addEventListener("submit", classify);
  const zone = byId("upload");  // a smear dropped anywhere on the form is classified at once
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dropping"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dropping");
    classifyFiles(Array.from(event.dataTransfer.files));
  });
  loadModel().catch((error) => { byId("model").textContent = "Error: " + error.message; });
});
