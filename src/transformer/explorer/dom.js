// Small helpers shared by the explorer's scripts (plain scripts, no modules: the same
// files run from /static/ and inlined into one offline HTML file).
"use strict";

// el("li", {class: "x", dataset: {kind: "cross"}}, "text", child, ...) -> a new element.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A number for a label: a fixed number of decimals, or a dash when there is none.
function fmt(value, digits = 2) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "\u2013";
}
