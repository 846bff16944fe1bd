// BullMQ peer of bench/segq_bench.c for segq's queue-path benchmark (driven by bench/run.py):
// the same workload of no-op jobs through the same redis-server. Modes:
//   tput   --n N --concurrency C --bytes B : addBulk N jobs, then start a Worker with a no-op
//          processor and time until its N-th `completed` event (job moved to completed in Redis)
//   worker --concurrency C                 : a long-running no-op Worker (for `lat`), prints "ready"
//   lat    --n N --rate R --bytes B        : enqueue at a fixed rate (open loop), time each job
//          from its scheduled enqueue time to its `completed` event seen through QueueEvents
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');

function args() {
  const a = { host: '127.0.0.1', port: 6379, queue: 'bench', n: 20000, concurrency: 1,
              bytes: 300, rate: 1000, timeout: 120 };
  const v = process.argv.slice(2);
  a.mode = v[0];
  for (let i = 1; i + 1 < v.length; i += 2) {
    const k = v[i].replace(/^--/, '');
    a[k] = k === 'host' || k === 'queue' ? v[i + 1] : Number(v[i + 1]);
  }
  return a;
}

// Job data whose JSON encoding is exactly `bytes` long (segq's job document has the same size).
function payload(bytes) {
  const overhead = JSON.stringify({ d: '' }).length;
  return { d: 'x'.repeat(Math.max(0, bytes - overhead)) };
}

// Redis's own accounting (see segq_bench.c): server CPU seconds and time spent in scripts.
async function redisAcct(client) {
  const info = await client.info('everything');
  const num = (f) => { const m = info.match(new RegExp('^' + f + ':([0-9.]+)', 'm')); return m ? Number(m[1]) : 0; };
  let calls = 0, us = 0;
  for (const m of info.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+),usec=(\d+)/gm)) {
    calls += Number(m[2]); us += Number(m[3]);
  }
  return { cpu_s: num('used_cpu_user') + num('used_cpu_sys'), calls, us };
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function tput(a) {
  const connection = { host: a.host, port: a.port, maxRetriesPerRequest: null };
  const q = new Queue(a.queue, { connection });
  const data = payload(a.bytes);
  const tf = now();
  for (let base = 0; base < a.n; base += 1000) {
    const jobs = [];
    for (let i = base; i < Math.min(a.n, base + 1000); i++) jobs.push({ name: 'j', data });
    await q.addBulk(jobs);
  }
  const fill_s = now() - tf;
  const client = await q.client;
  await client.config('RESETSTAT');
  const a0 = await redisAcct(client);
  const cpu0 = process.cpuUsage();
  let done = 0;
  let tFirst = 0;
  const t0 = now();
  const finished = new Promise((resolve) => {
    const w = new Worker(a.queue, async () => {}, { connection, concurrency: a.concurrency });
    w.on('completed', () => {
      done++;
      if (done === 1) tFirst = now();
      if (done === a.n) resolve(w);
    });
    w.on('failed', (job, err) => { console.error('failed', err); process.exit(1); });
  });
  const timer = setTimeout(() => { console.error('timeout, done=' + done); process.exit(1); },
                           a.timeout * 1000);
  const w = await finished;
  const t1 = now();
  const a1 = await redisAcct(client);
  const cpu = process.cpuUsage(cpu0);
  clearTimeout(timer);
  await w.close();
  await q.close();
  console.log(JSON.stringify({ mode: 'tput', system: 'bullmq', concurrency: a.concurrency, n: a.n,
    job_bytes: JSON.stringify(data).length, fill_s, secs: t1 - t0, jobs_per_s: a.n / (t1 - t0),
    first_result_s: tFirst - t0, steady_jobs_per_s: a.n / (t1 - tFirst),
    redis_cpu_us_per_job: (a1.cpu_s - a0.cpu_s) * 1e6 / a.n, script_us_per_job: a1.us / a.n,
    script_calls: a1.calls, jobs_per_script_call: a.n / a1.calls,
    worker_cpu_us_per_job: (cpu.user + cpu.system) / a.n }));
}

