#!/usr/bin/env node
// The WebSocket benchmark: wireserve's `upgradeWebSocket` beside each runtime's native WebSocket
// server, echo servers (bench/ws_servers.ts) measured in the same run on the same machine, the
// server pinned to one core and the load generator to the other (`taskset -c`, as bench/run.mjs).
//
//   node_modules/.bin/node bench/ws.mjs                      all runtimes (deno bun node), 3 trials of 5 s
//   node_modules/.bin/node bench/ws.mjs bun --duration 10   one runtime, longer trials
//   node_modules/.bin/node bench/ws.mjs --quick             1 trial of 2 s each: about 2 minutes in all
//
// The servers (see bench/ws_servers.ts): `wireserve` is serve() + upgradeWebSocket from ../mod.ts
// with default options; `native` is Deno.serve + Deno.upgradeWebSocket on Deno, Bun.serve with
// its `websocket` handlers on Bun, node:http + the `ws` package's WebSocketServer on Node. All echo
// every message as received; compression is off everywhere (perMessageDeflate false on both
// sides). The runtimes are the ones in ../node_modules/.bin, never those on PATH.
//
// The load generator is this file again (`--worker ...`), run by ../node_modules/.bin/node
// (Node 24) with the `ws` package as client (perMessageDeflate off, UTF-8 checks of what it
// receives skipped: the servers check theirs, the client compares every echo byte for byte with
// what it sent). Scenarios:
//
//   small   --conns connections (50) each keeping --window messages (16) in flight: a 32 B text
//           message is sent again as soon as its echo arrives. Messages echoed per second, and
//           server CPU per message (its utime + stime from /proc/PID/stat over the trial ÷ the
//           messages echoed), with how busy its core was.
//   large   the same with 64 KiB binary messages.
//   idle    --idle (5,000) WebSockets opened to a fresh server (each sends one 32 B message and
//           gets its echo), then left idle: (VmRSS after − VmRSS before) ÷ sockets still open, in
//           KiB. Both RSS readings are taken after a settle and a full GC in the server (`GET /gc`:
//           `gc()` under --expose-gc on Node, --v8-flags=--expose-gc on Deno, `Bun.gc(true)`);
//           the "before" one after a warm-up of 20 sockets echoing small and large messages, so
//           first-use costs (code, pools) are in the baseline. Lower is better.
//
// Each throughput scenario runs on a fresh server: the load runs --warmup seconds (1) before the
// first trial and does not stop between trials; the median trial is reported. The load
// generator's own CPU is reported too: near 100% of its core it, not the server, may be the
// limit (then the ratio understates the gap). With --zero-mask the client masks with a zero key
// (valid RFC 6455, and `ws` then skips the XOR), which takes masking off the client's bill; the
// servers still unmask every byte (none of them skips a zero key), so it is fair to both, but it
// is not what a browser sends; off by default.
//
// Before each server the cores are checked for other load (/proc/stat, up to --quiet-wait s for
// both to be under 10% busy); a run that starts on busy cores is flagged WARNING in the report,
// and each CPU cell says how busy the core was in all beside the process's own share.
//
// Prints one markdown table per runtime (scenario, wireserve, native, wireserve ÷ native) and
// writes them to bench/results/ws-latest.md, the raw numbers to bench/results/ws-latest.json
// (bench/results is gitignored). The open-file limit is raised for the servers and the idle
// client (`ulimit -n`, as far as the hard limit allows); with a limit under --idle + 200 the idle
// scenario uses fewer sockets and says so. Linux only for CPU and RSS (/proc); taskset optional.

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { cpuSeconds, median, NPROC, tryExec, vmRssKiB } from "./proc.mjs";

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH, "..");
const BIN = join(ROOT, "node_modules", ".bin");
const RESULTS = join(BENCH, "results");
const RUNTIMES = ["deno", "bun", "node"];
const KINDS = ["wireserve", "native"];
const SCENARIOS = ["small", "large", "idle"];

