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

// float32 <-> IEEE half bits (node has no Float16Array): float16 models are fed and read as
// float32 files, converted at the edge with round-to-nearest-even.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function toHalfBits(v) {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) { // subnormal half (or zero)
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into the exponent: correct
  return sign | h;
}
function fromHalfBits(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * Math.pow(2, -24);
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * Math.pow(2, exp - 15);
}

// A Tensor of the model input's declared element type from float32 values.
function inputTensor(ort, type, data, dims) {
  if (type === 'float16') return new ort.Tensor('float16', Uint16Array.from(data, toHalfBits), dims);
  if (type !== undefined && type !== 'float32') throw new Error('input type ' + type + ' is not float32/float16');
  return new ort.Tensor('float32', data, dims);
}

// Output values as a Float32Array (float16 outputs converted).
function outputFloats(t) {
  if (t.type === 'float16') return Float32Array.from(t.data, fromHalfBits);
  if (t.type !== 'float32') throw new Error('output is ' + t.type + ', not float32/float16');
  return t.data;
}

// Declared element type of input/output `name` ('float32' when this binding cannot tell).
function declaredType(session, name, output) {
  try {
    const md = output ? session.outputMetadata : session.inputMetadata;
    const m = md && md.find((x) => x.name === name);
    if (m && m.type) return m.type;
  } catch (e) { /* older onnxruntime-node: no metadata */ }
  return 'float32';
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

module.exports = {
  loadOrt, parseShape, numel, readF32, writeF32, sessionOptions, parseArgs, path, inputTensor,
  outputFloats, declaredType, toHalfBits, fromHalfBits,
};
