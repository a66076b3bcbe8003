#!/usr/bin/env node
// Worker threads against processes: plaintext `GET /` (the demo site's home page) with wrk, for
// each runtime, in three set-ups that serve the same bytes:
//
//   one        `mod.ts --port P` (no --workers): one server, one thread
//   workers    `mod.ts --workers 2 --port P`: two worker threads on one port (startWorkers)
//   processes  two processes, each running a tiny server file that calls
//              `serve({ port: P, reusePort: true }, demoHandler)`: two listeners on one port
//
// and prints one markdown table with the medians of the trials and the ratios workers ÷ one and
// processes ÷ workers. Nothing is pinned: the servers and wrk share the machine's cores (2 here),
// so two servers compete with the load generator, and "workers ÷ one" is far below what the same
// set-up would reach with wrk on a machine of its own.
//
//   node bench/workers.mjs                        all runtimes (deno bun node), 3 trials of 5 s
//   node bench/workers.mjs bun --trials 5         some runtimes, more trials
//   node bench/workers.mjs --quick                1 trial of 2 s: a smoke test of the harness
//   node bench/workers.mjs --deno-unstable-net    Deno with --unstable-net (see below)
//   npm run bench:workers
//
// On Deno without --unstable-net (the default here, as `deno run -A mod.ts` is run), `one` uses
// Deno.listen while `workers` and `processes` share the port through node:net, which has
// reusePort without the flag; with --deno-unstable-net all three use Deno.listen.
//
// Plain JavaScript for any Node >= 20, no dependencies but bench/proc.mjs; the runtimes are the
// ones in ../node_modules/.bin, and wrk is Debian's `wrk` package.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { cpuSeconds, freePort, median, NPROC, tryExec } from "./proc.mjs";

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH, "..");
const BIN = join(ROOT, "node_modules", ".bin");
const MOD = join(ROOT, "mod.ts");
const RUNTIMES = ["deno", "bun", "node"];
const SETUPS = ["one", "workers", "processes"];
const CONNECTIONS = 50;

const HELP = `usage: node bench/workers.mjs [deno|bun|node ...] [options]

Measures plaintext GET / with wrk (-t1 -c${CONNECTIONS}) against mod.ts with one server, mod.ts
--workers 2, and two processes sharing the port with reusePort, on each chosen runtime (default:
${RUNTIMES.join(" ")}), and prints a markdown table of the medians.

  --trials N            trials per set-up, the median is reported (default 3)
  --duration S          seconds per wrk run (default 5)
  --warmup S            seconds of wrk before the trials, per set-up (default 1)
  --quick               1 trial of 2 s
  --deno-unstable-net   run Deno with --unstable-net, so that every set-up uses Deno.listen`;

const options = { runtimes: [], trials: 3, duration: 5, warmup: 1, denoUnstableNet: false };
{
  const args = process.argv.slice(2);
  const number = (i, name) => {
    const value = Number(args[i]);
    if (!(value > 0)) usage(`${name} needs a positive number`);
    return value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      process.exit(0);
    } else if (RUNTIMES.includes(arg)) {
      if (!options.runtimes.includes(arg)) options.runtimes.push(arg);
    } else if (arg === "--trials") options.trials = Math.floor(number(++i, "--trials"));
    else if (arg === "--duration") options.duration = number(++i, "--duration");
    else if (arg === "--warmup") options.warmup = number(++i, "--warmup");
    else if (arg === "--quick") Object.assign(options, { trials: 1, duration: 2, warmup: 0.5 });
    else if (arg === "--deno-unstable-net") options.denoUnstableNet = true;
    else usage(`unknown argument: ${arg}`);
  }
  if (options.runtimes.length === 0) options.runtimes.push(...RUNTIMES);
}

function usage(message) {
  console.error(`workers.mjs: ${message}\n\n${HELP}`);
  process.exit(2);
}