const HELP = `usage: node bench/ws.mjs [deno|bun|node ...] [options]

WebSocket echo: wireserve's upgradeWebSocket beside the runtime's native WebSocket server
(default runtimes: ${RUNTIMES.join(" ")}); a markdown table per runtime, also written to
bench/results/ws-latest.md.

  --duration S       seconds per trial (default 5)
  --trials N         trials per scenario and server, the median is reported (default 3)
  --warmup S         seconds of load before the first trial (default 1)
  --quick            1 trial of 2 s
  --conns N          connections for small and large (default 50)
  --window K         messages in flight per connection (default 16)
  --small-bytes N    the small text message (default 32)
  --large-bytes N    the large binary message (default 65536)
  --idle N           idle WebSockets for the memory scenario (default 5000)
  --scenarios A,B    only these (${SCENARIOS.join(", ")})
  --kinds A,B        only these servers (${KINDS.join(", ")})
  --zero-mask        the client masks with a zero key (see the header)
  --quiet-wait S     before each server, wait up to S s for both cores to be under 10% busy
                     (default 30); a run that starts on busy cores is flagged in the report
  --server-cpu N     the core the servers are pinned to (default 0)
  --load-cpu N       the core the load generator is pinned to (default 1)`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (message) => process.stderr.write(`${message}\n`);

// ---------------------------------------------------------------------------------------------
// The load generator (`--worker echo|idle`): runs under Node 24 with the ws package.

function workerArgs(args) {
  const o = {};
  for (let i = 0; i < args.length; i++) {
    const name = args[i].replace(/^--/, "");
    if (name === "zero-mask") o.zeroMask = true;
    else o[name] = args[++i];
  }
  return o;
}

async function worker(args) {
  const mode = args[0];
  const o = workerArgs(args.slice(1));
  const { default: WebSocket } = await import("ws");
  const url = `ws://127.0.0.1:${o.port}/`;
  const clientOptions = {
    perMessageDeflate: false,
    skipUTF8Validation: true,
    maxPayload: 256 * 1024 * 1024,
    ...(o.zeroMask ? { generateMask: (mask) => mask.fill(0) } : {}),
  };
  const out = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
  let firstError = null;
  const noteError = (error) => {
    firstError ??= String(error?.message ?? error);
  };

  /** Opens one WebSocket; resolves with it once open, rejects on error or close first. */
  const open = () =>
    new Promise((resolveOpen, reject) => {
      const ws = new WebSocket(url, clientOptions);
      ws.once("open", () => resolveOpen(ws));
      ws.once("error", reject);
      ws.once("close", (code) => reject(new Error(`closed (${code}) before open`)));
    });

  if (mode === "echo") {
    const binary = o.type === "binary";
    const payload = binary
      ? randomBytes(Number(o.bytes))
      : Buffer.from(textPayload(Number(o.bytes)));
    const sendOptions = { binary };
    const conns = Number(o.conns);
    const window = Number(o.window);
    let count = 0;
    let bad = 0;
    let closed = 0;
    const sockets = await Promise.all(Array.from({ length: conns }, open));
    for (const ws of sockets) {
      ws.on("error", noteError);
      ws.on("close", (code) => {
        closed++;
        noteError(`a connection closed (${code})`);
      });
      ws.on("message", (data, isBinary) => {
        if (isBinary !== binary || data.length !== payload.length || !payload.equals(data)) {
          bad++;
          noteError(`an echo differed (${isBinary ? "binary" : "text"}, ${data.length} B)`);
        } else count++;
        ws.send(payload, sendOptions);
      });
      for (let k = 0; k < window; k++) ws.send(payload, sendOptions);
    }
    out({ ready: true });
    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) {
      if (line === "mark") {
        out({
          count,
          bad,
          closed,
          firstError,
          ms: performance.now(),
          cpuMicros: (({ user, system }) => user + system)(process.cpuUsage()),
        });
      } else if (line === "stop") break;
    }
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  }

  if (mode === "idle") {
    // Warm-up: 20 sockets echo small text and large binary messages, then close.
    const small = Buffer.from(textPayload(32));
    const large = randomBytes(64 * 1024);
    const echo = (ws, payload, binary) =>
      new Promise((resolveEcho, reject) => {
        ws.once(
          "message",
          (data) => (payload.equals(data) ? resolveEcho() : reject(new Error("echo differed"))),
        );
        ws.send(payload, { binary });
      });
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        const ws = await open();
        for (let i = 0; i < 50; i++) await echo(ws, small, false);
        for (let i = 0; i < 5; i++) await echo(ws, large, true);
        ws.close(1000);
        await new Promise((r) => ws.once("close", r));
      }),
    );
    out({ warm: true });
    const lines = createInterface({ input: process.stdin });
    const sockets = [];
    let failed = 0;
    for await (const line of lines) {
      if (line === "open") {
        const count = Number(o.count);
        for (let i = 0; i < count; i += 200) {
          await Promise.all(
            Array.from({ length: Math.min(200, count - i) }, async () => {
              try {
                const ws = await open();
                ws.on("error", noteError);
                sockets.push(ws);
                await echo(ws, small, false);
              } catch (error) {
                failed++;
                noteError(error);
              }
            }),
          );
        }
        out({ opened: sockets.length, failed, firstError });
      } else if (line === "check") {
        out({ open: sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length, firstError });
      } else if (line === "stop") break;
    }
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  }
  throw new Error(`unknown worker mode ${mode}`);
}

