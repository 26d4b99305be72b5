// Reconnect and retry delays: exponential backoff with full jitter (chatclient/backoff.py).

/**
 * Return a delay (ms) drawn uniformly from [0, min(cap, base * 2 ** attempt)].
 *
 * Full jitter spreads the reconnects of every client that lost the same gateway at the
 * same moment, so they do not all land on the surviving gateway in one burst.
 */
export function fullJitter(attempt, base, cap, random = Math.random) {
  if (attempt < 0) throw new RangeError("attempt must be >= 0");
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return random() * ceiling;
}
