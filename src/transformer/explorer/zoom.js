// The large view of one head: every weight as a cell, the tokens on both axes (queries
// down the rows, keys along the columns), and hover highlighting.
"use strict";

const CELL_MIN = 9;   // px: below this a cell is too small to point at
const CELL_MAX = 34;  // px: above this short sentences look bloated
const LABEL_ROOM = 96;  // px kept for the row labels

function kindSpec(kind) {
  return ATTENTION_KINDS.find(spec => spec.kind === kind);
}

// The zoom of `selection` ({kind, layer, head}) in `result`, `width` px wide at most.
function zoomView(result, selection, width, label) {
  const spec = kindSpec(selection.kind);
  const weights = result.attention[spec.kind][selection.layer][selection.head];
  const rows = spec.rows(result), cols = spec.cols(result);
  const cell = Math.max(CELL_MIN, Math.min(CELL_MAX, Math.floor((width - LABEL_ROOM) / cols.length)));
  const grid = el("div", {class: "zoom-grid"});
  grid.style.gridTemplateColumns = `max-content repeat(${cols.length}, ${cell}px)`;
  grid.style.gridTemplateRows = "max-content";  // the column labels, as tall as they need
  grid.style.gridAutoRows = `${cell}px`;
  grid.append(el("div", {class: "corner"}));
  cols.forEach((token, j) => grid.append(el("div", {class: "col-label", dataset: {col: j}}, token)));
  weights.forEach((row, i) => {
    grid.append(el("div", {class: "row-label", dataset: {row: i}}, rows[i]));
    row.forEach((w, j) => grid.append(zoomCell(w, i, j, spec, cell)));
  });
  const readout = el("div", {class: "zoom-readout muted"}, "\u00a0");
  listenForHover(grid, readout, weights, rows, cols);
  const stats = statsLine(headStats(weights, cols, spec), spec);
  return el("div", {class: "zoom"}, label ? el("h3", {class: "zoom-label"}, label) : null,
            stats, el("div", {class: "zoom-scroll"}, grid), readout);
}

function zoomCell(weight, i, j, spec, cell) {
  // The causal mask of decoder self-attention is hatched: a key the query may not see,
  // not merely one it chose to ignore.
  const masked = spec.kind === "decoder" && j > i;
  const node = el("div", {class: masked ? "cell masked" : "cell", dataset: {row: i, col: j}});
  node.style.backgroundColor = weightColor(weight);
  if (cell >= 26 && weight >= 0.1) {
    node.textContent = weight.toFixed(1).replace(/^0\./, ".");
    node.style.color = textColorOn(weight);
  }
  return node;
}

// Hovering a row label or a cell lights up that row (what the query attends to); a
// column label or a cell, that column (what attends to the key).
function listenForHover(grid, readout, weights, rows, cols) {
  let current = null;
  grid.addEventListener("mouseover", event => {
    const target = event.target.closest("[data-row], [data-col]");
    if (!target || target === current) return;
    current = target;
    const row = target.dataset.row === undefined ? null : Number(target.dataset.row);
    const col = target.dataset.col === undefined ? null : Number(target.dataset.col);
    highlight(grid, row, col);
    readout.textContent = describe(weights, rows, cols, row, col);
  });
  grid.addEventListener("mouseleave", () => {
    current = null;
    highlight(grid, null, null);
    readout.textContent = "\u00a0";
  });
}

function highlight(grid, row, col) {
  grid.classList.toggle("hovering", row !== null || col !== null);
  for (const node of grid.querySelectorAll("[data-row], [data-col]")) {
    const inRow = row !== null && node.dataset.row === String(row);
    const inCol = col !== null && node.dataset.col === String(col);
    node.classList.toggle("lit", inRow || inCol);
  }
}

// One line about what is hovered: a weight, or the strongest link of a token.
function describe(weights, rows, cols, row, col) {
  if (row !== null && col !== null) {
    return `\u201c${rows[row]}\u201d \u2192 \u201c${cols[col]}\u201d: ${fmt(weights[row][col], 3)}`;
  }
  if (row !== null) {
    const j = argmax(weights[row]);
    return `\u201c${rows[row]}\u201d attends most to \u201c${cols[j]}\u201d (${fmt(weights[row][j])})`;
  }
  const column = weights.map(r => r[col]);
  const i = argmax(column);
  return `\u201c${cols[col]}\u201d is attended most by \u201c${rows[i]}\u201d (${fmt(column[i])})`;
}

function argmax(values) {
  return values.reduce((best, v, i) => (v > values[best] ? i : best), 0);
}
