// Terminal colours in output: SGR sequences ("\x1b[31m") become spans with classes (the page's
// CSP allows no inline style); any other escape sequence is dropped. Output arrives in chunks,
// so a sequence cut in two is kept until the rest comes, and the colour carries on.

const SEQUENCE = /\x1b\[([0-9;?]*)([A-Za-z])/g;
const UNFINISHED = /\x1b(\[[0-9;?]*)?$/;

export class AnsiWriter {
  constructor(target) {
    this.target = target;
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.pending = "";
  }

  /** Append `text` to the target, coloured. */
  write(text) {
    let rest = this.pending + text;
    const cut = UNFINISHED.exec(rest);
    this.pending = cut ? cut[0] : "";
    if (cut) rest = rest.slice(0, cut.index);
    let last = 0;
    for (const match of rest.matchAll(SEQUENCE)) {
      this.emit(rest.slice(last, match.index));
      if (match[2] === "m") this.sgr(match[1]);
      last = match.index + match[0].length;
    }
    this.emit(rest.slice(last));
  }

  emit(text) {
    if (!text) return;
    const classes = [
      this.fg !== null && `dk-fg-${this.fg}`,
      this.bg !== null && `dk-bg-${this.bg}`,
      this.bold && "dk-bold",
    ].filter(Boolean);
    if (!classes.length) return this.target.append(text);
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.textContent = text;
    this.target.append(span);
  }

  sgr(parameters) {
    const codes = parameters === "" ? [0] : parameters.split(";").map(Number);
    for (const code of codes) {
      if (code === 0) [this.fg, this.bg, this.bold] = [null, null, false];
      else if (code === 1) this.bold = true;
      else if (code === 22) this.bold = false;
      else if (code >= 30 && code <= 37) this.fg = code - 30;
      else if (code >= 90 && code <= 97) this.fg = code - 90 + 8;
      else if (code === 39) this.fg = null;
      else if (code >= 40 && code <= 47) this.bg = code - 40;
      else if (code >= 100 && code <= 107) this.bg = code - 100 + 8;
      else if (code === 49) this.bg = null;
    }
  }
}
