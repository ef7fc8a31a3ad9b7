// Dom: small helpers every other script uses (load it first).
//   Dom.el(tag, attributes, ...children)  a new element
//   Dom.fmt(value, digits)                a number for a label
// Uses: nothing.
//
// Each of the explorer's scripts defines one global object, named after its file, and keeps
// everything else inside a function: plain scripts share one global scope, so a helper left
// at the top level could clash with another file's or be called before its file has loaded.
// (They stay plain scripts, not ES modules, because the offline page inlines each file into
// a script element of one HTML file; see explorer_page.py.)
"use strict";

const Dom = (() => {
  // el("li", {class: "x", dataset: {kind: "cross"}}, "text", child, ...) -> a new element.
  // An attribute whose value is undefined, null or false is left out, so callers can
  // write {id: main ? "translation" : null}; "on..." attributes become event listeners.
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

  return {el, fmt};
})();
