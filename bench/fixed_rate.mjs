#!/usr/bin/env node
// Latency at a fixed request rate (issue 16's p99): wrk sends as fast as the server answers, so its
// percentiles measure a saturated server, and a server that stalls (a long garbage collection)
// simply gets fewer requests during the stall. Here the load is open-ended instead: `hey` (Debian's
// `hey` package) sends at a fixed rate, the same for every server, below what each can serve, so
// a stall shows up as the latency of every request that waited through it, as a user would see it
// (the idea of wrk2, which Debian does not package). hey's rate limit is per worker: -c workers
// (connections) at -q requests per second each.
//
//   node bench/fixed_rate.mjs                        deno bun node, 10,000 req/s, 50 conns, 10 s
//   node bench/fixed_rate.mjs deno --rate 20000      some runtimes, another rate
//   node bench/fixed_rate.mjs --trials 3 --duration 5
//
// Each server is bench/servers.ts (wireserve, fast, native; route /) pinned to core 0, hey to
// core 1, one warm-up second per server first. Prints one markdown table: p50, p99 and p99.9 (from
// hey's CSV of every request) and the rate reached, medians of the trials, and p99 ÷ native's.

import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { median, NPROC, tryExec } from "./proc.mjs";

const BENCH = dirname(fileURLToPath(import.meta.url));
const BIN = join(resolve(BENCH, ".."), "node_modules", ".bin");
const RUNTIMES = ["deno", "bun", "node"];
const KINDS = ["wireserve", "fast", "native"];
const NATIVE = { deno: "Deno.serve", bun: "Bun.serve", node: "node:http" };

const options = { runtimes: [], rate: 10_000, connections: 50, duration: 10, trials: 1 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  const number = () => {
    const value = Number(argv[++i]);
    if (!(value > 0)) fail(`${arg} needs a positive number`);
    return value;
  };
  if (RUNTIMES.includes(arg)) options.runtimes.push(arg);
  else if (arg === "--rate") options.rate = number();
  else if (arg === "--connections") options.connections = number();
  else if (arg === "--duration") options.duration = number();
  else if (arg === "--trials") options.trials = number();
  else fail(`unknown argument ${arg}; see the comment at the top of bench/fixed_rate.mjs`);
}
if (options.runtimes.length === 0) options.runtimes = RUNTIMES;

function fail(message) {
  console.error(`fixed_rate: ${message}`);
  process.exit(2);
}

if (tryExec("which", ["hey"]) === null) fail("hey is not installed: apt-get install hey");
const PIN = NPROC >= 2 && tryExec("which", ["taskset"]) !== null;
const pinned = (cpu, command) => PIN ? ["taskset", "-c", cpu, ...command] : command;

/** Starts bench/servers.ts as `kind` on `runtime`; resolves with the child and its port. */
function startServer(runtime, kind) {
  const script = join(BENCH, "servers.ts");
  const seconds = String(options.trials * (options.duration + 5) + 30);
  const args = [kind, "/", "--max-seconds", seconds];
  const command = runtime === "deno"
    ? [join(BIN, "deno"), "run", "--allow-net=127.0.0.1", script, ...args]
    : [join(BIN, runtime), script, ...args];
  const [file, ...rest] = pinned("0", command);
  const child = spawn(file, rest, {
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolvePort, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${runtime} ${kind} printed no port within 30 s`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (data) => {
      out += data;
      const newline = out.indexOf("\n");
      if (newline === -1) return;
      clearTimeout(timer);
      resolvePort({ child, port: Number(out.slice(0, newline).trim()) });
    });
    child.on("exit", () => {
      clearTimeout(timer);
      reject(new Error(`${runtime} ${kind} exited before listening`));
    });
  });
}

/** Runs hey against `port` for `seconds`; resolves with every request's latency (s) and the rate. */
function runHey(port, seconds) {
  const perWorker = options.rate / options.connections;
  const args = [
    "-z",
    `${seconds}s`,
    "-c",
    String(options.connections),
    "-q",
    String(perWorker),
    "-o",
    "csv",
    `http://127.0.0.1:${port}/`,
  ];
  const [file, ...rest] = pinned("1", ["hey", ...args]);
  const child = spawn(file, rest, { stdio: ["ignore", "pipe", "pipe"] });
  let csv = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (data) => csv += data);
  return new Promise((resolveRun, reject) => {
    child.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`hey exited with ${code}`));
      // response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
      const latencies = [];
      let errors = 0;
      for (const line of csv.split("\n").slice(1)) {
        const fields = line.split(",");
        if (fields.length < 8) continue;
        if (fields[6] !== "200") errors++;
        latencies.push(Number(fields[0]));
      }
      latencies.sort((a, b) => a - b);
      resolveRun({ latencies, errors, rate: latencies.length / seconds });
    });
  });
}

/** The `q` quantile of sorted values, in milliseconds. */
function quantileMs(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 1000;
}

const rows = [];
for (const runtime of options.runtimes) {
  const results = {};
  for (const kind of KINDS) {
    const server = await startServer(runtime, kind);
    try {
      await runHey(server.port, 1); // warm-up
      const trials = [];
      for (let t = 0; t < options.trials; t++) {
        const run = await runHey(server.port, options.duration);
        trials.push({
          p50: quantileMs(run.latencies, 0.5),
          p99: quantileMs(run.latencies, 0.99),
          p999: quantileMs(run.latencies, 0.999),
          rate: run.rate,
          errors: run.errors,
        });
        console.error(
          `${runtime} ${kind} trial ${t + 1}: ${Math.round(run.rate)} req/s, p99 ` +
            `${trials.at(-1).p99?.toFixed(2)} ms, ${run.errors} not 200`,
        );
      }
      const pick = (key) => median(trials.map((trial) => trial[key]));
      results[kind] = {
        p50: pick("p50"),
        p99: pick("p99"),
        p999: pick("p999"),
        rate: pick("rate"),
        errors: trials.reduce((sum, trial) => sum + trial.errors, 0),
      };
    } finally {
      server.child.kill("SIGTERM");
    }
  }
  for (const kind of KINDS) {
    const r = results[kind];
    const native = results.native.p99;
    rows.push(
      `| ${runtime} | ${kind === "native" ? NATIVE[runtime] : kind} | ${Math.round(r.rate)} | ` +
        `${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.p999.toFixed(2)} | ` +
        `${(r.p99 / native).toFixed(2)}× | ${r.errors} |`,
    );
  }
}
console.log(
  `\nFixed rate: ${options.rate} req/s over ${options.connections} connections, ` +
    `${options.duration} s × ${options.trials} (hey), GET /, medians of the trials\n`,
);
console.log(
  "| runtime | server | req/s reached | p50 ms | p99 ms | p99.9 ms | p99 ÷ native | not 200 |",
);
console.log("|---|---|--:|--:|--:|--:|--:|--:|");
for (const row of rows) console.log(row);
