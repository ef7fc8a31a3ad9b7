// Zoom: the large view of one head: every weight as a cell, the tokens on both axes
// (queries down the rows, keys along the columns), and hover highlighting.
//   Zoom.view(result, selection, width, label)   the zoom of one head, as an element
// Uses: Dom, Heatmap.
"use strict";

const Zoom = (() => {
  const {el, fmt} = Dom;

  const CELL_MIN = 9;   // px: below this a cell is too small to point at
  const CELL_MAX = 34;  // px: above this short sentences look bloated
  const LABEL_ROOM = 96;  // px kept for the row labels

  // The zoom of `selection` ({kind, layer, head}) in `result`, `width` px wide at most.
  function view(result, selection, width, label) {
    const spec = Heatmap.kindSpec(selection.kind);
    const weights = result.attention[spec.kind][selection.layer][selection.head];
    const rows = spec.rows(result), cols = spec.cols(result);
    const cell = Math.max(CELL_MIN, Math.min(CELL_MAX, Math.floor((width - LABEL_ROOM) / cols.length)));
    const grid = el("div", {class: "zoom-grid"});
    grid.style.gridTemplateColumns = `max-content repeat(${cols.length}, ${cell}px)`;
    grid.style.gridTemplateRows = "max-content";  // the column labels, as tall as they need
    grid.style.gridAutoRows = `${cell}px`;
    // The nodes of each row and of each column (its label, then its cells), kept as they
    // are made so that a hover finds the ones to light without searching the grid.
    const rowNodes = weights.map(() => []), colNodes = cols.map(() => []);
    grid.append(el("div", {class: "corner"}));
    cols.forEach((token, j) => {
      const node = el("div", {class: "col-label", dataset: {col: j}}, token);
      colNodes[j].push(node);
      grid.append(node);
    });
    weights.forEach((row, i) => {
      const labelNode = el("div", {class: "row-label", dataset: {row: i}}, rows[i]);
      rowNodes[i].push(labelNode);
      grid.append(labelNode);
      row.forEach((w, j) => {
        const node = zoomCell(w, i, j, spec, cell);
        rowNodes[i].push(node);
        colNodes[j].push(node);
        grid.append(node);
      });
    });
    const readout = el("div", {class: "zoom-readout muted"}, "\u00a0");
    listenForHover(grid, readout, weights, rows, cols, rowNodes, colNodes);
    const stats = Heatmap.statsLine(Heatmap.headStats(weights, cols, spec), spec);
    return el("div", {class: "zoom"}, label ? el("h3", {class: "zoom-label"}, label) : null,
              stats, el("div", {class: "zoom-scroll"}, grid), readout);
  }

  function zoomCell(weight, i, j, spec, cell) {
    // The causal mask of decoder self-attention is hatched: a key the query may not see,
    // not merely one it chose to ignore.
    const masked = spec.kind === "decoder" && j > i;
    const node = el("div", {class: masked ? "cell masked" : "cell", dataset: {row: i, col: j}});
    node.style.backgroundColor = Heatmap.weightColor(weight);
    if (cell >= 26 && weight >= 0.1) {
      node.textContent = weight.toFixed(1).replace(/^0\./, ".");
      node.style.color = Heatmap.textColorOn(weight);
    }
    return node;
  }

  // Hovering a row label or a cell lights up that row (what the query attends to); a
  // column label or a cell, that column (what attends to the key).
  //
  // Only the lit row and column change on a move: a zoom at max_len 256 holds 65,000
  // cells, and visiting each of them on every mouse move makes the page stutter.
  function listenForHover(grid, readout, weights, rows, cols, rowNodes, colNodes) {
    let current = null;                // the element under the mouse
    let lit = {row: null, col: null};  // the lit row and column (null: none)

    function light(row, col) {
      // Off first, then on: the cell where the old and new lines cross may be in both.
      if (lit.row !== null) for (const node of rowNodes[lit.row]) node.classList.remove("lit");
      if (lit.col !== null) for (const node of colNodes[lit.col]) node.classList.remove("lit");
      if (row !== null) for (const node of rowNodes[row]) node.classList.add("lit");
      if (col !== null) for (const node of colNodes[col]) node.classList.add("lit");
      lit = {row, col};
      grid.classList.toggle("hovering", row !== null || col !== null);
    }

    grid.addEventListener("mouseover", event => {
      const target = event.target.closest("[data-row], [data-col]");
      if (!target || target === current) return;
      current = target;
      const row = target.dataset.row === undefined ? null : Number(target.dataset.row);
      const col = target.dataset.col === undefined ? null : Number(target.dataset.col);
      light(row, col);
      readout.textContent = describe(weights, rows, cols, row, col);
    });
    grid.addEventListener("mouseleave", () => {
      current = null;
      light(null, null);
      readout.textContent = "\u00a0";
    });
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

  return {view};
})();