async function worker(a) {
  const connection = { host: a.host, port: a.port, maxRetriesPerRequest: null };
  const w = new Worker(a.queue, async () => {}, { connection, concurrency: a.concurrency });
  await w.waitUntilReady();
  console.log('ready');
  const stop = async () => { await w.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function lat(a) {
  const connection = { host: a.host, port: a.port, maxRetriesPerRequest: null };
  const q = new Queue(a.queue, { connection });
  const qe = new QueueEvents(a.queue, { connection });
  await q.waitUntilReady();
  await qe.waitUntilReady();
  const data = payload(a.bytes);
  const sched = new Float64Array(a.n);
  const seen = new Float64Array(a.n);
  let nseen = 0;
  qe.on('completed', ({ jobId }) => {
    const i = idx.get(jobId);
    if (i === undefined) seenEarly.set(jobId, now());
    else if (seen[i] === 0) { seen[i] = now(); nseen++; }
  });
  const idx = new Map();
  await new Promise((r) => setTimeout(r, 200));
  const start = now() + 0.01;
  let maxLag = 0;
  let i = 0;
  // Open loop: every tick sends every job whose scheduled time has come, without waiting for
  // earlier adds to return (their replies are awaited at the end).
  const pending = [];
  await new Promise((resolve) => {
    const tick = () => {
      const t = now();
      while (i < a.n && start + i / a.rate <= t) {
        sched[i] = start + i / a.rate;
        if (t - sched[i] > maxLag) maxLag = t - sched[i];
        const k = i;
        pending.push(q.add('j', data).then((job) => { idx.set(job.id, k);
          if (seenEarly.has(job.id)) { seen[k] = seenEarly.get(job.id); nseen++; } }));
        i++;
      }
      if (i >= a.n) return resolve();
      const wait = (start + i / a.rate - now()) * 1000;
      setTimeout(tick, Math.max(0, wait - 0.5));
    };
    tick();
  });
  const sentS = now() - start;
  await Promise.all(pending);
  const deadline = now() + a.timeout;
  while (nseen < a.n && now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const l = [];
  for (let k = 0; k < a.n; k++) if (seen[k] > 0) l.push((seen[k] - sched[k]) * 1e3);
  l.sort((x, y) => x - y);
  const p = (f) => l[Math.min(l.length - 1, Math.round(f * (l.length - 1)))];
  // Cross-check with BullMQ's own stamps (ms): finishedOn - timestamp of every job.
  const client = await q.client;
  const pipe = client.pipeline();
  for (const id of idx.keys()) pipe.hmget(q.toKey(id), 'timestamp', 'finishedOn');
  const own = (await pipe.exec()).map(([, v]) => Number(v[1]) - Number(v[0]))
    .filter((x) => !Number.isNaN(x)).sort((x, y) => x - y);
  const po = (f) => own[Math.min(own.length - 1, Math.round(f * (own.length - 1)))];
  console.log(JSON.stringify({ mode: 'lat', system: 'bullmq', n: a.n, seen: l.length,
    job_bytes: JSON.stringify(data).length, rate: a.rate, achieved_rate: a.n / sentS,
    max_send_lag_ms: maxLag * 1e3, p50_ms: p(0.5), p90_ms: p(0.9), p99_ms: p(0.99),
    max_ms: l[l.length - 1], mean_ms: l.reduce((s, x) => s + x, 0) / l.length,
    own_stamps_p50_ms: po(0.5), own_stamps_p99_ms: po(0.99) }));
  await qe.close();
  await q.close();
  process.exit(l.length === a.n ? 0 : 1);
}

// A completion can arrive before q.add() resolves with the job id; remember it until then.
const seenEarly = new Map();

const a = args();
const modes = { tput, worker, lat };
if (!modes[a.mode]) {
  console.error('usage: node bench.js tput|worker|lat [--port P] [--queue Q] [--n N] ' +
                '[--concurrency C] [--bytes B] [--rate R]');
  process.exit(2);
}
modes[a.mode](a).catch((e) => { console.error(e); process.exit(1); });
