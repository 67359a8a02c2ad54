// Find in output: every match highlighted with the CSS Custom Highlight API (no change to the
// output's DOM, so it goes on streaming), Enter goes to the next one. Matches inside one text
// node only: a match across a colour change is missed.

/** The ranges of `output`'s text that contain `needle` (case-insensitive). */
function matches(output, needle) {
  const ranges = [];
  if (!needle) return ranges;
  const wanted = needle.toLowerCase();
  const walker = document.createTreeWalker(output, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.data.toLowerCase();
    for (let at = text.indexOf(wanted); at !== -1; at = text.indexOf(wanted, at + wanted.length)) {
      const range = new Range();
      range.setStart(node, at);
      range.setEnd(node, at + wanted.length);
      ranges.push(range);
    }
  }
  return ranges;
}

/** A labelled search box for `output`, with the count of matches; `h` builds elements. */
export function findBox(output, h) {
  const supported = typeof Highlight === "function" && "highlights" in CSS;
  const count = h("span", { class: "dk-muted", "aria-live": "polite" });
  let found = [];
  let current = -1;
  const show = () => {
    if (!supported) return;
    CSS.highlights.set("dk-found", new Highlight(...found));
    CSS.highlights.set("dk-current", new Highlight(...(current >= 0 ? [found[current]] : [])));
  };
  const find = (needle) => {
    found = matches(output, needle);
    current = found.length ? 0 : -1;
    count.textContent = needle ? `${found.length} found` : "";
    show();
    reveal();
  };
  const reveal = () => {
    if (current < 0) return;
    const box = found[current].getBoundingClientRect();
    const frame = output.getBoundingClientRect();
    output.dataset.follow = "no";
    output.scrollTop += box.top - frame.top - frame.height / 3;
  };
  const input = h("input", {
    type: "search",
    "data-key": "find",
    placeholder: "text",
    oninput: (event) => find(event.target.value),
    onkeydown: (event) => {
      if (event.key !== "Enter" || !found.length) return;
      event.preventDefault();
      current = (current + (event.shiftKey ? found.length - 1 : 1)) % found.length;
      count.textContent = `${current + 1} of ${found.length}`;
      show();
      reveal();
    },
  });
  return h("label", {}, "Find ", input, " ", count);
}
