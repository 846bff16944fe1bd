#!/usr/bin/env node
// check_agreement: for every NAME.json in a test-data folder (tools/export_test_models.py),
// runs NAME.onnx in ONNX Runtime on NAME.input.bin and compares with NAME.output.bin (PyTorch's
// result). Also usable on any model + expected output pair written the same way.
//
//   node tests/ort/check_agreement.js [DIR=tests/data/onnx] [--tol 1e-4] [--threads N]
// Exit: 0 all within tolerance, 1 a mismatch or error, 77 onnxruntime-node not installed.
'use strict';
const fs = require('fs');
const c = require('./ort_common');

async function main() {
  const { opts, positional } = c.parseArgs(process.argv.slice(2), { tol: 'value', threads: 'value' });
  const dir = positional[0] || c.path.join(__dirname, '..', 'data', 'onnx');
  const ort = c.loadOrt();
  const metas = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  if (!metas.length) throw new Error('no *.json in ' + dir);
  let bad = 0;
  for (const f of metas) {
    const meta = JSON.parse(fs.readFileSync(c.path.join(dir, f), 'utf8'));
    if (!meta.model || !meta.inputs || !meta.outputs) continue;
    const tol = Number(opts.tol || (meta.tolerance && meta.tolerance.max_abs) || 1e-4);
    const session = await ort.InferenceSession.create(c.path.join(dir, meta.model),
      c.sessionOptions(Number(opts.threads || 0)));
    const feeds = {};
    for (const i of meta.inputs) {
      feeds[i.name] = c.inputTensor(ort, c.declaredType(session, i.name, false),
        c.readF32(c.path.join(dir, i.file), c.numel(i.shape)), i.shape);
    }
    const res = await session.run(feeds);
    for (const o of meta.outputs) {
      const want = c.readF32(c.path.join(dir, o.file), c.numel(o.shape));
      const got = res[o.name];
      const gotData = got ? c.outputFloats(got) : null;
      let maxd = 0;
      let shapeOk = got && got.dims.length === o.shape.length && got.dims.every((d, k) => d === o.shape[k]);
      if (shapeOk) {
        for (let k = 0; k < want.length; k++) {
          const d = Math.abs(want[k] - gotData[k]);
          if (!(d <= maxd)) maxd = d; // NaN propagates as a failure
        }
      }
      const ok = shapeOk && maxd <= tol;
      if (!ok) bad++;
      console.log((ok ? 'ok  ' : 'FAIL') + ' ' + meta.model + ' ' + o.name + ' [' + o.shape + '] max_abs_diff ' +
        (shapeOk ? maxd.toExponential(3) : 'shape ' + (got ? got.dims : 'missing')) + ' (tol ' + tol + ')');
    }
  }
  process.exit(bad ? 1 : 0);
}

main().catch((e) => { process.stderr.write('check_agreement: ' + (e && e.message ? e.message : e) + '\n'); process.exit(1); });