/** `bytes` of printable ASCII, the same every time. */
function textPayload(bytes) {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  let s = "";
  for (let i = 0; i < bytes; i++) s += alphabet[(i * 7) % alphabet.length];
  return s;
}

// ---------------------------------------------------------------------------------------------
// The driver

function parseOptions() {
  const options = {
    runtimes: [],
    trials: 3,
    duration: 5,
    warmup: 1,
    conns: 50,
    window: 16,
    smallBytes: 32,
    largeBytes: 64 * 1024,
    idle: 5000,
    scenarios: [...SCENARIOS],
    kinds: [...KINDS],
    zeroMask: false,
    quietWait: 30,
    serverCpu: "0",
    loadCpu: "1",
  };
  const args = process.argv.slice(2);
  const usage = (message) => {
    console.error(`ws.mjs: ${message}\n\n${HELP}`);
    process.exit(2);
  };
  const positive = (v, name) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) usage(`${name} needs a positive integer, got ${v}`);
    return n;
  };
  const list = (v, allowed, name) => {
    const items = String(v).split(",").filter(Boolean);
    for (const item of items) {
      if (!allowed.includes(item)) usage(`${name}: unknown ${item} (one of ${allowed.join(", ")})`);
    }
    return items;
  };
  let quick = false;
  const explicit = {};
  for (let i = 0; i < args.length; i++) {
    let arg = args[i];
    let inline;
    if (arg.startsWith("--") && arg.includes("=")) {
      inline = arg.slice(arg.indexOf("=") + 1);
      arg = arg.slice(0, arg.indexOf("="));
    }
    const next = () => {
      const v = inline ?? args[++i];
      if (v === undefined) usage(`${arg} needs a value`);
      return v;
    };
    if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      process.exit(0);
    } else if (arg === "--quick") quick = true;
    else if (arg === "--trials") explicit.trials = positive(next(), arg);
    else if (arg === "--duration") explicit.duration = positive(next(), arg);
    else if (arg === "--warmup") options.warmup = Math.max(0, Number(next()) || 0);
    else if (arg === "--conns") options.conns = positive(next(), arg);
    else if (arg === "--window") options.window = positive(next(), arg);
    else if (arg === "--small-bytes") options.smallBytes = positive(next(), arg);
    else if (arg === "--large-bytes") options.largeBytes = positive(next(), arg);
    else if (arg === "--idle") options.idle = positive(next(), arg);
    else if (arg === "--scenarios") options.scenarios = list(next(), SCENARIOS, arg);
    else if (arg === "--kinds") options.kinds = list(next(), KINDS, arg);
    else if (arg === "--zero-mask") options.zeroMask = true;
    else if (arg === "--quiet-wait") options.quietWait = Math.max(0, Number(next()) || 0);
    else if (arg === "--server-cpu") options.serverCpu = next();
    else if (arg === "--load-cpu") options.loadCpu = next();
    else if (RUNTIMES.includes(arg)) {
      if (!options.runtimes.includes(arg)) options.runtimes.push(arg);
    } else usage(`unknown argument: ${arg}`);
  }
  if (quick) {
    options.trials = 1;
    options.duration = 2;
  }
  Object.assign(options, explicit);
  if (options.runtimes.length === 0) options.runtimes.push(...RUNTIMES);
  return options;
}

const PIN = tryExec("which", ["taskset"]) !== null && NPROC >= 2;
const CHILD_ENV = { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
const RAISE_LIMIT = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"';

/** Per-core jiffies from /proc/stat: { cpuN: { busy, total } }, or null off Linux. */
function coreTimes() {
  try {
    const cores = {};
    for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
      const m = /^cpu(\d+) (.*)$/.exec(line);
      if (!m) continue;
      const f = m[2].trim().split(/\s+/).map(Number);
      const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal
      cores[m[1]] = { busy: total - f[3] - f[4], total }; // less idle and iowait
    }
    return cores;
  } catch {
    return null;
  }
}

