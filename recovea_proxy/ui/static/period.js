// The chosen period as the API takes it: [from, to) in UTC, aligned to the rollup's
// hours, with the bucket the spend chart groups by.

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const SPANS = { "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY };

function nextHour(now) {
  return new Date(Math.floor(now / HOUR) * HOUR + HOUR);
}

/** `choice` is 24h, 7d, 30d or custom (then `fromLocal`, `toLocal` from the inputs). */
export function period(choice, fromLocal, toLocal, now = Date.now()) {
  let from;
  let to;
  if (choice in SPANS) {
    to = nextHour(now);
    from = new Date(to.getTime() - SPANS[choice]);
  } else {
    from = new Date(fromLocal);
    to = new Date(toLocal);
    if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
      throw new Error("Give both ends of the custom period.");
    }
    if (from >= to) throw new Error("The custom period must start before it ends.");
  }
  const bucket = to - from <= 3 * DAY ? "hour" : "day";
  return { from: from.toISOString(), to: to.toISOString(), bucket };
}

/** The UTC days the reconciliation covers for a period: [from's day, to's day + 1). */
export function days(range) {
  const to = new Date(range.to);
  const after = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() + 1));
  return { from: range.from.slice(0, 10), to: after.toISOString().slice(0, 10) };
}
