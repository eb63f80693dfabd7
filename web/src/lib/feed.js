// A session's WebSocket feed that survives dropped connections (apps/commerce/feed.py):
// it keeps the position (height, index) of the last event it handled and reconnects
// with ?from=<height>:<index>, so the node replays exactly what came after it.
import { api } from "./api.js";

const WHOLE_BLOCK = Number.MAX_SAFE_INTEGER;
// How far back a node replays by default (feeds.max_replay_blocks); a page away for
// longer (a phone asleep) starts again from a new snapshot.
const MAX_REPLAY_BLOCKS = 1000;
// The longest feed message a page reads, in characters. The node's longest (an event of
// 32 attributes, each a 64-byte key and a 256-byte value, vm/receipts.py) is about 62,000
// even with every byte JSON-escaped as \uXXXX. A browser hands a page each WebSocket
// message whole, however long, and offers no way to cap it; what a page can do is refuse
// to parse a longer one and drop the connection that sent it.
export const MAX_FEED_MESSAGE = 128 * 1024;

// Whether a feed message is one to parse: text (the feeds send JSON text only) within
// MAX_FEED_MESSAGE. The page drops a connection that sends another, with this code.
export const readableMessage = (data) => typeof data === "string" && data.length <= MAX_FEED_MESSAGE;
export const CLOSE_UNREADABLE = 4009;
// A node at its feed cap accepts the socket and closes it with 1013 ("try again later").
const CLOSE_TRY_AGAIN_LATER = 1013;

// How long to wait before the next try after `failures` connections in a row that
// delivered nothing: doubling from half a second to 5 s, to 30 s when the node said it is
// full. A full node is what thousands of viewers of a popular stream meet at once, and a
// retry every half second from each would be a flood of handshakes at the node least able
// to take it. Spread by up to a fifth, so that viewers refused together do not come back
// together.
export function retryDelayMs(failures, code) {
  const cap = code === CLOSE_TRY_AGAIN_LATER ? 30000 : 5000;
  const base = Math.min(cap, 250 * 2 ** Math.min(failures, 7));
  return Math.round(base * (1 + Math.random() / 5));
}

export class SessionFeed {
  // `fromHeight`: the height of the snapshot the page was built from (the feed starts
  // after that whole block). `onEvent(msg)` gets each event once, in order.
  // `onStale()`: the last position is beyond what the node replays (read a new snapshot).
  constructor(sessionId, fromHeight, { onEvent, onState = () => {}, onStale = () => {} }) {
    this.sessionId = sessionId;
    this.last = [fromHeight, WHOLE_BLOCK];
    this.onEvent = onEvent;
    this.onState = onState;
    this.onStale = onStale;
    this.ws = null;
    this.stopped = false;
    this.failures = 0;
    this.connections = 0;
    // The wait before the next try, once one is scheduled (ms).
    this.retryMs = 0;
    this.connect();
  }

  fromParam() {
    const [height, index] = this.last;
    return index === WHOLE_BLOCK ? `${height}` : `${height}:${index}`;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/sessions/${this.sessionId}/events?from=${this.fromParam()}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = () => {
      this.connections += 1;
      this.onState("live");
    };
    // Whether this page dropped the connection for a message it would not read (the
    // node answers that close with 1000, which is no end of the session then).
    let refused = false;
    ws.onmessage = (msg) => {
      if (readableMessage(msg.data)) {
        // A connection is good once it delivered something, not once it opened: a node
        // at its cap opens the socket only to close it.
        this.failures = 0;
        return this.handle(msg.data);
      }
      refused = true;
      ws.close(CLOSE_UNREADABLE, "message too large");
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // 1000: the session closed; the feed has nothing more to say.
      if (this.stopped || (e.code === 1000 && !refused)) {
        this.onState(e.code === 1000 ? "ended" : "stopped");
        return;
      }
      this.failures += 1;
      this.retryMs = retryDelayMs(this.failures, e.code);
      this.onState("reconnecting");
      setTimeout(() => this.retry(), this.retryMs);
    };
  }

  // Reconnect; after a few failed tries, first make sure the node can still replay from
  // the last position (it refuses a resume from too far back).
  async retry() {
    if (this.stopped) return;
    if (this.failures >= 3) {
      try {
        // Through api(): its answer read up to a bound, as every other answer is.
        const status = await api("/v1/status");
        if (status.height - this.last[0] > MAX_REPLAY_BLOCKS) {
          this.stopped = true;
          this.onStale();
          return;
        }
      } catch {
        // The node is unreachable: keep trying.
      }
    }
    this.connect();
  }

  handle(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type !== "event") return;
    const [h, i] = this.last;
    // Positions only grow along a feed; anything at or before the last one was handled.
    if (msg.height < h || (msg.height === h && msg.index <= i)) return;
    this.last = [msg.height, msg.index];
    this.onEvent(msg);
  }

  // Drop the connection as a network would (the feed reconnects by itself).
  drop() {
    this.ws?.close(4000, "dropped");
  }

  stop() {
    this.stopped = true;
    this.ws?.close(1000);
  }
}
