/* N WebSocket clients (npm ws) on one segq-bridge channel, for tests/browser/test_load.py and
 * bench/bridge_load.py. Every client subscribes from offset 0 and checks that it gets offsets
 * 1, 2, 3, ... exactly once, in order. Protocol on stdout, one JSON line each:
 *   {"phase": "subscribed", ms}       every client has its "subscribed" answer (stdin may go on)
 *   {"phase": "done", ...summary}     every client saw the group finish with `jobs` jobs, or the
 *                                     timeout passed
 * Usage: node load_clients.js URL CHANNEL TOKEN CLIENTS JOBS TIMEOUT_MS */
"use strict";
const WebSocket = require("ws");

const [url, channel, token, nClients, nJobs, timeoutMs] = process.argv.slice(2);
const N = parseInt(nClients, 10);
const JOBS = parseInt(nJobs, 10);
const t0 = Date.now();
const clients = [];
let subscribed = 0;
let finished = 0;
let frames = 0;
let reported = false;

function summary(timedOut) {
  const counts = clients.map((c) => c.events);
  const bad = clients.filter((c) => c.problem || !c.finished).slice(0, 5);
  return {
    phase: "done",
    timed_out: timedOut,
    clients: N,
    connected: clients.filter((c) => c.open).length,
    finished,
    frames,
    elapsed_ms: Date.now() - t0,
    events_min: Math.min(...counts),
    events_max: Math.max(...counts),
    last_offsets: [...new Set(clients.map((c) => c.last))],
    problems: bad.map((c) => ({ i: c.i, problem: c.problem || "not finished", last: c.last, events: c.events })),
  };
}

function report(timedOut) {
  if (reported) return;
  reported = true;
  process.stdout.write(JSON.stringify(summary(timedOut)) + "\n");
  for (const c of clients) c.ws.terminate();
  process.exit(0);
}

function open(i) {
  const c = { i, ws: new WebSocket(url), open: false, events: 0, last: 0, problem: null, finished: false };
  clients.push(c);
  c.ws.on("open", () => {
    c.open = true;
    c.ws.send(JSON.stringify({ type: "subscribe", channel, token, offset: 0, epoch: "" }));
  });
  c.ws.on("message", (raw) => {
    frames++;
    const m = JSON.parse(raw);
    if (m.type === "ping") {
      c.ws.send('{"type":"pong"}');
    } else if (m.type === "subscribed") {
      if (++subscribed === N)
        process.stdout.write(JSON.stringify({ phase: "subscribed", ms: Date.now() - t0 }) + "\n");
    } else if (m.type === "event") {
      c.events++;
      if (m.offset !== c.last + 1 && !c.problem)
        c.problem = "offset " + m.offset + " after " + c.last;
      c.last = m.offset;
      const d = m.data || {};
      const done = (d.done || 0) + (d.failed || 0) + (d.canceled || 0);
      if (!c.finished && d.total === JOBS && done >= JOBS) {
        c.finished = true;
        if (++finished === N) report(false);
      }
    } else if (m.type === "resync" || m.type === "error") {
      c.problem = c.problem || m.type + " " + (m.reason || m.code);
    }
  });
  c.ws.on("close", (code, reason) => {
    c.open = false;
    if (!c.finished && !c.problem) c.problem = "closed " + code + " " + reason;
  });
  c.ws.on("error", (e) => {
    if (!c.problem) c.problem = "error " + e.message;
  });
}

/* Open in small waves so the listen backlog is never the limit being measured. */
let next = 0;
(function wave() {
  for (let k = 0; k < 100 && next < N; k++) open(next++);
  if (next < N) setTimeout(wave, 10);
})();
setTimeout(() => report(true), parseInt(timeoutMs, 10));
