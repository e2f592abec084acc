// hrpose serve's page: send a photo or webcam frames to POST /v1/pose, draw the skeletons, filter them with
// the sliders (on this side: no new request), show per-joint scores on hover, download the answer.
"use strict";

const LIMB_COLOR = "#00e5ff";   // skeleton lines
const JOINT_COLOR = "#ff2d95";  // joint dots (drawn over the lines)
const BOX_COLOR = "#ffd400";    // person boxes

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d", { willReadFrequently: true });
const state = { answer: null, text: "", picture: null, skeleton: [], names: [], camera: null, answers: 0 };

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  document.body.dataset.state = error ? "error" : document.body.dataset.state;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models");
    const info = (await r.json()).models[0];
    state.skeleton = info.skeleton;
    state.names = info.joint_names;
    $("model").textContent = `model: ${info.name} · detector: ${info.detector}`;
  } catch (e) {
    $("model").textContent = "model: unknown (/v1/models did not answer)";
  }
}

async function askServer(blob, filename) {
  const form = new FormData();
  form.append("image", blob, filename);
  form.append("kpt_thr", "0");  // every joint comes back; the sliders filter here
  const r = await fetch("/v1/pose", { method: "POST", body: form });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch (e) { throw new Error(`the server answered ${r.status}: ${text.slice(0, 200)}`); }
  if (!r.ok) throw new Error(`${r.status}: ${body.detail || text}`);
  return { body, text };
}

function thresholds() {
  return { det: parseFloat($("det-thr").value), kpt: parseFloat($("kpt-thr").value) };
}

function visiblePeople() {
  if (!state.answer) return [];
  const t = thresholds();
  return state.answer.people.filter((p) => p.box_score >= t.det);
}

function draw() {
  if (!state.picture) return;
  const w = state.picture.width, h = state.picture.height;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.drawImage(state.picture, 0, 0);
  const t = thresholds();
  const unit = Math.max(2, Math.round(Math.min(w, h) / 160));
  let joints = 0;
  for (const p of visiblePeople()) {
    const k = p.keypoints;
    const ok = (j) => k[3 * j + 2] >= t.kpt && !(k[3 * j] === 0 && k[3 * j + 1] === 0 && k[3 * j + 2] === 0);
    ctx.strokeStyle = BOX_COLOR;
    ctx.lineWidth = Math.max(1, unit / 2);
    ctx.strokeRect(p.bbox[0], p.bbox[1], p.bbox[2], p.bbox[3]);
    ctx.strokeStyle = LIMB_COLOR;
    ctx.lineWidth = unit;
    ctx.lineCap = "round";
    for (const [a, b] of state.skeleton) {
      if (!ok(a) || !ok(b)) continue;
      ctx.beginPath();
      ctx.moveTo(k[3 * a], k[3 * a + 1]);
      ctx.lineTo(k[3 * b], k[3 * b + 1]);
      ctx.stroke();
    }
    ctx.fillStyle = JOINT_COLOR;
    for (let j = 0; j < k.length / 3; j++) {
      if (!ok(j)) continue;
      ctx.beginPath();
      ctx.arc(k[3 * j], k[3 * j + 1], unit * 1.5, 0, 2 * Math.PI);
      ctx.fill();
      joints++;
    }
  }
  canvas.dataset.drawnJoints = String(joints);
  canvas.dataset.drawnPeople = String(visiblePeople().length);
}

function showAnswer(answer, text) {
  state.answer = answer;
  state.text = text;
  state.answers += 1;
  $("json").textContent = JSON.stringify(answer, null, 2);
  $("download").disabled = false;
  draw();
  const tm = answer.timings_ms;
  const n = answer.people.length;
  setStatus(`${n} ${n === 1 ? "person" : "people"} in ${answer.image.file} (${answer.image.width} x ${answer.image.height}); ` +
            `${tm.total.toFixed(0)} ms on the server (inference ${tm.inference.toFixed(0)} ms)`);
  document.body.dataset.answers = String(state.answers);
  document.body.dataset.state = "done";
}

