// A schedule in words, for the job form's cron helper: the forms dkron-lab accepts (5 or 6
// cron fields, seconds first in 6; @every, @at, @manually and the @daily-style descriptors;
// a TZ= prefix). Pure: no DOM, no fetch. The words are a reading aid; the next fires shown
// beside them come from the server (GET /v1/schedule), which is the truth.

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "",
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAY_NAMES = Object.fromEntries(DAYS.map((d, i) => [d.slice(0, 3).toLowerCase(), i]));
const MONTH_NAMES = Object.fromEntries(
  MONTHS.slice(1).map((m, i) => [m.slice(0, 3).toLowerCase(), i + 1]),
);

const DESCRIPTORS = {
  "@yearly": "Every year, on January 1 at 00:00",
  "@annually": "Every year, on January 1 at 00:00",
  "@monthly": "On day 1 of every month at 00:00",
  "@weekly": "Every Sunday at 00:00",
  "@daily": "Every day at 00:00",
  "@midnight": "Every day at 00:00",
  "@hourly": "Every hour, at minute 0",
  "@minutely": "Every minute",
  "@manually": "Never on its own: only when run by hand (API, UI) or after its parent job",
};

const UNITS = {
  h: "hour",
  m: "minute",
  s: "second",
  ms: "millisecond",
  us: "microsecond",
  µs: "microsecond",
  ns: "nanosecond",
};

/** `spec` in words ("Every 5 minutes, Monday through Friday"), or null when it is not a form
 * this describer knows (the server's message then says what is wrong). */
export function describeSchedule(spec) {
  let text = String(spec || "").trim();
  let zone = "";
  const prefix = /^(?:CRON_)?TZ=(\S+)\s+(.*)$/.exec(text);
  if (prefix) [, zone, text] = prefix;
  const words = text.startsWith("@") ? describeDescriptor(text) : describeCron(text);
  return words && zone ? `${words} (${zone})` : words;
}

function describeDescriptor(text) {
  const [word, ...rest] = text.split(/\s+/);
  const argument = rest.join(" ");
  if (word === "@every") {
    const every = goDuration(argument);
    return every ? `Every ${every}` : null;
  }
  if (word === "@at") return argument ? `Once, at ${argument.replace("T", " ")}` : null;
  return argument ? null : (DESCRIPTORS[word] ?? null);
}

