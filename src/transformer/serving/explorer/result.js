// Result: one translation rendered as a column: the output, the n-best list, the output
// tokens with their probabilities, and a thumbnail of every attention head.
//   Result.renderColumn(entry, column, showLabel, onSelectHead)   the column, as an element
// Uses: Dom, Heatmap.
"use strict";

const Result = (() => {
  const {el, fmt} = Dom;

  // `entry` is {label, checkpoint, result}; the "main" column owns the ids tests query
  // (#translation, #hypotheses, #tokens), a "compare" column only the classes.
  // `onSelectHead({kind, layer, head})` is called when a thumbnail is clicked.
  function renderColumn(entry, column, showLabel, onSelectHead) {
    const result = entry.result;
    const main = column === "main";
    return el("section", {class: "column", dataset: {column}},
      showLabel ? el("h2", {class: "column-label"}, entry.label || entry.checkpoint || column) : null,
      translationBlock(result, main),
      hypothesesBlock(result, main),
      tokensBlock(result, main),
      Heatmap.KINDS.map(spec => attentionSection(result, spec, onSelectHead)));
  }

  function translationBlock(result, main) {
    const best = (result.hypotheses || [])[0] || {};
    const meta = [`score ${fmt(best.score)}`, `log p ${fmt(best.log_prob)}`,
                  typeof result.ms === "number" ? `${fmt(result.ms, 0)} ms` : null,
                  result.checkpoint].filter(Boolean).join(" \u00b7 ");
    return el("div", {class: "translation-box"},
      el("div", {class: "translation", id: main ? "translation" : null, lang: "und"}, result.translation),
      el("div", {class: "muted meta"}, meta));
  }

  function hypothesesBlock(result, main) {
    const items = (result.hypotheses || []).map((hyp, i) =>
      el("li", {class: i === 0 ? "hypothesis best" : "hypothesis"},
         el("span", {class: "hyp-text"}, hyp.text),
         el("span", {class: "hyp-score", title: "length-normalised score (log p / length penalty)"},
            fmt(hyp.score)),
         el("span", {class: "hyp-logp muted", title: "log probability"}, `log p ${fmt(hyp.log_prob)}`)));
    return el("details", {class: "hypotheses-box", open: true},
      el("summary", {}, `${items.length}-best list`),
      el("ol", {class: "hypotheses", id: main ? "hypotheses" : null}, items));
  }

  // --- output tokens ------------------------------------------------------------------

  function tokensBlock(result, main) {
    const chips = (result.target_tokens || []).map((token, t) =>
      tokenChip(token, (result.token_probs || [])[t], (result.alternatives || [])[t] || []));
    return el("div", {class: "tokens-box"},
      el("h3", {}, "Output tokens", el("span", {class: "muted hint"},
         " \u2014 bar: the probability the model gave each token; hover or click for the alternatives")),
      el("div", {class: "tokens", id: main ? "tokens" : null}, chips));
  }

  function tokenChip(token, prob, alternatives) {
    const chip = el("span", {class: "token-chip", tabindex: 0, dataset: {prob: fmt(prob, 4)}},
      el("span", {class: "token-text"}, token),
      probBar(prob),
      alternativesList(token, alternatives));
    chip.style.setProperty("--p", prob || 0);  // the chip's tint (explorer.css)
    if (prob < 0.5) chip.classList.add("unsure");
    chip.addEventListener("click", () => chip.classList.toggle("pinned"));
    return chip;
  }

  function alternativesList(chosen, alternatives) {
    return el("ol", {class: "alternatives"},
      el("li", {class: "alternatives-title"}, "the model weighed"),
      alternatives.map(alt =>
        el("li", {class: alt.token === chosen ? "chosen" : null},
           el("span", {class: "alt-token"}, alt.token),
           probBar(alt.prob))));
  }

  // A probability as a bar and a number (two grid cells).
  function probBar(prob) {
    const fill = el("span", {class: "prob-fill", style: `width: ${100 * (prob || 0)}%`});
    return [el("span", {class: "prob-bar"}, fill), el("span", {class: "prob-value"}, fmt(prob))];
  }

  // --- attention thumbnails -------------------------------------------------------------

  function attentionSection(result, spec, onSelectHead) {
    const layers = (result.attention || {})[spec.kind] || [];
    const heads = layers.length ? layers[0].length : 0;
    const grid = el("div", {class: "head-grid"});
    grid.style.gridTemplateColumns = `max-content repeat(${heads}, minmax(0, var(--thumbnail)))`;
    grid.append(el("div", {class: "head-label"}, "head"),
                ...Array.from({length: heads}, (_, h) => el("div", {class: "head-label"}, h + 1)));
    layers.forEach((layer, l) => {
      grid.append(el("div", {class: "layer-label"}, `layer ${l + 1}`));
      layer.forEach((weights, h) => grid.append(headPanel(result, spec, l, h, weights, onSelectHead)));
    });
    return el("section", {class: "attention-kind", dataset: {kind: spec.kind}},
      el("h3", {}, spec.title), el("p", {class: "muted about"}, spec.about), grid);
  }

  function headPanel(result, spec, layer, head, weights, onSelectHead) {
    const selection = {kind: spec.kind, layer, head};
    const select = () => onSelectHead(selection);
    return el("div", {class: "head-panel", role: "button", tabindex: 0,
                      title: `${spec.title}, layer ${layer + 1}, head ${head + 1}: click to zoom`,
                      dataset: {kind: spec.kind, layer, head},
                      onclick: select,
                      onkeydown: event => { if (event.key === "Enter" || event.key === " ") select(); }},
      Heatmap.canvas(weights),
      Heatmap.statsLine(Heatmap.headStats(weights, spec.cols(result), spec), spec));
  }

  return {renderColumn};
})();