/** How busy core `cpu` was between two coreTimes() readings (0..1), or null. */
function coreBusy(before, after, cpu) {
  const a = before?.[cpu];
  const b = after?.[cpu];
  if (!a || !b || b.total === a.total) return null;
  return (b.busy - a.busy) / (b.total - a.total);
}

/**
 * Waits (up to --quiet-wait seconds) until neither benchmark core is more than 10% busy over half a second
 * with nothing of ours running: another process's load would be measured as ours. Returns the
 * last reading of both cores.
 */
async function quietCores(options, maxMs = options.quietWait * 1000) {
  const started = Date.now();
  let reading;
  for (;;) {
    const before = coreTimes();
    await sleep(500);
    const after = coreTimes();
    reading = {
      server: coreBusy(before, after, options.serverCpu),
      load: coreBusy(before, after, options.loadCpu),
    };
    if (reading.server === null || (reading.server <= 0.1 && reading.load <= 0.1)) break;
    if (Date.now() - started > maxMs) break;
    if (!quietCores.waited) {
      log(
        `  waiting for quiet cores (server core ${pct(reading.server)}, load core ${
          pct(reading.load)
        } busy)`,
      );
    }
    quietCores.waited = true;
  }
  quietCores.waited = false;
  return reading;
}

/** The soft open-file limit a child gets after RAISE_LIMIT. */
function raisedOpenFiles() {
  const out = tryExec("bash", [
    "-c",
    'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ulimit -n',
  ]);
  return out === null || out === "unlimited" ? Infinity : Number(out);
}

function runtimeVersion(runtime) {
  const out = tryExec(join(BIN, runtime), ["--version"]);
  if (out === null) return null;
  const first = out.split("\n")[0];
  return runtime === "bun" ? `bun ${first}` : runtime === "node" ? `node ${first}` : first;
}

function pinned(cpu, command) {
  return PIN ? ["taskset", "-c", cpu, ...command] : command;
}

const live = new Set();
function track(child) {
  live.add(child);
  child.on("exit", () => live.delete(child));
  return child;
}
process.on("exit", () => {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));

function serverCommand(runtime, kind, maxSeconds) {
  const script = join(BENCH, "ws_servers.ts");
  const args = [kind, "--max-seconds", String(maxSeconds)];
  if (runtime === "deno") {
    return [
      join(BIN, "deno"),
      "run",
      "--allow-net=127.0.0.1",
      "--v8-flags=--expose-gc",
      script,
      ...args,
    ];
  }
  if (runtime === "node") return [join(BIN, "node"), "--expose-gc", script, ...args];
  return [join(BIN, "bun"), script, ...args];
}