/** "1h30m" -> "1 hour 30 minutes" (a Go duration), or null. */
export function goDuration(text) {
  const parts = [...String(text).matchAll(/(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/g)];
  if (!parts.length || parts.map((p) => p[0]).join("") !== text) return null;
  return parts.map(([, n, unit]) => `${n} ${UNITS[unit]}${Number(n) === 1 ? "" : "s"}`).join(" ");
}

function describeCron(text) {
  let fields = text.split(/\s+/);
  if (fields.length === 5) fields = ["0", ...fields];
  if (fields.length !== 6) return null;
  const names = [null, null, null, null, MONTH_NAMES, DAY_NAMES];
  const parsed = fields.map((field, i) => inRange(parseField(field, names[i]), RANGES[i]));
  if (parsed.some((field) => field === null)) return null;
  const [sec, min, hour, dom, month, dow] = parsed;
  const time = timePhrase(sec, min, hour);
  const days = dayPhrase(dom, dow) || (/^at \d/.test(time) ? "every day" : null);
  const phrases = [time, days, monthPhrase(month)];
  const words = phrases.filter(Boolean).join(", ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The lowest and highest value of each field (day-of-week 7 is Sunday too). */
const RANGES = [
  [0, 59],
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12],
  [0, 7],
];

function inRange(field, [low, high]) {
  const ok = (n) => n === null || (n >= low && n <= high);
  return field && field.parts.every(([l, h]) => ok(l) && ok(h)) ? field : null;
}

/** A field as `{star, hash, step, parts: [[low, high, step], ...]}`, or null. */
function parseField(text, names) {
  if (text === "*" || text === "?") return { star: true, parts: [] };
  if (text === "~") return { hash: true, parts: [] };
  const parts = [];
  for (const part of text.split(",")) {
    const match = /^(\*|[\w]+)(?:-([\w]+))?(?:\/(\d+))?$/.exec(part);
    if (!match) return null;
    const step = match[3] ? Number(match[3]) : 1;
    if (match[1] === "*") {
      parts.push([null, null, step]);
      continue;
    }
    const low = value(match[1], names);
    const high = match[2] !== undefined ? value(match[2], names) : match[3] ? null : low;
    if (low === null || (match[2] !== undefined && high === null)) return null;
    parts.push([low, high, step]);
  }
  return { parts };
}

function value(text, names) {
  if (/^\d+$/.test(text)) return Number(text);
  return names?.[text.toLowerCase()] ?? null;
}

const single = (field) =>
  field.parts.length === 1 && field.parts[0][0] !== null && field.parts[0][0] === field.parts[0][1];
const singles = (field) =>
  field.parts.length > 0 && field.parts.every(([l, h]) => l !== null && l === h);
const pad = (n) => String(n).padStart(2, "0");

/** "a, b and c". */
function list(items) {
  return items.length > 1
    ? `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`
    : items[0];
}

function timePhrase(sec, min, hour) {
  if (single(sec) && single(min) && singles(hour) && hour.parts.length <= 6) {
    const s = sec.parts[0][0];
    const times = hour.parts.map(
      ([h]) => `${pad(h)}:${pad(min.parts[0][0])}${s ? `:${pad(s)}` : ""}`,
    );
    return `at ${list(times)}`;
  }
  const secText = unitPhrase(sec, "second", { zeroIsDefault: true });
  const minText =
    min.star && !secText ? "every minute" : min.star ? null : unitPhrase(min, "minute");
  const hourText = hourPhrase(hour, Boolean(min.hash || singles(min)));
  const words = [secText, minText].filter(Boolean).join(", ");
  if (hourText === "of every hour") return `${words} ${hourText}`;
  return [words, hourText].filter(Boolean).join(", ");
}

function unitPhrase(field, unit, { zeroIsDefault = false } = {}) {
  if (field.star) return `every ${unit}`;
  if (field.hash) return `at a ${unit} picked from the job's name`;
  if (zeroIsDefault && single(field) && field.parts[0][0] === 0) return null;
  if (singles(field)) {
    const values = field.parts.map(([l]) => l);
    return `at ${unit}${values.length > 1 ? "s" : ""} ${list(values)}`;
  }
  return field.parts.map((part) => stepPhrase(part, unit, String)).join(" and ");
}

function stepPhrase([low, high, step], unit, show) {
  const every = step > 1 ? `every ${step} ${unit}s` : `every ${unit}`;
  if (low === null) return every;
  if (high === null) return `${every} from ${show(low)}`;
  if (low === high) return `at ${unit} ${show(low)}`;
  return step > 1
    ? `${every} from ${show(low)} to ${show(high)}`
    : `${unit}s ${show(low)} to ${show(high)}`;
}

function hourPhrase(hour, minuteFixed) {
  if (hour.star) return minuteFixed ? "of every hour" : null;
  if (hour.hash) return "in an hour picked from the job's name";
  if (single(hour)) return `between ${pad(hour.parts[0][0])}:00 and ${pad(hour.parts[0][0])}:59`;
  if (singles(hour)) return `in hours ${list(hour.parts.map(([h]) => pad(h)))}`;
  return hour.parts
    .map(([low, high, step]) =>
      low !== null && high !== null && step === 1
        ? `between ${pad(low)}:00 and ${pad(high)}:59`
        : stepPhrase([low, high, step], "hour", (h) => `${pad(h)}:00`),
    )
    .join(" and ");
}

function dayPhrase(dom, dow) {
  const domText = dom.star
    ? null
    : dom.hash
      ? "on a day of the month picked from the job's name"
      : daysOfMonth(dom);
  const dowText = dow.star
    ? null
    : dow.hash
      ? "on a weekday picked from the job's name"
      : weekdays(dow);
  if (domText && dowText) return `${domText} or ${dowText}`; // robfig: either may match
  return domText || dowText;
}

function daysOfMonth(dom) {
  if (singles(dom)) {
    const values = dom.parts.map(([l]) => l);
    return `on day${values.length > 1 ? "s" : ""} ${list(values)} of the month`;
  }
  return dom.parts.map((part) => stepPhrase(part, "day", String)).join(" and ") + " of the month";
}

function weekdays(dow) {
  const day = (n) => DAYS[n % 7];
  return `on ${list(
    dow.parts.map(([low, high, step]) => {
      if (low !== null && low === high) return day(low);
      if (low !== null && high !== null && step === 1) return `${day(low)} through ${day(high)}`;
      return stepPhrase([low, high, step], "day", day).replace(
        "every day",
        "every day of the week",
      );
    }),
  )}`;
}

function monthPhrase(month) {
  if (month.star || month.hash) return month.hash ? "in a month picked from the job's name" : null;
  return `in ${list(
    month.parts.map(([low, high, step]) => {
      if (low !== null && low === high) return MONTHS[low];
      if (low !== null && high !== null && step === 1)
        return `${MONTHS[low]} through ${MONTHS[high]}`;
      return stepPhrase([low, high, step], "month", (m) => MONTHS[m]);
    }),
  )}`;
}
