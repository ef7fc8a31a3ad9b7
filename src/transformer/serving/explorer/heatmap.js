// Heatmap: attention maps as pictures and as numbers.
//   Heatmap.KINDS            the three kinds of attention, and which tokens label each axis
//   Heatmap.kindSpec(kind)   the entry of KINDS for "encoder", "decoder" or "cross"
//   Heatmap.weightColor(w), Heatmap.textColorOn(w)   a cell's colour, and its text's
//   Heatmap.canvas(weights)  a thumbnail: one pixel per weight
//   Heatmap.legend()         the colour bar
//   Heatmap.headStats(weights, keyTokens, spec), Heatmap.statsLine(stats, spec)
//                            a head's numbers, and the line that shows them
// Uses: Dom.
"use strict";

const Heatmap = (() => {
  const {el, fmt} = Dom;

  // Decoder self-attention rows are labelled with the decoder's inputs (so the diagonal
  // is "itself"); cross-attention rows with the token each position predicted (so the map
  // reads as an alignment).
  const KINDS = [
    {kind: "encoder", title: "Encoder self-attention",
     about: "each source token (row) over the source tokens (columns)",
     rows: r => r.source_tokens, cols: r => r.source_tokens, sink: "<eos>"},
    {kind: "decoder", title: "Decoder self-attention",
     about: "each decoder input (row) over the inputs before it: the upper triangle is masked",
     rows: r => r.decoder_input_tokens, cols: r => r.decoder_input_tokens, sink: "<bos>"},
    {kind: "cross", title: "Encoder-decoder attention",
     about: "the position that predicted each target token (row) over the source (columns)",
     rows: r => r.target_tokens, cols: r => r.source_tokens, sink: "<eos>"},
  ];

  function kindSpec(kind) {
    return KINDS.find(spec => spec.kind === kind);
  }

  // ColorBrewer "Blues": white for 0, so masked and ignored keys stay blank.
  const COLOR_STOPS = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  // 256 colours worked out once: a long sentence's zoom colours tens of thousands of cells.
  const COLOR_TABLE = Array.from({length: 256}, (_, i) => interpolateStops(i / 255));

  function interpolateStops(t) {
    const x = t * (COLOR_STOPS.length - 1);
    const i = Math.min(Math.floor(x), COLOR_STOPS.length - 2);
    const f = x - i;
    return COLOR_STOPS[i].map((c, k) => Math.round(c + f * (COLOR_STOPS[i + 1][k] - c)));
  }

  // The colour of a weight in [0, 1] (values outside are clamped), as [r, g, b].
  function weightRgb(weight) {
    const w = Math.max(0, Math.min(1, weight || 0));
    return COLOR_TABLE[Math.round(w * 255)];
  }

  function weightColor(weight) {
    return `rgb(${weightRgb(weight).join(",")})`;
  }

  // Dark cells need light text.
  function textColorOn(weight) {
    return weight > 0.55 ? "#fff" : "#1b2733";
  }

  // A (rows x cols) canvas, one pixel per weight; CSS scales it up without smoothing.
  function canvas(weights) {
    const rows = weights.length, cols = rows ? weights[0].length : 0;
    const node = el("canvas", {width: cols, height: rows, class: "heatmap"});
    node.style.aspectRatio = `${cols} / ${rows}`;
    const context = node.getContext("2d");
    if (!context || !rows || !cols) return node;
    const image = context.createImageData(cols, rows);
    weights.forEach((row, i) => row.forEach((w, j) => {
      const [r, g, b] = weightRgb(w);
      image.data.set([r, g, b, 255], (i * cols + j) * 4);
    }));
    context.putImageData(image, 0, 0);
    return node;
  }

  // The colour bar from 0 to 1, drawn from the same stops as the maps.
  function legend() {
    const last = COLOR_STOPS.length - 1;
    const stops = COLOR_STOPS.map((c, i) => `rgb(${c.join(",")}) ${(100 * i) / last}%`);
    const bar = el("div", {class: "legend-bar"});
    bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    return el("div", {class: "legend", title: "attention weight"},
              el("span", {}, "0"), bar, el("span", {}, "1"),
              el("span", {class: "muted"}, "attention weight"));
  }

  // Per-head numbers, each a mean over the query rows:
  //   entropy  in bits: 0 = all weight on one key, log2(keys) = spread evenly
  //   prev     weight on the key just before the query (self-attention only)
  //   sink     weight on <eos> (<bos> for decoder self-attention, whose keys hold no <eos>)
  //   mass     the row sums: 1 when masking is done right, less when it is done after softmax
  function headStats(weights, keyTokens, spec) {
    const sinkKeys = keyTokens.flatMap((token, j) => token === spec.sink ? [j] : []);
    let entropy = 0, sink = 0, mass = 0, prev = 0;
    weights.forEach((row, i) => {
      for (const p of row) {
        mass += p;
        if (p > 0) entropy -= p * Math.log2(p);
      }
      for (const j of sinkKeys) sink += row[j];
      if (i > 0) prev += row[i - 1] || 0;
    });
    const n = Math.max(weights.length, 1);
    const selfAttention = spec.kind !== "cross";
    return {entropy: entropy / n, sink: sink / n, mass: mass / n,
            prev: selfAttention && weights.length > 1 ? prev / (weights.length - 1) : null};
  }

  // A share in [0, 1] as the zoom's cells show weights: ".16" (narrow thumbnails need the room).
  function share(value) {
    return fmt(value).replace(/^0\./, ".");
  }

  // The numbers under a thumbnail; row sums are shown only when they are not 1.
  function statsLine(stats, spec) {
    const parts = [
      el("span", {title: "mean entropy of a query's weights, in bits"}, `H ${fmt(stats.entropy)}`),
    ];
    if (stats.prev !== null) {
      parts.push(el("span", {title: "share of weight on the previous token"},
                    `prev ${share(stats.prev)}`));
    }
    parts.push(el("span", {title: `share of weight on ${spec.sink}`},
                  `${spec.sink.replace(/[<>]/g, "")} ${share(stats.sink)}`));
    if (Math.abs(stats.mass - 1) > 0.02) {  // more than the rounding to 3 decimals explains
      parts.push(el("span", {class: "leak", title: "mean row sum: weights masked after the softmax"},
                    `\u03a3 ${share(stats.mass)}`));
    }
    return el("div", {class: "head-stats"}, parts);
  }

  return {KINDS, kindSpec, weightColor, textColorOn, canvas, legend, headStats, statsLine};
})();
