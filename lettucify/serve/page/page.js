"use strict";
// The try-it page: each photo is one POST to ./predict (two in flight), its answer shown as
// top-k bars with the model that gave it; every refusal becomes a sentence, never raw JSON.
// Relative URLs, so the page works under a path prefix (a gateway route) too.
(() => {
  const IN_FLIGHT = 2;
  const KEY = "lettucify.apiKey"; // sessionStorage: gone when the tab closes
  const $ = (id) => document.getElementById(id);
  const results = $("results"), announcer = $("announce"), keyBox = $("key-box"), key = $("key");
  const queue = [];
  let running = 0;

  key.value = sessionStorage.getItem(KEY) || "";
  key.addEventListener("input", () => {
    if (key.value) sessionStorage.setItem(KEY, key.value);
    else sessionStorage.removeItem(KEY);
  });

  const percent = (score) => `${(100 * score).toFixed(1)}%`;
  const megabytes = (bytes) => `${(bytes / (1 << 20)).toFixed(1)} MB`;

  function announce(text) {
    announcer.textContent = text;
  }

  function add(files) {
    for (const file of files) {
      const node = $("result").content.firstElementChild.cloneNode(true);
      const thumb = node.querySelector(".thumb");
      thumb.src = URL.createObjectURL(file);
      thumb.alt = `Photo ${file.name}`;
      node.querySelector(".title").textContent = file.name;
      const item = { file, node };
      node.querySelector(".again").addEventListener("click", () => enqueue(item));
      results.append(node);
      enqueue(item);
    }
    $("empty").hidden = results.children.length > 0;
  }

  function enqueue(item) {
    const { node } = item;
    node.classList.remove("failed");
    node.querySelector(".error").hidden = true;
    node.querySelector(".again").hidden = true;
    node.querySelector(".top").replaceChildren();
    node.querySelector(".model").textContent = "";
    const state = node.querySelector(".state");
    state.hidden = false;
    state.textContent = "Waiting…";
    queue.push(item);
    pump();
  }

  function pump() {
    while (running < IN_FLIGHT && queue.length) {
      const item = queue.shift();
      running += 1;
      ask(item).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  async function ask(item) {
    item.node.querySelector(".state").textContent = "Asking the model…";
    const body = new FormData();
    body.append("file", item.file, item.file.name);
    const headers = key.value ? { Authorization: `Bearer ${key.value}` } : {};
    const started = performance.now();
    let response;
    try {
      response = await fetch("predict", { method: "POST", body, headers });
    } catch {
      return fail(item, "Could not reach the server: check the connection and try again.");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      // Not JSON (a proxy's error page): explain() goes by the status alone.
    }
    const ms = performance.now() - started;
    if (response.ok && answer && Array.isArray(answer.predictions) && answer.predictions.length) {
      return show(item, answer, ms);
    }
    fail(item, explain(response, answer, item.file), response.status);
  }

  function explain(response, answer, file) {
    const said = answer && typeof answer.error === "string" ? answer.error : "";
    const detail = said ? ` (${said})` : "";
    switch (response.status) {
      case 401:
        return said.startsWith("wrong")
          ? "Not authorised: the API key is wrong. Enter the right one under API key, then try again."
          : "Not authorised: this server needs an API key. Enter it under API key, then try again.";
      case 413:
        return `Too large: ${file.name} (${megabytes(file.size)}) is over what this server takes${detail}.`;
      case 415:
        return `Not an image this server reads${detail}. Send a JPEG, PNG or WebP photo.`;
      case 400:
      case 422:
        return `Could not read this photo${detail}.`;
      case 503: {
        const wait = response.headers.get("Retry-After");
        return `The server is busy: try again in ${wait ? `${wait} s` : "a moment"}.`;
      }
      case 504:
        return `The server took too long to answer${detail}. Try again.`;
      default:
        return `The server answered HTTP ${response.status}${said ? `: ${said}` : ""}.`;
    }
  }

  function fail(item, message, status) {
    const { node, file } = item;
    node.classList.add("failed");
    node.querySelector(".state").hidden = true;
    const error = node.querySelector(".error");
    error.textContent = message;
    error.hidden = false;
    node.querySelector(".again").hidden = false;
    announce(`${file.name}: ${message}`);
    if (status === 401) {
      keyBox.open = true;
      key.focus();
    }
  }

  function show(item, answer, ms) {
    const { node, file } = item;
    const prediction = answer.predictions[0];
    node.querySelector(".state").textContent = `Most likely ${prediction.label}, ${percent(prediction.score)}`;
    const top = node.querySelector(".top");
    for (const { label, score } of prediction.top_k) {
      const bar = $("bar").content.firstElementChild.cloneNode(true);
      bar.querySelector(".label").textContent = label;
      bar.querySelector(".label").title = label;
      bar.querySelector(".fill").style.width = percent(score);
      bar.querySelector(".percent").textContent = percent(score);
      top.append(bar);
    }
    const model = answer.model || {};
    const line = node.querySelector(".model");
    line.append(`${model.name}${model.version ? ` version ${model.version}` : ""}${model.alias ? ` @${model.alias}` : ""}`);
    if (model.deployment) {
      const colour = document.createElement("span");
      colour.className = ["blue", "green"].includes(model.deployment) ? `colour ${model.deployment}` : "colour";
      colour.textContent = model.deployment;
      line.append(" · ", colour);
    }
    line.append(` · ${Math.round(ms)} ms`);
    announce(`${file.name}: ${prediction.label}, ${percent(prediction.score)}`);
  }

  for (const input of [$("camera"), $("files")]) {
    input.addEventListener("change", () => {
      add([...input.files]);
      input.value = ""; // the same photo chosen again is sent again
    });
  }

  // A photo dropped anywhere is taken, not opened by the browser in place of the page.
  const drop = $("drop");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    add([...event.dataTransfer.files]);
  });
})();