const log = (message) => process.stderr.write(`${message}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CHILD_ENV = { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1" };

if (tryExec("wrk", ["-v"]) === null && tryExec("which", ["wrk"]) === null) {
  console.error("workers.mjs: wrk is not installed (apt-get install wrk)");
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// The tiny server of the `processes` set-up, written to a temporary directory

const TEMP = mkdtempSync(join(tmpdir(), "wireserve-bench-workers-"));
const TINY_SERVER = join(TEMP, "reuse_port_server.ts");
writeFileSync(
  TINY_SERVER,
  `// One of the processes of bench/workers.mjs: the demo site on a port it shares (reusePort).
import process from "node:process";
import { demoHandler, serve } from ${JSON.stringify(pathToFileURL(MOD).href)};

const port = Number(process.argv[process.argv.length - 1]);
const server = serve({ port, hostname: "127.0.0.1", reusePort: true }, demoHandler);
const addr = await server.ready;
console.log(\`listening \${addr.port}\`);
const stop = () => server.shutdown();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
await server.finished;
`,
);

// ---------------------------------------------------------------------------------------------
// Processes

const live = new Set();

/** The command that runs `file` with `args` on `runtime`. */
function runtimeCommand(runtime, file, args) {
  if (runtime !== "deno") return [join(BIN, runtime), file, ...args];
  const unstable = options.denoUnstableNet ? ["--unstable-net"] : [];
  return [join(BIN, "deno"), "run", "-A", ...unstable, file, ...args];
}

/** Starts a process; resolves once its stdout matches `ready`. */
function startProcess(command, ready) {
  const child = spawn(command[0], command.slice(1), {
    cwd: ROOT,
    env: CHILD_ENV,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const proc = { child, pid: child.pid, stdout: "", stderr: "", exited: null };
  live.add(proc);
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (proc.stderr.length < 64 * 1024) proc.stderr += d;
  });
  const exited = new Promise((r) => child.on("exit", r));
  proc.exitedPromise = exited.then((code) => {
    proc.exited = code;
    live.delete(proc);
  });
  return new Promise((resolveStarted, reject) => {
    const timer = setTimeout(() => {
      stopProcess(proc);
      reject(new Error(`${command.join(" ")} did not start within 30 s; stderr: ${proc.stderr}`));
    }, 30_000);
    child.stdout.on("data", (d) => {
      if (proc.stdout.length < 64 * 1024) proc.stdout += d;
      if (ready.test(proc.stdout)) {
        clearTimeout(timer);
        resolveStarted(proc);
      }
    });
    child.on("exit", () => {
      clearTimeout(timer);
      reject(new Error(`${command.join(" ")} exited before listening: ${proc.stderr.trim()}`));
    });
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves when it has exited. */
async function stopProcess(proc) {
  if (proc.exited !== null) return;
  proc.child.kill("SIGTERM");
  const killer = setTimeout(() => proc.child.kill("SIGKILL"), 5000);
  await proc.exitedPromise;
  clearTimeout(killer);
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    for (const proc of live) proc.child.kill("SIGKILL");
    rmSync(TEMP, { recursive: true, force: true });
    process.exit(130);
  });
}

/** Starts `setup` on `runtime`; resolves with { port, procs }. */
async function startSetup(runtime, setup) {
  const port = await freePort();
  const serving = new RegExp(`^Serving the demo site on http://127\\.0\\.0\\.1:${port}/`, "m");
  const cli = ["--port", String(port), "--host", "127.0.0.1"];
  if (setup === "one") {
    return { port, procs: [await startProcess(runtimeCommand(runtime, MOD, cli), serving)] };
  }
  if (setup === "workers") {
    const command = runtimeCommand(runtime, MOD, ["--workers", "2", ...cli]);
    return { port, procs: [await startProcess(command, / with 2 workers$/m)] };
  }
  const command = runtimeCommand(runtime, TINY_SERVER, [String(port)]);
  const procs = [];
  try {
    for (let i = 0; i < 2; i++) procs.push(await startProcess(command, /^listening \d+$/m));
  } catch (error) {
    await Promise.all(procs.map(stopProcess));
    throw error;
  }
  return { port, procs };
}

/** Checks that GET / answers 200 with the demo page. */
async function checkServes(port) {
  const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } });
  const body = await response.text();
  if (response.status !== 200 || !body.includes("Hello from wireserve")) {
    throw new Error(`GET / answered ${response.status}: ${body.slice(0, 200)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// wrk

/** Runs wrk against `port` for `seconds`; resolves with { ok, rps, non2xx, errors, output }. */
function runWrk(port, seconds) {
  const args = ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--timeout", "4s"];
  const child = spawn("wrk", [...args, `http://127.0.0.1:${port}/`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d) => out += d);
  child.stderr.on("data", (d) => out += d);
  const timer = setTimeout(() => child.kill("SIGKILL"), (seconds + 30) * 1000);
  return new Promise((resolveResult) => {
    child.on("exit", (code) => {
      clearTimeout(timer);
      const number = (re) => {
        const m = re.exec(out);
        return m ? Number(m[1]) : null;
      };
      const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/
        .exec(out);
      resolveResult({
        ok: code === 0 && /Requests\/sec/.test(out),
        rps: number(/Requests\/sec:\s+([\d.]+)/),
        non2xx: number(/Non-2xx or 3xx responses:\s+(\d+)/) ?? 0,
        errors: socket ? socket.slice(1).reduce((n, e) => n + Number(e), 0) : 0,
        output: out.trim(),
      });
    });
  });
}

/**
 * Runs the warm-up and the trials against a started set-up; resolves with the median req/s, the
 * median server CPU (percent of one core, every process of the set-up together) and each
 * process's share of that CPU (for `processes`: did both serve?).
 */
async function measure(started) {
  await checkServes(started.port);
  await runWrk(started.port, options.warmup);
  const rps = [];
  const cpu = [];
  const shares = [];
  const problems = [];
  for (let trial = 0; trial < options.trials; trial++) {
    const before = started.procs.map((p) => cpuSeconds(p.pid));
    const startedAt = performance.now();
    const result = await runWrk(started.port, options.duration);
    const elapsed = (performance.now() - startedAt) / 1000;
    const used = started.procs.map((p, i) => (cpuSeconds(p.pid) ?? NaN) - (before[i] ?? NaN));
    const total = used.reduce((a, b) => a + b, 0);
    if (!result.ok) problems.push(`wrk failed: ${result.output.slice(0, 300)}`);
    if (result.non2xx > 0) problems.push(`${result.non2xx} non-2xx`);
    if (result.errors > 0) problems.push(`${result.errors} socket errors`);
    rps.push(result.rps);
    cpu.push(total / elapsed * 100);
    shares.push(used.map((u) => u / total * 100));
  }
  const share = started.procs.length > 1
    ? started.procs.map((_, i) => median(shares.map((s) => s[i])))
    : null;
  return { rps: median(rps), cpu: median(cpu), share, problems };
}

// ---------------------------------------------------------------------------------------------
// Running

function runtimeVersion(runtime) {
  const out = tryExec(join(BIN, runtime), ["--version"]);
  if (out === null) return runtime;
  const first = out.split("\n")[0];
  return runtime === "deno" ? first.replace(/ \(.*$/, "") : `${runtime} ${first}`;
}

const results = {};
const began = Date.now();
try {
  for (const runtime of options.runtimes) {
    results[runtime] = {};
    for (const setup of SETUPS) {
      log(`${runtime} ${setup}: ${options.trials} × ${options.duration} s`);
      let started;
      try {
        started = await startSetup(runtime, setup);
        results[runtime][setup] = await measure(started);
      } catch (error) {
        results[runtime][setup] = { rps: null, cpu: null, share: null, problems: [String(error)] };
      } finally {
        if (started) await Promise.all(started.procs.map(stopProcess));
      }
      const r = results[runtime][setup];
      log(`  ${r.rps === null ? "failed" : `${Math.round(r.rps)} req/s`} ${r.problems.join("; ")}`);
      await sleep(200); // the sockets of the last set-up close before the next binds
    }
  }
} finally {
  for (const proc of live) proc.child.kill("SIGKILL");
  rmSync(TEMP, { recursive: true, force: true });
}

const format = (n) => n === null ? "—" : Math.round(n).toLocaleString("en-US");
const ratio = (a, b) => a === null || b === null || b === 0 ? "—" : `${(a / b).toFixed(2)}×`;
const cell = (r) => {
  if (r.rps === null) return "failed";
  const cpu = r.cpu === null || !Number.isFinite(r.cpu) ? "" : ` (${Math.round(r.cpu)} %)`;
  return `${format(r.rps)}${cpu}`;
};

const lines = [
  `## Worker threads against processes: plaintext \`GET /\`, wrk -t1 -c${CONNECTIONS}`,
  "",
  `${options.trials} trial(s) of ${options.duration} s, median req/s (server CPU, % of one core, ` +
  `all its threads or processes). ${NPROC} cores, shared by the servers and wrk: nothing is ` +
  `pinned, so two servers compete with the load generator for them.`,
  "",
  "| runtime | (1) one server | (2) --workers 2 | (3) 2 processes, reusePort | (2)/(1) | (3)/(2) | (3) CPU split |",
  "|---|---:|---:|---:|---:|---:|---|",
];
for (const runtime of options.runtimes) {
  const r = results[runtime];
  const split = r.processes.share?.map((s) => `${Math.round(s)} %`).join(" / ") ?? "—";
  lines.push(
    `| ${runtimeVersion(runtime)} | ${cell(r.one)} | ${cell(r.workers)} | ${cell(r.processes)} | ` +
      `${ratio(r.workers.rps, r.one.rps)} | ${ratio(r.processes.rps, r.workers.rps)} | ${split} |`,
  );
}
const problems = options.runtimes.flatMap((runtime) =>
  SETUPS.flatMap((setup) =>
    results[runtime][setup].problems.map((p) => `- ${runtime} ${setup}: ${p}`)
  )
);
if (options.runtimes.includes("deno")) {
  lines.push(
    "",
    options.denoUnstableNet
      ? "Deno ran with --unstable-net: every set-up on Deno.listen."
      : "Deno ran without --unstable-net: (1) on Deno.listen, (2) and (3) on node:net (reusePort).",
  );
}
if (problems.length > 0) lines.push("", "Problems:", ...problems);
lines.push("", `Took ${Math.round((Date.now() - began) / 1000)} s.`);
console.log(lines.join("\n"));
process.exitCode = problems.length > 0 ? 1 : 0;
