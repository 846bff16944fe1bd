// ort_common: shared helpers of the ONNX Runtime harness scripts (loading onnxruntime-node
// with a clear message when `npm install` has not been run, raw float32 file I/O, shapes).
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    process.stderr.write(
      'onnxruntime-node is not installed: run `npm ci --ignore-scripts` (or `npm install ' +
      '--ignore-scripts`) in ' + __dirname + '\n(' + e.message + ')\n');
    process.exit(77); // "skipped" for ctest-style callers
  }
}

// "1,3,64,64", "1x3x64x64" or "[1,3,64,64]" -> [1,3,64,64]
function parseShape(text) {
  const dims = String(text).replace(/[\[\]\s]/g, '').split(/[x,]/).filter((s) => s.length)
    .map((s) => Number(s));
  if (!dims.length || dims.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new Error('bad shape "' + text + '" (want e.g. 1,1,64,64)');
  }
  return dims;
}

const numel = (dims) => dims.reduce((a, b) => a * b, 1);

// Raw little-endian float32 file -> Float32Array (copied, so alignment never matters).
function readF32(file, expectCount) {
  const buf = fs.readFileSync(file);
  if (buf.length % 4) throw new Error(file + ': size ' + buf.length + ' is not a multiple of 4');
  const n = buf.length / 4;
  if (expectCount !== undefined && n !== expectCount) {
    throw new Error(file + ': ' + n + ' floats, shape needs ' + expectCount);
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

function writeF32(file, data) {
  const buf = Buffer.alloc(data.length * 4);
  for (let i = 0; i < data.length; i++) buf.writeFloatLE(data[i], i * 4);
  fs.writeFileSync(file, buf);
}

function sessionOptions(threads) {
  const o = { graphOptimizationLevel: 'all', executionProviders: ['cpu'] };
  if (threads > 0) {
    o.intraOpNumThreads = threads;
    o.interOpNumThreads = 1;
  }
  return o;
}

// --name value / --flag parsing; returns { opts, positional }
function parseArgs(argv, flags) {
  const opts = {};
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const k = a.slice(2);
      if (!(k in flags)) throw new Error('unknown option ' + a);
      if (flags[k] === 'bool') opts[k] = true;
      else {
        if (i + 1 >= argv.length) throw new Error(a + ' needs a value');
        opts[k] = argv[++i];
      }
    } else positional.push(a);
  }
  return { opts, positional };
}

module.exports = { loadOrt, parseShape, numel, readF32, writeF32, sessionOptions, parseArgs, path };
