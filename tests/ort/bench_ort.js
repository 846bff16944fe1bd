#!/usr/bin/env node
// bench_ort: images/s of a model in ONNX Runtime (CPU) at a given batch size and thread count,
// the baseline for the segq engine's benchmark. Random input (fixed seed), warm-up runs first.
//
//   node tests/ort/bench_ort.js MODEL.onnx [--batch 8] [--threads 1] [--size 256x256]
//        [--channels C] [--iters 20] [--warmup 3] [--seconds S]
//   --size/--channels default to the model's declared input dims (dynamic dims: 256 / 1).
//   --seconds: run until this much time has passed instead of a fixed --iters.
// Prints a human line and one JSON line (images_per_s, ms per batch: mean/p50/p90/min).
'use strict';
const c = require('./ort_common');

function lcg(seed) { let s = seed >>> 0; return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296); }

async function main() {
  const { opts, positional } = c.parseArgs(process.argv.slice(2), {
    batch: 'value', threads: 'value', size: 'value', channels: 'value', iters: 'value',
    warmup: 'value', seconds: 'value' });
  if (positional.length !== 1) {
    process.stderr.write('usage: bench_ort.js MODEL.onnx [--batch B] [--threads T] [--size HxW] ' +
      '[--channels C] [--iters N] [--warmup N] [--seconds S]\n');
    process.exit(1);
  }
  const model = positional[0];
  const ort = c.loadOrt();
  const batch = Number(opts.batch || 8);
  const threads = Number(opts.threads || 1);
  const session = await ort.InferenceSession.create(model, c.sessionOptions(threads));
  const inName = session.inputNames[0];
  // declared input dims, if this onnxruntime-node exposes them (inputMetadata, ORT >= 1.21)
  let declared = null;
  try {
    const md = session.inputMetadata && session.inputMetadata[0];
    if (md && md.shape) declared = md.shape;
  } catch (e) { declared = null; }
  const pick = (k, dflt) => (declared && typeof declared[k] === 'number' && declared[k] > 0 ? declared[k] : dflt);
  let h = pick(2, 256); let w = pick(3, 256);
  if (opts.size) [h, w] = c.parseShape(opts.size);
  const ch = Number(opts.channels || pick(1, 1));
  const dims = [batch, ch, h, w];
  const data = new Float32Array(c.numel(dims));
  const rnd = lcg(12345);
  for (let i = 0; i < data.length; i++) data[i] = rnd() * 2 - 1;
  const feeds = { [inName]: new ort.Tensor('float32', data, dims) };
  const warm = Number(opts.warmup || 3);
  for (let i = 0; i < warm; i++) await session.run(feeds);
  const iters = Number(opts.iters || 20);
  const seconds = opts.seconds ? Number(opts.seconds) : 0;
  const times = [];
  const start = process.hrtime.bigint();
  for (;;) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e6);
    const total = Number(t1 - start) / 1e9;
    if (seconds ? total >= seconds : times.length >= iters) break;
  }
  const sorted = [...times].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const r = {
    model, runtime: 'onnxruntime-node ' + ort.env.versions.node, batch, threads, input: dims,
    iters: times.length, ms_mean: +mean.toFixed(3), ms_p50: +q(0.5).toFixed(3),
    ms_p90: +q(0.9).toFixed(3), ms_min: +sorted[0].toFixed(3),
    images_per_s: +(batch * 1000 / mean).toFixed(2),
  };
  console.log(`${model}: batch ${batch} threads ${threads} input ${dims.join('x')}: ` +
    `${r.images_per_s} images/s (${r.ms_mean} ms/batch mean, p50 ${r.ms_p50}, p90 ${r.ms_p90})`);
  console.log(JSON.stringify(r));
}

main().catch((e) => { process.stderr.write('bench_ort: ' + (e && e.message ? e.message : e) + '\n'); process.exit(1); });
