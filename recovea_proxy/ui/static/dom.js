// Building the page's DOM without innerHTML: every value from the API goes in as text.

/** An element with attributes (`class`, `data-*`, …) and children (nodes or text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace a container's children. */
export function fill(container, ...children) {
  container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** A table from column titles and rows of cells (nodes or text). */
export function table(columns, rows, attributes = {}) {
  return el("table", attributes,
    el("thead", {}, el("tr", {}, columns.map((title) => el("th", { scope: "col" }, title)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) =>
      cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell))))));
}

/** A paragraph saying a panel has nothing to show, and why. */
export function note(text, kind = "hint") {
  return el("p", { class: kind }, text);
}