async function usePhoto(file) {
  if (!file) return;
  stopCamera();
  document.body.dataset.state = "busy";
  setStatus(`sending ${file.name}...`);
  try {
    state.picture = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (e) {
    state.picture = null;
  }
  try {
    const { body, text } = await askServer(file, file.name);
    if (!state.picture) throw new Error("this browser cannot show the image, but the server read it");
    showAnswer(body, text);
  } catch (e) {
    document.body.dataset.state = "error";
    setStatus(String(e.message || e), true);
  }
}

// ---- webcam: one frame in flight at a time
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives no camera access (it needs https or localhost)", true);
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    const video = $("video");
    video.srcObject = stream;
    await video.play();
    state.camera = stream;
    $("webcam").textContent = "Stop the webcam";
    document.body.dataset.state = "busy";
    cameraLoop();
  } catch (e) {
    setStatus(`no camera: ${e.message || e}`, true);
  }
}

function stopCamera() {
  if (!state.camera) return;
  for (const track of state.camera.getTracks()) track.stop();
  state.camera = null;
  $("video").srcObject = null;
  $("webcam").textContent = "Use the webcam";
}

async function cameraLoop() {
  const video = $("video");
  let frame = 0;
  while (state.camera) {
    if (!video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    const grab = document.createElement("canvas");
    grab.width = video.videoWidth;
    grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    try {
      const { body, text } = await askServer(blob, `webcam-${frame++}.jpg`);
      if (!state.camera) break;
      state.picture = grab;
      showAnswer(body, text);
    } catch (e) {
      setStatus(String(e.message || e), true);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// ---- hover: the nearest drawn joint within a few pixels
function jointAt(x, y) {
  const t = thresholds();
  const reach = Math.max(8, Math.min(canvas.width, canvas.height) / 40);
  let best = null;
  visiblePeople().forEach((p, i) => {
    const k = p.keypoints;
    for (let j = 0; j < k.length / 3; j++) {
      if (k[3 * j + 2] < t.kpt) continue;
      const d = Math.hypot(k[3 * j] - x, k[3 * j + 1] - y);
      if (d <= reach && (!best || d < best.d)) best = { d, person: i, joint: j, score: k[3 * j + 2] };
    }
  });
  return best;
}

canvas.addEventListener("mousemove", (ev) => {
  const rect = canvas.getBoundingClientRect();
  const sx = canvas.width / rect.width, sy = canvas.height / rect.height;
  const hit = jointAt((ev.clientX - rect.left) * sx, (ev.clientY - rect.top) * sy);
  const tip = $("tooltip");
  if (!hit) { tip.hidden = true; return; }
  const name = (state.answer.people[0].joint_names || state.names)[hit.joint] || `joint ${hit.joint}`;
  tip.textContent = `person ${hit.person + 1} · ${name} · ${hit.score.toFixed(2)}`;
  tip.style.left = `${ev.clientX - rect.left + 12}px`;
  tip.style.top = `${ev.clientY - rect.top + 12}px`;
  tip.hidden = false;
});
canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });

for (const [slider, out] of [["det-thr", "det-value"], ["kpt-thr", "kpt-value"]]) {
  $(slider).addEventListener("input", () => { $(out).textContent = parseFloat($(slider).value).toFixed(2); draw(); });
}

$("file").addEventListener("change", (ev) => usePhoto(ev.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  usePhoto(ev.dataTransfer.files[0]);
});
$("webcam").addEventListener("click", () => (state.camera ? stopCamera() : startCamera()));
$("download").addEventListener("click", () => {
  if (!state.text) return;
  const url = URL.createObjectURL(new Blob([state.text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `${(state.answer.image.file || "pose").replace(/\.[^.]*$/, "")}_pose.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});

document.body.dataset.state = "idle";
loadModel();