/** Starts a server; resolves once it printed its port. */
function startServer(options, runtime, kind) {
  const command = pinned(options.serverCpu, serverCommand(runtime, kind, 600));
  const child = track(spawn("bash", ["-c", RAISE_LIMIT, "bash", ...command], {
    cwd: ROOT,
    env: CHILD_ENV,
    stdio: ["ignore", "pipe", "pipe"],
  }));
  const server = { runtime, kind, child, pid: child.pid, port: 0, stderr: "", exited: null };
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (server.stderr.length < 64 * 1024) server.stderr += d;
  });
  child.on("exit", (code, signal) => {
    server.exited = signal ?? code;
  });
  return new Promise((resolvePort, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${runtime} ${kind} printed no port within 30 s; stderr: ${server.stderr}`));
    }, 30_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d) => {
      if (server.port) return;
      out += d;
      const newline = out.indexOf("\n");
      if (newline === -1) return;
      server.port = Number(out.slice(0, newline).trim());
      clearTimeout(timer);
      if (server.port > 0) resolvePort(server);
      else reject(new Error(`${runtime} ${kind} printed no port: ${out}`));
    });
    child.on("exit", () => {
      clearTimeout(timer);
      reject(new Error(`${runtime} ${kind} exited before listening: ${server.stderr.trim()}`));
    });
  });
}

async function stopServer(server) {
  if (server.exited !== null) return;
  server.child.kill("SIGTERM");
  for (let i = 0; i < 30 && server.exited === null; i++) await sleep(100);
  if (server.exited === null) server.child.kill("SIGKILL");
  for (let i = 0; i < 20 && server.exited === null; i++) await sleep(50);
}

/** A load-generator process pinned to the load core, talking JSON lines. */
function startWorker(options, mode, args) {
  const command = pinned(options.loadCpu, [
    join(BIN, "node"),
    fileURLToPath(import.meta.url),
    "--worker",
    mode,
    ...args,
    ...(options.zeroMask ? ["--zero-mask"] : []),
  ]);
  const child = track(spawn("bash", ["-c", RAISE_LIMIT, "bash", ...command], {
    cwd: ROOT,
    env: CHILD_ENV,
    stdio: ["pipe", "pipe", "pipe"],
  }));
  const w = { child, stderr: "", exited: null, queue: [], waiters: [] };
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    if (w.stderr.length < 64 * 1024) w.stderr += d;
  });
  const fail = () => {
    for (const waiter of w.waiters.splice(0)) {
      waiter.reject(
        new Error(`load generator exited (${w.exited}): ${w.stderr.trim().slice(-2000)}`),
      );
    }
  };
  child.on("exit", (code, signal) => {
    w.exited = signal ?? code;
    fail();
  });
  createInterface({ input: child.stdout }).on("line", (line) => {
    let value;
    try {
      value = JSON.parse(line);
    } catch {
      return;
    }
    const waiter = w.waiters.shift();
    if (waiter) waiter.resolve(value);
    else w.queue.push(value);
  });
  w.next = (timeoutMs = 120_000) => {
    if (w.queue.length) return Promise.resolve(w.queue.shift());
    if (w.exited !== null) {
      return Promise.reject(new Error(`load generator exited (${w.exited}): ${w.stderr.trim()}`));
    }
    return new Promise((resolveNext, reject) => {
      const timer = setTimeout(() => reject(new Error("load generator did not answer")), timeoutMs);
      w.waiters.push({
        resolve: (v) => (clearTimeout(timer), resolveNext(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  };
  w.send = (line) => {
    if (w.exited === null) child.stdin.write(`${line}\n`);
  };
  w.stop = async () => {
    w.send("stop");
    for (let i = 0; i < 50 && w.exited === null; i++) await sleep(100);
    if (w.exited === null) child.kill("SIGKILL");
  };
  return w;
}

/** `GET /gc` on the server: a full GC where the runtime allows one. */
function requestGc(port) {
  return new Promise((resolveGc) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/gc", agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolveGc(body));
    });
    req.on("error", (error) => resolveGc(`error: ${error.message}`));
    req.setTimeout(10_000, () => req.destroy(new Error("timeout")));
  });
}

async function settledRss(server) {
  await sleep(500);
  const gc = await requestGc(server.port);
  await sleep(300);
  await requestGc(server.port);
  await sleep(500);
  return { rss: vmRssKiB(server.pid), gc };
}

/** One throughput scenario on one server: the trials' numbers. */
async function runThroughput(options, server, scenario) {
  const binary = scenario === "large";
  const w = startWorker(options, "echo", [
    "--port",
    String(server.port),
    "--conns",
    String(options.conns),
    "--window",
    String(options.window),
    "--bytes",
    String(binary ? options.largeBytes : options.smallBytes),
    "--type",
    binary ? "binary" : "text",
  ]);
  try {
    const ready = await w.next(60_000);
    if (!ready.ready) throw new Error(`load generator: ${JSON.stringify(ready)}`);
    await sleep(options.warmup * 1000);
    const mark = async () => {
      const cpu = cpuSeconds(server.pid);
      const cores = coreTimes();
      w.send("mark");
      const m = await w.next(30_000);
      return { ...m, serverCpu: cpu, cores };
    };
    const trials = [];
    let before = await mark();
    for (let t = 0; t < options.trials; t++) {
      await sleep(options.duration * 1000);
      const after = await mark();
      const messages = after.count - before.count;
      const seconds = (after.ms - before.ms) / 1000;
      const serverCpu = after.serverCpu !== null && before.serverCpu !== null
        ? after.serverCpu - before.serverCpu
        : null;
      trials.push({
        messages,
        seconds,
        rate: messages / seconds,
        serverCpuMicrosPerMessage: serverCpu !== null && messages > 0
          ? (serverCpu * 1e6) / messages
          : null,
        serverBusy: serverCpu !== null ? serverCpu / seconds : null,
        clientBusy: (after.cpuMicros - before.cpuMicros) / 1e6 / seconds,
        // Everything on the cores (other processes, and softirq the kernel charges to no one).
        serverCoreBusy: coreBusy(before.cores, after.cores, options.serverCpu),
        loadCoreBusy: coreBusy(before.cores, after.cores, options.loadCpu),
        bad: after.bad - before.bad,
        closed: after.closed,
        firstError: after.firstError,
      });
      before = after;
    }
    return trials;
  } finally {
    await w.stop();
  }
}

/** The idle-memory scenario on a fresh server. */
async function runIdle(options, server, count) {
  const w = startWorker(options, "idle", ["--port", String(server.port), "--count", String(count)]);
  try {
    const warm = await w.next(60_000);
    if (!warm.warm) throw new Error(`load generator: ${JSON.stringify(warm)}`);
    const before = await settledRss(server);
    w.send("open");
    const opened = await w.next(300_000);
    await sleep(1000);
    const after = await settledRss(server);
    w.send("check");
    const { open, firstError } = await w.next(30_000);
    const perSocket = before.rss !== null && after.rss !== null && open > 0
      ? (after.rss - before.rss) / open
      : null;
    return {
      baselineKiB: before.rss,
      loadedKiB: after.rss,
      gc: before.gc,
      asked: count,
      opened: opened.opened,
      failed: opened.failed,
      open,
      firstError: opened.firstError ?? firstError,
      perSocketKiB: perSocket,
    };
  } finally {
    await w.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Report

const fmtInt = (v) => (v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en-US"));
const fmt1 = (
  v,
) => (v === null || v === undefined ? "—" : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2));
const pct = (v) => (v === null || v === undefined ? "?" : `${Math.round(v * 100)}%`);
const ratio = (a, b) => (a == null || b == null || b === 0 ? "—" : `${(a / b).toFixed(2)}×`);

function summarize(trials) {
  if (!trials || trials.error) return null;
  const byRate = [...trials].sort((a, b) => a.rate - b.rate);
  const mid = byRate[byRate.length >> 1];
  return {
    rate: median(trials.map((t) => t.rate)),
    cpu: median(trials.map((t) => t.serverCpuMicrosPerMessage)),
    serverBusy: median(trials.map((t) => t.serverBusy)),
    clientBusy: median(trials.map((t) => t.clientBusy)),
    serverCoreBusy: median(trials.map((t) => t.serverCoreBusy)),
    loadCoreBusy: median(trials.map((t) => t.loadCoreBusy)),
    bad: trials.reduce((s, t) => s + t.bad, 0),
    closed: Math.max(...trials.map((t) => t.closed)),
    firstError: trials.map((t) => t.firstError).find(Boolean) ?? null,
    mid,
  };
}

function report(info, results, options) {
  const lines = [];
  lines.push(`# WebSocket echo: wireserve vs native`);
  lines.push("");
  lines.push(`- ${info.date}; \`${info.command}\``);
  lines.push(`- mod.ts ${info.source}`);
  lines.push(`- machine: ${info.machine}`);
  lines.push(
    `- server pinned to core ${options.serverCpu}, load generator (Node ${info.client}, ws ${info.wsVersion}) to core ${options.loadCpu}${
      PIN ? "" : " (not pinned: no taskset or one core)"
    }`,
  );
  lines.push(
    `- throughput: ${options.conns} connections × ${options.window} messages in flight, ${options.warmup} s warm-up, ` +
      `median of ${options.trials} trial(s) of ${options.duration} s, a fresh server per scenario; ` +
      `client masks ${
        options.zeroMask ? "with a zero key (--zero-mask)" : "with random keys (as browsers do)"
      }; compression off`,
  );
  lines.push(
    `- idle: RSS growth (VmRSS after a settle and a full GC in the server) ÷ sockets still open, fresh server`,
  );
  lines.push(
    "- CPU cells: the process's share of a core (utime + stime), and how busy its core was in all " +
      "(/proc/stat: that and the kernel's softirq work for loopback TCP, and any other process)",
  );
  lines.push("");
  for (const note of results.busy ?? []) lines.push(`- WARNING: ${note}`);
  if (results.busy?.length) lines.push("");
  for (const runtime of options.runtimes) {
    const r = results[runtime];
    lines.push(`## ${runtime} (${info.versions[runtime] ?? "?"})`);
    lines.push("");
    lines.push(`native: ${NATIVE[runtime]}`);
    lines.push("");
    lines.push("| scenario | wireserve | native | wireserve ÷ native |");
    lines.push("| --- | ---: | ---: | ---: |");
    const notes = [];
    for (const scenario of ["small", "large"]) {
      if (!options.scenarios.includes(scenario)) continue;
      const label = scenario === "small"
        ? `${options.smallBytes} B text, msgs/s`
        : `${options.largeBytes / 1024} KiB binary, msgs/s`;
      const s = {};
      for (const kind of KINDS) {
        const value = r?.[scenario]?.[kind];
        if (value?.error) notes.push(`${scenario} ${kind}: FAILED: ${value.error}`);
        s[kind] = summarize(value);
        if (s[kind]?.bad) notes.push(`${scenario} ${kind}: ${s[kind].bad} echoes differed`);
        if (s[kind]?.closed) {
          notes.push(
            `${scenario} ${kind}: ${s[kind].closed} connections closed (${s[kind].firstError})`,
          );
        }
      }
      const cell = (
        kind,
      ) => (s[kind] ? fmtInt(s[kind].rate) : options.kinds.includes(kind) ? "failed" : "—");
      lines.push(
        `| ${label} | ${cell("wireserve")} | ${cell("native")} | ${
          ratio(s.wireserve?.rate, s.native?.rate)
        } |`,
      );
      if (scenario === "large") {
        const mib = (
          kind,
        ) => (s[kind] ? fmtInt((s[kind].rate * options.largeBytes) / 1048576) : "—");
        lines.push(
          `| ${label.replace("msgs/s", "MiB/s echoed")} | ${mib("wireserve")} | ${
            mib("native")
          } | ${ratio(s.wireserve?.rate, s.native?.rate)} |`,
        );
      }
      const cpuCell = (kind) =>
        s[kind]
          ? `${fmt1(s[kind].cpu)} (server ${pct(s[kind].serverBusy)}, core ${
            pct(s[kind].serverCoreBusy)
          })`
          : "—";
      lines.push(
        `| ${label.replace("msgs/s", "server CPU µs/msg")} (lower is better) | ${
          cpuCell("wireserve")
        } | ${cpuCell("native")} | ${ratio(s.wireserve?.cpu, s.native?.cpu)} |`,
      );
      const clientCell = (
        kind,
      ) => (s[kind] ? `${pct(s[kind].clientBusy)} (core ${pct(s[kind].loadCoreBusy)})` : "—");
      lines.push(
        `| ${label.replace("msgs/s", "load generator CPU")} | ${clientCell("wireserve")} | ${
          clientCell("native")
        } | |`,
      );
    }
    if (options.scenarios.includes("idle")) {
      const m = {};
      for (const kind of KINDS) {
        const value = r?.idle?.[kind];
        if (value?.error) notes.push(`idle ${kind}: FAILED: ${value.error}`);
        else if (value) {
          m[kind] = value;
          if (value.failed || value.open < value.asked) {
            notes.push(
              `idle ${kind}: ${value.open} of ${value.asked} open at the end, ${value.failed} failed (${value.firstError})`,
            );
          }
          if (value.gc !== "gc") notes.push(`idle ${kind}: no GC in the server (${value.gc})`);
        }
      }
      const kib = (
        kind,
      ) => (m[kind] ? fmt1(m[kind].perSocketKiB) : options.kinds.includes(kind) ? "failed" : "—");
      lines.push(
        `| ${
          fmtInt(options.idleUsed ?? options.idle)
        } idle WebSockets, KiB per socket (lower is better) | ${kib("wireserve")} | ${
          kib("native")
        } | ${ratio(m.wireserve?.perSocketKiB, m.native?.perSocketKiB)} |`,
      );
      const rss = (
        kind,
      ) => (m[kind]
        ? `${fmtInt(m[kind].baselineKiB / 1024)} → ${fmtInt(m[kind].loadedKiB / 1024)}`
        : "—");
      lines.push(
        `| RSS MiB before → with the idle sockets | ${rss("wireserve")} | ${rss("native")} | |`,
      );
    }
    lines.push("");
    for (const note of notes) lines.push(`- ${note}`);
    if (notes.length) lines.push("");
  }
  return lines.join("\n");
}

const NATIVE = {
  deno: "`Deno.serve` + `Deno.upgradeWebSocket`",
  bun: "`Bun.serve` + `server.upgrade` with `websocket` handlers (perMessageDeflate off)",
  node: "`node:http` + `ws` `WebSocketServer({ server, perMessageDeflate: false })`",
};

async function main() {
  const options = parseOptions();
  const limit = raisedOpenFiles();
  if (options.scenarios.includes("idle") && limit < options.idle + 200) {
    options.idleUsed = Math.max(100, limit - 200);
    log(
      `ws.mjs: open-file limit ${limit}: idle uses ${options.idleUsed} sockets, not ${options.idle}`,
    );
  }
  const versions = {};
  for (const runtime of options.runtimes) versions[runtime] = runtimeVersion(runtime);
  const commit = tryExec("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const dirty = tryExec("git", ["-C", ROOT, "status", "--porcelain", "--", "mod.ts"]);
  let sha = "";
  try {
    sha = createHash("sha256").update(readFileSync(join(ROOT, "mod.ts"))).digest("hex").slice(
      0,
      12,
    );
  } catch { /* none */ }
  let model = "unknown";
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1].trim() ??
      model;
  } catch { /* not Linux */ }
  let wsVersion = "?";
  try {
    wsVersion =
      JSON.parse(readFileSync(join(ROOT, "node_modules", "ws", "package.json"), "utf8")).version;
  } catch { /* none */ }
  const info = {
    date: new Date().toISOString(),
    command: `node ${relative(process.cwd(), fileURLToPath(import.meta.url)) || "bench/ws.mjs"} ${
      process.argv.slice(2).join(" ")
    }`.trim(),
    source: `at ${commit ?? "?"}${dirty ? " (modified in the working tree)" : ""}, sha256 ${sha}…`,
    machine: `${NPROC} cores, ${model}, ${tryExec("uname", ["-sr"]) ?? ""}, load ${
      tryExec("cat", ["/proc/loadavg"])?.split(" ").slice(0, 3).join(" ") ?? "?"
    }`,
    client: tryExec(join(BIN, "node"), ["--version"]),
    wsVersion,
    versions,
  };
  const results = {};
  for (const runtime of options.runtimes) {
    results[runtime] = {};
    for (const scenario of options.scenarios) {
      results[runtime][scenario] = {};
      for (const kind of options.kinds) {
        log(`ws.mjs: ${runtime} ${kind} ${scenario}`);
        let server;
        const background = await quietCores(options);
        if (background.server > 0.1 || background.load > 0.1) {
          const note = `${runtime} ${scenario} ${kind}: started on busy cores (server core ${
            pct(background.server)
          }, load core ${pct(background.load)} busy before the run): another process was running`;
          log(`  ${note}`);
          (results.busy ??= []).push(note);
        }
        try {
          server = await startServer(options, runtime, kind);
          results[runtime][scenario][kind] = scenario === "idle"
            ? await runIdle(options, server, options.idleUsed ?? options.idle)
            : await runThroughput(options, server, scenario);
          if (server.exited !== null) {
            throw new Error(`the server exited (${server.exited}): ${server.stderr.trim()}`);
          }
          const r = results[runtime][scenario][kind];
          if (scenario === "idle") {
            log(
              `  ${
                fmt1(r.perSocketKiB)
              } KiB/socket (${r.open} open; RSS ${r.baselineKiB} → ${r.loadedKiB} KiB)`,
            );
          } else {
            for (const t of r) {
              log(
                `  ${fmtInt(t.rate)} msgs/s, server ${
                  fmt1(t.serverCpuMicrosPerMessage)
                } µs/msg (server ${pct(t.serverBusy)}, its core ${pct(t.serverCoreBusy)}), client ${
                  pct(t.clientBusy)
                } (its core ${pct(t.loadCoreBusy)})${t.bad ? `, ${t.bad} bad echoes` : ""}${
                  t.closed ? `, ${t.closed} closed` : ""
                }`,
              );
            }
          }
        } catch (error) {
          log(`  FAILED: ${error.message}`);
          results[runtime][scenario][kind] = { error: error.message.slice(0, 500) };
        } finally {
          if (server) {
            if (server.stderr.trim()) log(`  server stderr: ${server.stderr.trim().slice(0, 500)}`);
            await stopServer(server);
          }
        }
      }
    }
  }
  const markdown = report(info, results, options);
  console.log(markdown);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "ws-latest.md"), `${markdown}\n`);
  writeFileSync(
    join(RESULTS, "ws-latest.json"),
    `${JSON.stringify({ info, options, results }, null, 2)}\n`,
  );
  log(`ws.mjs: wrote ${relative(process.cwd(), join(RESULTS, "ws-latest.md"))}`);
}

// Last, once every constant above is initialized.
if (process.argv[2] === "--worker") await worker(process.argv.slice(3));
else await main();
