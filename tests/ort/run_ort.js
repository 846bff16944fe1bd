#!/usr/bin/env node
// run_ort: runs an ONNX model with ONNX Runtime (CPU) on one raw float32 input and writes the
// first (or --output NAME) output as raw little-endian float32 -- the reference the segq C
// engine is compared against. A float16 model input/output is converted at the edge.
//
//   node tests/ort/run_ort.js MODEL.onnx INPUT.bin SHAPE OUTPUT.bin [--threads N]
//        [--input NAME] [--output NAME]
//   SHAPE: 1,1,64,64 or 1x1x64x64 (NCHW). Prints one JSON line: output name, shape, ms.
// Exit: 0 ok, 1 error, 77 onnxruntime-node not installed.
'use strict';
const c = require('./ort_common');

async function main() {
  const { opts, positional } = c.parseArgs(process.argv.slice(2),
    { threads: 'value', input: 'value', output: 'value' });
  if (positional.length !== 4) {
    process.stderr.write('usage: run_ort.js MODEL.onnx INPUT.bin SHAPE OUTPUT.bin ' +
      '[--threads N] [--input NAME] [--output NAME]\n');
    process.exit(1);
  }
  const [model, inFile, shapeText, outFile] = positional;
  const ort = c.loadOrt();
  const dims = c.parseShape(shapeText);
  const data = c.readF32(inFile, c.numel(dims));
  const session = await ort.InferenceSession.create(model, c.sessionOptions(Number(opts.threads || 0)));
  const inName = opts.input || session.inputNames[0];
  const outName = opts.output || session.outputNames[0];
  if (!session.outputNames.includes(outName)) throw new Error('model has no output ' + outName);
  const t0 = process.hrtime.bigint();
  const feed = c.inputTensor(ort, c.declaredType(session, inName, false), data, dims);
  const res = await session.run({ [inName]: feed }, [outName]);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = res[outName];
  c.writeF32(outFile, c.outputFloats(out));
  console.log(JSON.stringify({ model, input: inName, output: outName, shape: out.dims, ms: +ms.toFixed(3) }));
}

main().catch((e) => { process.stderr.write('run_ort: ' + (e && e.message ? e.message : e) + '\n'); process.exit(1); });
