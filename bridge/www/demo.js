/* segq demo page: converts the chosen images to JPEG, uploads them to POST /demo/upload (one
 * group), follows the group channel through SegqBridge, shows a bar per image and for the group,
 * and draws each result's polygons over its image (GET /v1/result/<id> with the job's token).
 * The upload and its position (offset, epoch) live in sessionStorage, so a reload resumes where
 * the page was and every event is still seen exactly once (window.segqDemo.state.seen). */
(function () {
  "use strict";
  var KEY = "segq-demo";
  var CARD_W = 256;
  var UPLOAD_MAX_SIDE = 2048;
  var OVERLAY_FILL = "rgba(255, 0, 255, 0.5)";
  var OVERLAY_LINE = "rgb(255, 0, 255)";

  var state = load();
  var bridge = null;
  var sub = null;
  var cards = {};
  var demo = (window.segqDemo = { state: state, drawn: {}, duplicates: 0, reloads: 0 });

  function $(id) {
    return document.getElementById(id);
  }

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY)) || null;
    } catch (e) {
      return null;
    }
  }

  function save() {
    if (!state) return;
    try {
      sessionStorage.setItem(KEY, JSON.stringify(state));
    } catch (e) {
      message("cannot keep the upload across reloads: " + e);
    }
  }

  function message(text) {
    $("message").textContent = text || "";
  }

  /* ---- images ---- */

  function loadImage(file) {
    return new Promise(function (resolve, reject) {
      var r = new FileReader();
      r.onload = function () {
        var img = new Image();
        img.onload = function () {
          resolve(img);
        };
        img.onerror = function () {
          reject(new Error(file.name + " is not an image the browser can read"));
        };
        img.src = r.result;
      };
      r.onerror = function () {
        reject(r.error);
      };
      r.readAsDataURL(file);
    });
  }

  /* JPEG to upload (the worker reads JPEG) and a card-sized copy to show. */
  function prepare(file) {
    return loadImage(file).then(function (img) {
      var scale = Math.min(1, UPLOAD_MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
      var w = Math.max(1, Math.round(img.naturalWidth * scale));
      var h = Math.max(1, Math.round(img.naturalHeight * scale));
      var c = document.createElement("canvas");
      c.width = w;
      c.height = h;
      c.getContext("2d").drawImage(img, 0, 0, w, h);
      var t = document.createElement("canvas");
      t.width = CARD_W;
      t.height = Math.max(1, Math.round((CARD_W * h) / w));
      t.getContext("2d").drawImage(img, 0, 0, t.width, t.height);
      return new Promise(function (resolve) {
        c.toBlob(
          function (blob) {
            resolve({ name: file.name, blob: blob, w: w, h: h, thumb: t.toDataURL("image/jpeg", 0.9) });
          },
          "image/jpeg",
          0.92
        );
      });
    });
  }

  /* ---- cards ---- */

  function pctOf(js) {
    if (!js) return 0;
    switch (js.state) {
      case "done":
      case "failed":
      case "canceled":
        return 100;
      case "started":
      case "running":
        if (js.steps_total) return Math.round(30 + (65 * js.steps_done) / js.steps_total);
        return 30;
      default:
        return 5; /* queued, requeued, retrying */
    }
  }

  function renderCard(job) {
    var card = document.createElement("div");
    card.className = "card";
    card.dataset.jobId = job.id;
    var canvas = document.createElement("canvas");
    canvas.width = CARD_W;
    canvas.height = Math.max(1, Math.round((CARD_W * job.h) / job.w));
    var name = document.createElement("div");
    name.className = "name";
    name.textContent = job.name;
    var bar = document.createElement("div");
    bar.className = "bar";
    var fill = document.createElement("div");
    fill.className = "fill";
    bar.appendChild(fill);
    var st = document.createElement("div");
    st.className = "state";
    card.appendChild(canvas);
    card.appendChild(name);
    card.appendChild(bar);
    card.appendChild(st);
    $("cards").appendChild(card);
    var entry = { card: card, canvas: canvas, fill: fill, state: st, img: null, polygons: null };
    cards[job.id] = entry;
    var img = new Image();
    img.onload = function () {
      entry.img = img;
      paint(job.id);
    };
    img.src = job.thumb;
    updateCard(job.id);
  }

  function updateCard(id) {
    var e = cards[id];
    var js = state.jobs_state[id] || { state: "queued" };
    var pct = pctOf(js);
    e.fill.style.width = pct + "%";
    e.fill.dataset.pct = String(pct);
    e.fill.className = "fill" + (js.state === "done" ? " done" : js.state === "failed" || js.state === "canceled" ? " failed" : "");
    e.card.dataset.state = js.state;
    e.state.textContent = js.state + (js.error ? " (" + js.error + ")" : "") +
      (e.polygons ? " - " + e.polygons.length + " objects" : "");
  }

  function paint(id) {
    var e = cards[id];
    var job = jobById(id);
    if (!e || !e.img || !job) return;
    var ctx = e.canvas.getContext("2d");
    ctx.drawImage(e.img, 0, 0, e.canvas.width, e.canvas.height);
    if (!e.polygons) return;
    var s = e.canvas.width / job.w; /* polygons are in the uploaded image's pixels */
    ctx.fillStyle = OVERLAY_FILL;
    ctx.strokeStyle = OVERLAY_LINE;
    ctx.lineWidth = 1.5;
    e.polygons.forEach(function (p) {
      var pts = p.points;
      if (!pts || pts.length < 6) return;
      ctx.beginPath();
      ctx.moveTo(pts[0] * s, pts[1] * s);
      for (var i = 2; i < pts.length; i += 2) ctx.lineTo(pts[i] * s, pts[i + 1] * s);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    });
    e.canvas.dataset.drawn = String(e.polygons.length);
    demo.drawn[id] = e.polygons.length;
    updateCard(id);
  }

  function jobById(id) {
    for (var i = 0; state && i < state.jobs.length; i++) if (state.jobs[i].id === id) return state.jobs[i];
    return null;
  }

  function fetchResult(id, tries) {
    var job = jobById(id);
    if (!job || (cards[id] && cards[id].polygons)) return;
    fetch("/v1/result/" + encodeURIComponent(id) + "?token=" + encodeURIComponent(job.token))
      .then(function (r) {
        if (r.status === 404 && tries < 20) {
          setTimeout(function () {
            fetchResult(id, tries + 1);
          }, 250);
          return null;
        }
        return r.json();
      })
      .then(function (res) {
        if (!res) return;
        if (res.error && res.error.code) {
          message("result of " + job.name + ": " + res.error.code);
          return;
        }
        cards[id].polygons = res.polygons || [];
        paint(id);
      })
      .catch(function (e) {
        setTimeout(function () {
          fetchResult(id, tries + 1);
        }, 500);
      });
  }

  /* ---- events ---- */

  function applyJob(j) {
    if (!j || !j.id || !cards[j.id]) return;
    var prev = state.jobs_state[j.id] || {};
    var s = j.state === "started" ? "running" : j.state || j.type;
    state.jobs_state[j.id] = {
      state: s,
      error: j.error || null,
      steps_done: j.steps_done != null ? j.steps_done : prev.steps_done,
      steps_total: j.steps_total != null ? j.steps_total : prev.steps_total,
    };
    updateCard(j.id);
    if (s === "done") fetchResult(j.id, 0);
  }

  function applyCounters(c) {
    if (!c) return;
    var total = c.total || state.jobs.length;
    var finished = (c.done || 0) + (c.failed || 0) + (c.canceled || 0);
    state.counters = { total: total, done: c.done || 0, failed: c.failed || 0, canceled: c.canceled || 0 };
    renderGroup();
    return finished;
  }

  function renderGroup() {
    var c = state.counters || { total: state.jobs.length, done: 0, failed: 0, canceled: 0 };
    var finished = c.done + c.failed + c.canceled;
    var pct = c.total ? Math.round((100 * finished) / c.total) : 0;
    $("group").hidden = false;
    $("group-name").textContent = "group " + state.group + " (" + state.model + ")";
    $("group-count").textContent = finished + " / " + c.total + (c.failed ? " (" + c.failed + " failed)" : "");
    $("group-fill").style.width = pct + "%";
    $("group-fill").dataset.pct = String(pct);
    $("group-fill").className = "fill" + (pct === 100 ? " done" : "");
    $("stats").textContent = "events " + state.seen.length + ", offset " + state.offset +
      ", resyncs " + state.resyncs + ", duplicates " + demo.duplicates + ", reloads " + state.reloads;
  }

  function onEvent(data, msg) {
    if (state.seen.indexOf(msg.offset) >= 0) demo.duplicates++;
    else state.seen.push(msg.offset);
    state.offset = msg.offset;
    state.epoch = msg.epoch;
    if (Array.isArray(data.jobs)) data.jobs.forEach(applyJob);
    else applyJob(data);
    applyCounters(data);
    save();
  }

  function fromSnapshot(msg) {
    state.offset = msg.offset;
    state.epoch = msg.epoch;
    var st = msg.snapshot && msg.snapshot.state;
    if (st) applyCounters(st);
    save();
    renderGroup();
  }

  function follow() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    bridge = new SegqBridge.Bridge(proto + "//" + location.host + "/ws", {
      onState: function (s, d) {
        var el = $("conn");
        el.className = "conn" + (s === "open" ? " open" : "");
        el.textContent = s === "open" ? "live" : s === "closed" && d && d.retryInMs != null
          ? "reconnecting in " + d.retryInMs + " ms" : s;
        demo.connection = s;
      },
    });
    var opts = {
      token: state.token,
      onSubscribed: function (msg) {
        demo.subscribed = (demo.subscribed || 0) + 1;
        fromSnapshot(msg);
      },
      onEvent: onEvent,
      onResync: function (msg) {
        /* History no longer covers us: take the group's state from the snapshot. */
        state.resyncs++;
        fromSnapshot(msg);
      },
      onError: function (err) {
        message("subscription refused: " + err.code + " - " + err.message);
      },
    };
    opts.offset = state.offset;
    opts.epoch = state.epoch;
    sub = bridge.subscribe(state.channel, opts);
    demo.sub = sub;
  }

  /* ---- upload ---- */

  function upload(files) {
    message("");
    Promise.all(Array.prototype.map.call(files, prepare))
      .then(function (imgs) {
        var form = new FormData();
        imgs.forEach(function (im) {
          form.append("image", im.blob, im.name.replace(/\.[^.]*$/, "") + ".jpg");
        });
        return fetch("/demo/upload", { method: "POST", body: form }).then(function (r) {
          return r.json().then(function (body) {
            if (!r.ok) throw new Error((body.error && body.error.message) || "upload failed: " + r.status);
            return { imgs: imgs, res: body };
          });
        });
      })
      .then(function (x) {
        var res = x.res;
        state = demo.state = {
          group: res.group,
          channel: res.channel,
          token: res.token,
          model: res.model,
          jobs: res.jobs.map(function (j, i) {
            return { id: j.id, name: x.imgs[i].name, token: j.token, w: x.imgs[i].w, h: x.imgs[i].h, thumb: x.imgs[i].thumb };
          }),
          jobs_state: {},
          offset: 0, /* a new group: replay its whole history from the start */
          epoch: "",
          seen: [],
          resyncs: 0,
          reloads: 0,
          counters: null,
        };
        save();
        start();
      })
      .catch(function (e) {
        message(String(e.message || e));
      });
  }

  function start() {
    $("cards").textContent = "";
    cards = {};
    state.jobs.forEach(renderCard);
    renderGroup();
    follow();
    state.jobs.forEach(function (j) {
      var js = state.jobs_state[j.id];
      if (js && js.state === "done") fetchResult(j.id, 0);
    });
  }

  $("files").addEventListener("change", function (ev) {
    if (ev.target.files && ev.target.files.length) {
      if (bridge) bridge.close();
      bridge = null;
      upload(ev.target.files);
    }
  });
  $("reset").addEventListener("click", function () {
    if (bridge) bridge.close();
    bridge = null;
    sessionStorage.removeItem(KEY);
    state = demo.state = null;
    $("cards").textContent = "";
    $("group").hidden = true;
  });

  if (state) {
    state.reloads = (state.reloads || 0) + 1;
    save();
    start();
  }
})();
