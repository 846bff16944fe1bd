/* segq.js: the browser client of segq-bridge (docs/bridge.md). Plain JavaScript, no build step:
 * load it with <script src="/js/segq.js"></script> (the bridge serves it) and use the global
 * SegqBridge, or require() it from Node with a WebSocket implementation.
 *
 *   const bridge = new SegqBridge.Bridge("ws://localhost:8700/ws");
 *   const sub = bridge.subscribe("group:upload-42", {
 *     token,                          // signed by your backend (segq.tokens.mint)
 *     offset: 0,                      // optional: resume after this offset ...
 *     epoch: "",                      // ... of this epoch (both from an earlier sub.position())
 *     onSubscribed(msg) {},           // msg.snapshot.state, msg.recovered
 *     onEvent(data, msg) {},          // every event exactly once, in offset order
 *     onResync(msg) {},               // history no longer covers us: reset from msg.snapshot
 *     onError(err) {},                // {code, message}: the subscription was refused
 *   });
 *
 * The connection reconnects by itself with exponential backoff and jitter and resubscribes every
 * channel from its last (offset, epoch), so events missed while away are replayed exactly once
 * (or a resync is reported). The server pings every ~25 s; a connection silent for
 * `silenceTimeoutMs` is treated as dead and replaced. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.SegqBridge = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  /* Close codes after which reconnecting cannot help (docs/bridge.md "Close codes"). */
  var PERMANENT_CLOSE = { 4003: "origin_refused", 4004: "not_found" };

  function Subscription(bridge, channel, opts) {
    this.bridge = bridge;
    this.channel = channel;
    this.opts = opts;
    this.token = opts.token || null;
    this.offset = typeof opts.offset === "number" ? opts.offset : null;
    this.epoch = typeof opts.epoch === "string" ? opts.epoch : "";
    this.active = true;
    this.subscribed = false;
  }

  /* The position to resume from later: {offset, epoch}, or null before the first answer. */
  Subscription.prototype.position = function () {
    return this.offset === null ? null : { offset: this.offset, epoch: this.epoch };
  };

  Subscription.prototype.unsubscribe = function () {
    if (!this.active) return;
    this.active = false;
    delete this.bridge.subs[this.channel];
    this.bridge._send({ type: "unsubscribe", channel: this.channel });
  };

  Subscription.prototype._call = function (name, a, b) {
    var f = this.opts[name];
    if (typeof f === "function") {
      try {
        f.call(this, a, b);
      } catch (e) {
        if (typeof console !== "undefined") console.error("segq: " + name + " handler failed", e);
      }
    }
  };

  function Bridge(url, options) {
    options = options || {};
    this.url = url;
    this.minDelayMs = options.minDelayMs || 250;
    this.maxDelayMs = options.maxDelayMs || 10000;
    this.silenceTimeoutMs = options.silenceTimeoutMs || 60000;
    this.WebSocketImpl = options.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
    this.onState = options.onState || null; /* ("connecting"|"open"|"closed", detail) */
    this.subs = {};
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
    this.silence = null;
    this.reconnects = 0;
    this.replays = 0; /* events dropped as already seen: 0 while the bridge keeps its promise */
    this._connect();
  }

  Bridge.prototype._state = function (state, detail) {
    if (this.onState) {
      try {
        this.onState(state, detail);
      } catch (e) {
        /* the page's problem, not ours */
      }
    }
  };

  Bridge.prototype._connect = function () {
    var self = this;
    if (this.closed) return;
    this._state("connecting", { attempt: this.attempt });
    var ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (e) {
      this._scheduleReconnect({ code: 0, reason: String(e) });
      return;
    }
    this.ws = ws;
    ws.onopen = function () {
      if (self.ws !== ws) return;
      self._state("open", { reconnects: self.reconnects });
      self._touch();
      for (var ch in self.subs) self._subscribe(self.subs[ch]);
    };
    ws.onmessage = function (ev) {
      if (self.ws !== ws) return;
      self._touch();
      self.attempt = 0; /* the server is talking to us: the next loss starts the backoff over */
      var msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      self._dispatch(msg);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self.ws = null;
      clearTimeout(self.silence);
      for (var ch in self.subs) self.subs[ch].subscribed = false;
      var permanent = PERMANENT_CLOSE[ev.code];
      if (permanent) {
        self._state("closed", { code: ev.code, reason: ev.reason, permanent: true });
        for (var c in self.subs)
          self.subs[c]._call("onError", { code: permanent, message: ev.reason || permanent });
        return;
      }
      self._scheduleReconnect({ code: ev.code, reason: ev.reason });
    };
    ws.onerror = function () {
      /* onclose follows and decides */
    };
  };

  Bridge.prototype._touch = function () {
    var self = this;
    clearTimeout(this.silence);
    this.silence = setTimeout(function () {
      /* No ping for too long: the connection is dead even if the socket does not say so. */
      if (self.ws) self.ws.close(4000, "silent");
    }, this.silenceTimeoutMs);
  };

  Bridge.prototype._scheduleReconnect = function (detail) {
    var self = this;
    if (this.closed) return;
    var base = Math.min(this.maxDelayMs, this.minDelayMs * Math.pow(2, this.attempt));
    var delay = Math.round(base / 2 + Math.random() * (base / 2)); /* jitter: spread a herd */
    this.attempt++;
    detail.retryInMs = delay;
    this._state("closed", detail);
    this.timer = setTimeout(function () {
      self.reconnects++;
      self._connect();
    }, delay);
  };

  Bridge.prototype._send = function (msg) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  };

  Bridge.prototype._subscribe = function (sub) {
    var self = this;
    function go(token) {
      if (!sub.active) return;
      sub.token = token;
      var msg = { type: "subscribe", channel: sub.channel, token: token };
      if (sub.offset !== null) {
        msg.offset = sub.offset;
        msg.epoch = sub.epoch;
      }
      self._send(msg);
    }
    if (typeof sub.opts.getToken === "function" && !sub.token) {
      Promise.resolve(sub.opts.getToken(sub.channel)).then(go, function (e) {
        sub._call("onError", { code: "token_missing", message: String(e) });
      });
    } else {
      go(sub.token);
    }
  };

  Bridge.prototype._dispatch = function (msg) {
    if (msg.type === "ping") {
      this._send({ type: "pong" });
      return;
    }
    var sub = msg.channel ? this.subs[msg.channel] : null;
    if (!sub) return;
    if (msg.type === "subscribed") {
      sub.subscribed = true;
      sub.epoch = msg.epoch;
      sub.offset = msg.offset;
      sub._call("onSubscribed", msg);
    } else if (msg.type === "event") {
      /* The bridge sends each event once; this guards the position against a replay anyway. */
      if (msg.epoch === sub.epoch && sub.offset !== null && msg.offset <= sub.offset) {
        this.replays++;
        return;
      }
      sub.epoch = msg.epoch;
      sub.offset = msg.offset;
      sub._call("onEvent", msg.data, msg);
    } else if (msg.type === "resync") {
      sub.subscribed = true;
      sub.epoch = msg.epoch;
      sub.offset = msg.offset;
      sub._call("onResync", msg);
    } else if (msg.type === "error") {
      if (msg.code === "token_expired" && typeof sub.opts.getToken === "function") {
        sub.token = null; /* ask the backend for a fresh one */
        this._subscribe(sub);
        return;
      }
      sub.active = false;
      delete this.subs[sub.channel];
      sub._call("onError", { code: msg.code, message: msg.message });
    }
  };

  /* Follows channel ("job:<id>" or "group:<group>"); see the header for the options. */
  Bridge.prototype.subscribe = function (channel, opts) {
    if (this.subs[channel]) throw new Error("segq: already subscribed to " + channel);
    var sub = new Subscription(this, channel, opts || {});
    this.subs[channel] = sub;
    if (this.ws && this.ws.readyState === 1) this._subscribe(sub);
    return sub;
  };

  /* Closes the connection for good. */
  Bridge.prototype.close = function () {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.silence);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
  };

  return { Bridge: Bridge, version: "1" };
});
