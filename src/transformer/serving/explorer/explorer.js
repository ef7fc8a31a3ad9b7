// Explorer: the page itself. It asks the server for translations (or reads
// window.EXPLORER_DATA, in the offline file), renders them, and keeps the URL, the
// checkpoint slider and the zoom in step.
//   Explorer.start()   wire up the page; called once, at the end of this file
// Uses: Heatmap, Zoom, Result (so it is loaded last).
"use strict";

const Explorer = (() => {
  const $ = id => document.getElementById(id);

  const state = {
    entries: [],        // what is on screen: [{label, checkpoint, result}], one per column
    selection: null,    // the zoomed head: {kind, layer, head}
    checkpoint: null,   // the checkpoint asked for (null: the server's default)
    request: 0,         // the latest request's number: older answers are dropped
    zoomWidth: 0,       // px the zoom was drawn for: redrawn when the window changes it
  };

  function setState(name) {
    document.body.dataset.state = name;
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    setState("error");
  }

  // --- rendering --------------------------------------------------------------------------

  function render(entries) {
    state.entries = entries;
    $("error").hidden = true;
    const two = entries.length > 1;
    $("explorer").classList.toggle("two", two);
    $("columns").replaceChildren(...entries.map((entry, i) =>
      Result.renderColumn(entry, i === 0 ? "main" : "compare", two, selectHead)));
    selectHead(state.selection || defaultSelection(entries[0].result));
    setState("ready");
  }

  // The last layer's first cross-attention head: the map that most often reads as an alignment.
  function defaultSelection(result) {
    const layers = (result.attention || {}).cross || [];
    return {kind: "cross", layer: Math.max(layers.length - 1, 0), head: 0};
  }

  function headExists(result, {kind, layer, head}) {
    const layers = (result.attention || {})[kind] || [];
    return Boolean(layers[layer] && layers[layer][head]);
  }

  function selectHead(selection) {
    const result = state.entries[0].result;
    // No head chosen yet, or one this answer lacks (another model's shape): the default.
    if (!selection || !headExists(result, selection)) selection = defaultSelection(result);
    if (!headExists(result, selection)) return;  // an answer without attention: nothing to zoom
    state.selection = selection;
    for (const panel of document.querySelectorAll(".head-panel")) {
      panel.classList.toggle("selected", panel.dataset.kind === selection.kind &&
        Number(panel.dataset.layer) === selection.layer && Number(panel.dataset.head) === selection.head);
    }
    const spec = Heatmap.kindSpec(selection.kind);
    $("zoom-title").textContent =
      `${spec.title} \u00b7 layer ${selection.layer + 1} \u00b7 head ${selection.head + 1}`;
    const width = state.zoomWidth = $("zooms").clientWidth || 480;
    const two = state.entries.length > 1;
    const shown = state.entries.filter(entry => headExists(entry.result, selection));
    $("zooms").replaceChildren(...shown.map(entry =>
      Zoom.view(entry.result, selection, width, two ? entry.label || entry.checkpoint : null)));
  }

  function showInfo(info) {
    const model = info.model || {};
    const parts = [
      info.languages,
      model.n_heads ? `${model.n_encoder_layers}+${model.n_decoder_layers} layers \u00d7 ` +
                      `${model.n_heads} heads, d_model ${model.d_model}` : null,
      typeof info.parameters === "number" ? `${(info.parameters / 1e6).toFixed(2)} M parameters` : null,
      info.checkpoint ? `checkpoint ${info.checkpoint}` : null,
      // The BLEU of training's last evaluation with BLEU: say at which step, since the
      // checkpoint shown (an average, say) may be another.
      typeof info.valid_bleu === "number"
        ? `valid BLEU ${info.valid_bleu.toFixed(1)}` +
          (typeof info.valid_bleu_step === "number" ? ` at step ${info.valid_bleu_step}` : "")
        : null,
    ];
    $("model-info").textContent = parts.filter(Boolean).join(" \u00b7 ");
    // The largest beam the server accepts is its own setting, so the page reads it rather
    // than repeating the number. The n-best list is part of the beam: the same bound.
    if (typeof info.max_beam === "number") {
      $("beam").max = info.max_beam;
      $("n-best").max = info.max_beam;
    }
    // A synthetic run (copy, reverse, sort) reads numbered symbols, not a sentence.
    if (info.symbols) {
      $("source-text").placeholder =
        `Type symbols from 0 to ${info.symbols - 1}, e.g. "3 1 4 1 5", then Enter`;
    }
  }

  // The slider appears only when there is more than one stop; `onMove(index)` on every move.
  function setupSlider(positions, start, onMove, event) {
    if (positions.length < 2) return;
    const slider = $("checkpoint-slider");
    slider.max = positions.length - 1;
    slider.value = start;
    $("checkpoint-control").hidden = false;
    const label = () => {
      const stop = positions[Number(slider.value)];
      $("checkpoint-label").textContent = stop.step === null || stop.step === undefined
        ? stop.name : `${stop.name} (step ${stop.step})`;
    };
    label();
    slider.addEventListener("input", label);
    slider.addEventListener(event, () => onMove(Number(slider.value)));
  }

  // --- offline: the data is in the page --------------------------------------------------

  function startOffline(data) {
    document.body.classList.add("offline");
    const results = data.results || [];
    const compare = data.compare || [];
    const text = $("source-text");
    text.value = data.text || (results.length ? results[0].result.source_tokens.join(" ") : "");
    text.readOnly = true;
    // The slider names the checkpoint of each answer; the run's default one (an average,
    // say) need not be among them, so the header leaves it out.
    if (data.info) showInfo({...data.info, checkpoint: null});
    if (!results.length) return showError("the page holds no translation");
    const show = index => render(compare.length
      ? [results[index], compare[Math.min(index, compare.length - 1)]] : [results[index]]);
    const known = (data.info || {}).checkpoints || [];
    const stops = results.map(entry => known.find(stop => stop.name === entry.checkpoint) ||
                                       {name: entry.checkpoint || entry.label});
    // Every stop is already here, so the page redraws while the slider moves.
    setupSlider(stops, results.length - 1, show, "input");
    show(results.length - 1);
  }

  // --- online: ask the server ------------------------------------------------------------

  async function requestJson(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new Error(`could not reach the server (${error.message})`);
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error(answer && answer.error ? answer.error
                                             : `HTTP ${response.status} ${response.statusText}`);
    }
    if (answer === null) throw new Error(`${path}: the answer is not JSON`);
    return answer;
  }

  function readNumber(id, fallback) {
    const value = parseInt($(id).value, 10);
    return Number.isFinite(value) && value > 0 ? value : fallback;
  }

  async function translate() {
    const text = $("source-text").value.trim();
    if (!text) return;
    const beam = readNumber("beam", 4), nBest = Math.min(readNumber("n-best", 1), beam);
    const params = new URLSearchParams({text, beam, n_best: nBest});
    if (state.checkpoint) params.set("checkpoint", state.checkpoint);
    history.replaceState(null, "", `?${params}`);  // the address is a link to this translation
    const number = ++state.request;
    setState("loading");
    $("status").textContent = "translating\u2026";
    try {
      const result = await requestJson("api/translate", {
        text, beam, n_best: nBest, attention: true, checkpoint: state.checkpoint});
      if (number !== state.request) return;  // a newer request is on its way
      render([{label: result.checkpoint, checkpoint: result.checkpoint, result}]);
      $("status").textContent = "";
    } catch (error) {
      if (number !== state.request) return;
      $("status").textContent = "";
      showError(error.message);
    }
  }

  async function loadInfo() {
    try {
      const info = await requestJson("api/info");
      showInfo(info);
      const stops = info.checkpoints || [];
      const start = stops.findIndex(stop => stop.name === (state.checkpoint || info.checkpoint));
      // A step is a new request: ask once the slider is let go.
      setupSlider(stops, start < 0 ? stops.length - 1 : start, index => {
        state.checkpoint = stops[index].name;
        translate();
      }, "change");
    } catch (error) {
      showError(error.message);
    }
  }

  async function startOnline() {
    const params = new URLSearchParams(location.search);
    if (params.get("text")) $("source-text").value = params.get("text");
    if (params.get("beam")) $("beam").value = params.get("beam");
    if (params.get("n_best")) $("n-best").value = params.get("n_best");
    state.checkpoint = params.get("checkpoint");
    $("controls").addEventListener("submit", event => {
      event.preventDefault();
      translate();
    });
    $("source-text").addEventListener("keydown", event => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {  // Shift+Enter: a new line
        event.preventDefault();
        translate();
      }
    });
    await loadInfo();
    if (params.get("text")) translate();
  }

  function start() {
    $("legend").append(Heatmap.legend());
    window.addEventListener("resize", () => {
      // No zoom is drawn before the first answer, nor for an answer without attention
      // (asked for without it, or an error): there is nothing to redraw.
      if (!state.entries.length || !state.selection) return;
      if ($("zooms").clientWidth !== state.zoomWidth) selectHead(state.selection);
    });
    if (window.EXPLORER_DATA) startOffline(window.EXPLORER_DATA);
    else startOnline();
  }

  return {start};
})();

Explorer.start();
