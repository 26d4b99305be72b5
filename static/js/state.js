// The per-conversation cursor rules of PROTOCOL.md section 1, with no I/O
// (a port of chatclient/state.py, plus the loaded window a browser keeps).
//
// `cursor` is the highest log number applied with nothing missing below it. A browser
// does not hold a conversation's whole history: it loads the newest page and scrolls
// back with `before`. `oldestSeq` is the first seq of the loaded window; changes to
// messages above it are applied through the cursor rules, changes to older messages
// move the cursor but are not stored (they are fetched in their current version when
// the user scrolls back).

export const APPLIED = "applied"; // version == cursor + 1: stored, cursor advanced
export const GAP = "gap"; // version > cursor + 1: something was missed, fetch after=cursor
export const DUPLICATE = "duplicate"; // version <= cursor: already covered, dropped

export class ConversationState {
  constructor(id) {
    this.id = id;
    this.cursor = 0;
    // The highest log number known to exist (snapshot `last_seq` or a live event ahead).
    this.knownSeq = 0;
    this.messages = new Map(); // id -> message
    this.loaded = false; // the newest page was fetched; cursor rules apply
    this.oldestSeq = null; // the lowest seq in the window (null: nothing loaded)
    this.hasOlder = false; // older messages exist before the window
    this.hidden = new Set(); // ids deleted for me: never stored again
  }

  get behind() {
    return this.knownSeq > this.cursor;
  }

  noteLastSeq(lastSeq) {
    this.knownSeq = Math.max(this.knownSeq, Number(lastSeq) || 0);
  }

  /** Apply a live message (or a `message.sent` reply) if it is the next log number. */
  offer(message) {
    const version = Number(message.version);
    if (!this.loaded) {
      this.noteLastSeq(version);
      return GAP;
    }
    if (version <= this.cursor) return DUPLICATE;
    if (version > this.cursor + 1) {
      // Never apply out of order: the fetch after=cursor brings this one too.
      this.noteLastSeq(version);
      return GAP;
    }
    this.cursor = version;
    this.noteLastSeq(version);
    this.upsert(message);
    return APPLIED;
  }

  /** Apply a batch fetched with `after`; return the messages stored or replaced. */
  applyBatch(messages, upto, after) {
    if (!this.loaded || after > this.cursor) return []; // it would leave a hole below
    const changed = messages.filter((m) => this.upsert(m));
    if (upto !== null && upto !== undefined) {
      this.cursor = Math.max(this.cursor, Number(upto));
      this.noteLastSeq(this.cursor);
    }
    return changed;
  }

  /**
   * Take in the newest page (first load): every change up to `completeUpto` (the
   * last_seq known when the fetch was sent) is reflected in it, so that is the cursor.
   */
  applyNewest(messages, hasMore, completeUpto) {
    this.loaded = true;
    this.hasOlder = Boolean(hasMore);
    this.oldestSeq = messages.length ? Number(messages[0].seq) : null;
    if (this.oldestSeq === null && !this.hasOlder) this.oldestSeq = 1;
    const changed = messages.filter((m) => this.upsert(m));
    this.cursor = Math.max(this.cursor, Number(completeUpto) || 0);
    this.noteLastSeq(this.cursor);
    return changed;
  }

  /** Take in an older page (scrollback with `before`); return the messages stored. */
  applyOlder(messages, hasMore) {
    if (messages.length) {
      const first = Number(messages[0].seq);
      this.oldestSeq = this.oldestSeq === null ? first : Math.min(this.oldestSeq, first);
    }
    this.hasOlder = Boolean(hasMore);
    if (!this.hasOlder) this.oldestSeq = 1;
    return messages.filter((m) => this.upsert(m));
  }

  /** Forget everything (a gap too large to fetch message by message). */
  reset() {
    this.messages.clear();
    this.loaded = false;
    this.oldestSeq = null;
    this.hasOlder = false;
  }

  get(id) {
    return this.messages.get(id) || null;
  }

  /** Return the stored messages in seq (display) order. */
  view() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Store `message` by id unless a copy with the same or a newer version is stored. */
  upsert(message) {
    if (this.hidden.has(message.id)) return false; // deleted for me
    if (this.oldestSeq !== null && this.hasOlder && Number(message.seq) < this.oldestSeq) {
      return false; // outside the window: scrollback fetches its current version
    }
    const current = this.messages.get(message.id);
    if (current && Number(current.version) >= Number(message.version)) return false;
    this.messages.set(message.id, { ...message });
    if (message.system?.event === "retention") this.cut(message);
    return true;
  }

  /** Drop a message deleted for me and keep it out (`message.hidden`); return whether it was stored. */
  hide(id) {
    this.hidden.add(id);
    return this.messages.delete(id);
  }

  /** Drop what a retention notice says the server removed (all up to `through_seq`). */
  cut(notice) {
    const through = Number(notice.system.through_seq) || 0;
    for (const [id, m] of this.messages) {
      if (id !== notice.id && Number(m.seq) <= through) this.messages.delete(id);
    }
  }
}
