// Drawing pad client of the model server: sends the canvas as a PNG to
// /v1/explain and shows the prediction, the probabilities and the attribution.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const heatmap = document.getElementById("heatmap");
const statusLine = document.getElementById("status");
let drawing = false;
let hasInk = false;

function resetPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(x, y);
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  ctx.lineTo(x, y);
  ctx.stroke();
  hasInk = true;
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  if (hasInk) predict();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  resetPad();
  document.getElementById("prediction").textContent = "–";
  document.getElementById("confidence").textContent = "尚未识别";
  document.getElementById("probabilities").innerHTML = "";
  heatmap.getContext("2d").clearRect(0, 0, heatmap.width, heatmap.height);
  statusLine.textContent = "已清除";
});
document.getElementById("predict").addEventListener("click", predict);

async function predict() {
  if (!hasInk) {
    statusLine.textContent = "请先在画板上写一个数字";
    return;
  }
  statusLine.textContent = "识别中…";
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("file", blob, "digit.png");
  form.append("method", document.getElementById("method").value);
  const headers = {};
  const token = document.getElementById("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  let response;
  try {
    response = await fetch("/v1/explain", { method: "POST", body: form, headers });
  } catch (error) {
    statusLine.textContent = "无法连接服务器：" + error;
    return;
  }
  const result = await response.json();
  if (!response.ok) {
    statusLine.textContent = `请求失败（HTTP ${response.status}）：${result.detail}`;
    return;
  }
  show(result);
}

function show(result) {
  document.getElementById("prediction").textContent = String(result.label);
  const top = result.probabilities[result.label];
  document.getElementById("confidence").textContent = `置信度 ${(100 * top).toFixed(1)}%`;
  const list = document.getElementById("probabilities");
  list.innerHTML = "";
  result.probabilities.forEach((p, digit) => {
    const row = document.createElement("li");
    row.dataset.digit = String(digit);
    if (digit === result.label) row.className = "top";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, Math.round(180 * p))}px`;
    const text = document.createElement("span");
    text.textContent = `${digit}  ${(100 * p).toFixed(1).padStart(5)}%`;
    row.append(text, bar);
    list.append(row);
  });
  drawHeatmap(result.pixels, result.attribution);
  statusLine.textContent = `请求 ${result.request_id.slice(0, 8)} 完成`;
  document.getElementById("version").textContent = `模型版本 ${result.model_version.slice(0, 12)}`;
}

function drawHeatmap(pixels, attribution) {
  // Positive attribution only: red over the grey input, scaled by the maximum.
  const side = pixels.length;
  let maxScore = 0;
  attribution.forEach((row) => row.forEach((v) => { maxScore = Math.max(maxScore, v); }));
  const image = new ImageData(side, side);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const grey = Math.round(255 * pixels[y][x] * 0.6);
      const heat = maxScore > 0 ? Math.max(0, attribution[y][x]) / maxScore : 0;
      const i = 4 * (y * side + x);
      image.data[i] = Math.round(grey + (255 - grey) * heat);
      image.data[i + 1] = Math.round(grey * (1 - heat));
      image.data[i + 2] = Math.round(grey * (1 - heat));
      image.data[i + 3] = 255;
    }
  }
  const small = document.createElement("canvas");
  small.width = side;
  small.height = side;
  small.getContext("2d").putImageData(image, 0, 0);
  const out = heatmap.getContext("2d");
  out.imageSmoothingEnabled = false;
  out.drawImage(small, 0, 0, heatmap.width, heatmap.height);
}

resetPad();
