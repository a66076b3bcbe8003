#!/usr/bin/env node
// The project's one test command: runs the test file(s) on Deno, Bun and Node, one runtime after
// the other, streams each runtime's own output live, reads each runtime's summary, and ends with
// one plain line `N passed, N failed` summed over the runtimes.
//
//   node .ci/test.mjs                        all three runtimes on server_test.ts
//   node .ci/test.mjs deno node              only these runtimes (any of deno, bun, node)
//   node .ci/test.mjs bun test/x_test.ts     other test files instead of server_test.ts
//   node .ci/test.mjs --filter NAME          only tests whose name matches (see --help)
//   node .ci/test.mjs node -- --test-only    arguments after `--` go to each runtime's runner
//
// It uses the runtimes installed by npm in node_modules/.bin, never the ones on PATH, so it works
// the same when started by a system Node that cannot run TypeScript itself. Plain JavaScript, no
// dependencies: it has to run before anything else is known to work.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(ROOT, "node_modules", ".bin");
const RUNTIMES = ["deno", "bun", "node"];
const DEFAULT_FILES = ["server_test.ts"];
/** Hard limit for one runtime's whole run, so CI can never hang. */
const RUN_TIMEOUT_MS = Number(process.env.WIRESERVE_TEST_TIMEOUT_MS) || 8 * 60_000;
/** Bun's default of 5 s per test is too short for socket tests on a busy 2-core machine. */
const BUN_TEST_TIMEOUT_MS = 30_000;
/** How much of a runtime's output is kept for reading its summary (the end is what matters). */
const KEEP_OUTPUT_CHARS = 4 * 1024 * 1024;

const HELP = `usage: node .ci/test.mjs [deno|bun|node ...] [FILE ...] [--filter NAME] [-- ARGS ...]

Runs FILE (default: ${DEFAULT_FILES.join(" ")}) on each chosen runtime (default: all, in the
order deno, bun, node), one after the other, and ends with the line "N passed, N failed".
Exits non-zero if any test failed, a runtime failed or timed out, or a summary was unreadable.

  --filter NAME   run only tests whose name matches NAME (a regular expression on Bun and
                  Node; on Deno "--filter", which matches top-level names only, so a name
                  inside a describe() block selects nothing there)
  -- ARGS        passed unchanged to every chosen runtime's test runner
  WIRESERVE_TEST_TIMEOUT_MS   hard limit per runtime (default ${8 * 60_000})`;

// ---------------------------------------------------------------------------------------------
// Arguments

const chosen = [];
const files = [];
const passThrough = [];
let filter;
{
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      passThrough.push(...args.slice(i + 1));
      break;
    } else if (arg === "-h" || arg === "--help") {
      console.log(HELP);
      process.exit(0);
    } else if (arg === "--filter") {
      filter = args[++i];
      if (filter === undefined) usage("--filter needs a value");
    } else if (arg.startsWith("--filter=")) {
      filter = arg.slice("--filter=".length);
    } else if (RUNTIMES.includes(arg)) {
      if (!chosen.includes(arg)) chosen.push(arg);
    } else if (!arg.startsWith("-") && existsSync(resolve(ROOT, arg))) {
      files.push(arg);
    } else {
      usage(`unknown argument: ${arg}`);
    }
  }
  if (chosen.length === 0) chosen.push(...RUNTIMES);
  if (files.length === 0) files.push(...DEFAULT_FILES);
}

function usage(message) {
  console.error(`test.mjs: ${message}\n\n${HELP}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// How to run each runtime, and how to read its summary

/**
 * @typedef {{ passed: number, failed: number, note?: string } | null} Counts
 * @typedef {{ cmd: string, args: string[], read: (output: string) => Counts, cleanup?: () => void }} Plan
 */

/** @type {Record<string, () => Plan>} */
const PLANS = {
  deno() {
    // The JUnit report (written besides the normal console report) lists every test and every
    // step, so Deno's count can be made the same as Bun's and Node's: leaf tests, not groups.
    const dir = mkdtempSync(join(tmpdir(), "wireserve-deno-"));
    const junit = join(dir, "junit.xml");
    const args = ["test", "-A", "--no-check", `--junit-path=${junit}`];
    if (filter !== undefined) args.push(`--filter=${filter}`);
    return {
      cmd: "deno",
      args: [...args, ...passThrough, ...files],
      read: (output) => readDeno(output, junit),
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  },
  bun() {
    // bunfig.toml's [test] timeout is ignored by bun 1.4.5, so the per-test timeout is a flag.
    const args = ["test", `--timeout=${BUN_TEST_TIMEOUT_MS}`];
    if (filter !== undefined) args.push(`--test-name-pattern=${filter}`);
    // `bun test NAME` treats NAME as a substring filter on paths; a leading ./ makes it a path.
    const paths = files.map((f) => (f.startsWith("/") || f.startsWith(".") ? f : `./${f}`));
    return { cmd: "bun", args: [...args, ...passThrough, ...paths], read: readBun };
  },
  node() {
    // Node >= 22.18 strips TypeScript types by default.
    const args = ["--test", "--test-reporter=spec"];
    if (filter !== undefined) args.push(`--test-name-pattern=${filter}`);
    return { cmd: "node", args: [...args, ...passThrough, ...files], read: readNode };
  },
};

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

/** The last match of `re` (which must have the g and m flags) in `text`, or undefined. */
function lastMatch(text, re) {
  let last;
  for (const m of text.matchAll(re)) last = m;
  return last;
}

/**
 * Deno's summary line counts top-level tests and steps apart:
 *   `ok | 3 passed | 0 failed (12ms)`
 *   `FAILED | 1 passed (2 steps) | 1 failed (1 step) | 2 ignored (4ms)`
 * A describe() group is a top-level test and its tests are steps, so the JUnit report is used for
 * leaf counts; the summary still catches failures that belong to no test (an uncaught error
 * from the module), which only it reports.
 */
function readDeno(output, junitPath) {
  const m = lastMatch(
    output,
    /^(ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed(?: \(\d+ steps?\))?/gm,
  );
  if (!m) return null;
  const summaryPassed = Number(m[2]);
  const summaryFailed = Number(m[3]);
  let xml;
  try {
    xml = readFileSync(junitPath, "utf8");
  } catch {
    return {
      passed: summaryPassed,
      failed: summaryFailed,
      note: "no JUnit report: counted top-level tests only",
    };
  }
  const cases = [];
  const caseRe = /<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const c of xml.matchAll(caseRe)) {
    const name = /\bname="([^"]*)"/.exec(c[1]);
    const body = c[3] ?? "";
    cases.push({
      name: name ? decodeXml(name[1]) : "",
      failed: /<(failure|error)\b/.test(body),
      skipped: /<skipped\b/.test(body),
    });
  }
  // Steps are named "group > step": a case that prefixes another is a group, not a leaf.
  const isParent = (c) => cases.some((d) => d !== c && d.name.startsWith(`${c.name} > `));
  const hasFailedChild = (c) =>
    cases.some((d) => d !== c && d.failed && d.name.startsWith(`${c.name} > `));
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    if (isParent(c)) {
      if (c.failed && !hasFailedChild(c)) failed++; // e.g. a failing hook
    } else if (c.failed) failed++;
    else if (!c.skipped) passed++;
  }
  return { passed, failed: Math.max(failed, summaryFailed) };
}

function decodeXml(s) {
  return s.replace(/&(lt|gt|amp|quot|apos|#x[0-9a-fA-F]+|#\d+);/g, (_, e) => {
    switch (e) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
        return "'";
      default:
        return String.fromCodePoint(
          e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10),
        );
    }
  });
}

/** Bun (on stderr): ` 3 pass`, ` 1 skip`, ` 1 todo`, ` 1 fail`, ` 1 error`, `Ran 6 tests across 1 file.` */
function readBun(output) {
  const pass = lastMatch(output, /^\s*(\d+) pass$/gm);
  const fail = lastMatch(output, /^\s*(\d+) fail$/gm);
  if (!pass || !fail) return null;
  const errors = lastMatch(output, /^\s*(\d+) errors?$/gm);
  return {
    passed: Number(pass[1]),
    failed: Math.max(Number(fail[1]), errors ? Number(errors[1]) : 0),
  };
}

/** Node's spec reporter: `ℹ tests 6`, `ℹ pass 3`, `ℹ fail 1`, `ℹ cancelled 0`, `ℹ skipped 1`, … */
function readNode(output) {
  const pass = lastMatch(output, /^ℹ pass (\d+)$/gm);
  const fail = lastMatch(output, /^ℹ fail (\d+)$/gm);
  if (!pass || !fail) return null;
  const cancelled = lastMatch(output, /^ℹ cancelled (\d+)$/gm);
  return {
    passed: Number(pass[1]),
    failed: Number(fail[1]) + (cancelled ? Number(cancelled[1]) : 0),
  };
}

// ---------------------------------------------------------------------------------------------
// Running

let current; // the child process running now, for signal forwarding
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    interrupted = true;
    if (current) killGroup(current, signal);
  });
}

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal); // the whole process group: test workers, servers, curl
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Spawns one runtime, mirrors its output, and resolves when it has exited (or was killed). */
function run(plan) {
  const childEnv = { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1" };
  childEnv.DO_NOT_TRACK ??= "1"; // no telemetry or crash-report uploads from Bun
  if (process.stdout.isTTY && childEnv.NO_COLOR === undefined) childEnv.FORCE_COLOR ??= "1";
  else if (!process.stdout.isTTY && childEnv.FORCE_COLOR === undefined) childEnv.NO_COLOR ??= "1";

  return new Promise((done) => {
    let output = "";
    let timedOut = false;
    let spawnError;
    const keep = (chunk) => {
      output += chunk.toString("utf8");
      if (output.length > 2 * KEEP_OUTPUT_CHARS) output = output.slice(-KEEP_OUTPUT_CHARS);
    };
    const child = spawn(join(BIN, plan.cmd), plan.args, {
      cwd: ROOT,
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // own process group, so a timeout can end everything it started
    });
    current = child;
    child.stdout.on("data", (c) => {
      process.stdout.write(c);
      keep(c);
    });
    child.stderr.on("data", (c) => {
      process.stderr.write(c);
      keep(c);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      console.error(`\n!!! ${plan.cmd}: no result after ${RUN_TIMEOUT_MS / 1000} s, killing it`);
      killGroup(child, "SIGTERM");
      setTimeout(() => killGroup(child, "SIGKILL"), 10_000).unref();
    }, RUN_TIMEOUT_MS);

    let finished = false;
    const finish = (code, signal) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      current = undefined;
      // Nothing a test run started (a server, a curl) may outlive it.
      if (!spawnError) killGroup(child, "SIGKILL");
      done({ code, signal, timedOut, spawnError, output: output.replace(ANSI, "") });
    };
    child.on("error", (err) => {
      spawnError = err;
      finish(null, null);
    });
    child.on("close", (code, signal) => finish(code, signal));
    child.on("exit", (code, signal) => {
      // Something it started may still hold the pipes open: give it a moment, then end it.
      setTimeout(() => {
        if (finished) return;
        killGroup(child, "SIGKILL");
        child.stdout.destroy();
        child.stderr.destroy();
        finish(code, signal);
      }, 3_000).unref();
    });
  });
}

function quote(arg) {
  return /^[\w./:=@+-]+$/.test(arg) ? arg : JSON.stringify(arg);
}

const results = [];
for (const name of chosen) {
  if (interrupted) break;
  const plan = PLANS[name]();
  const shown = [plan.cmd, ...plan.args].map(quote).join(" ");
  console.log(`\n===== ${name}: ${shown}`);
  const started = Date.now();
  const r = await run(plan);
  const seconds = (Date.now() - started) / 1000;
  let counts = null;
  try {
    counts = r.spawnError ? null : plan.read(r.output);
  } catch (err) {
    console.error(`test.mjs: could not read ${name}'s summary: ${err}`);
  } finally {
    plan.cleanup?.();
  }

  const notes = [];
  const passed = counts?.passed ?? 0;
  let failed = counts?.failed ?? 0;
  if (counts?.note) notes.push(counts.note);
  const status = r.spawnError
    ? "not started"
    : r.signal
    ? `killed by ${r.signal}`
    : `exit code ${r.code}`;
  if (r.spawnError) {
    notes.push(`could not start ${join(BIN, plan.cmd)}: ${r.spawnError.message}`);
  } else if (r.timedOut) {
    notes.push(`no result after ${RUN_TIMEOUT_MS / 1000} s, killed`);
  } else if (!counts) {
    notes.push("no summary found in its output");
  } else if (passed + failed === 0) {
    notes.push(filter === undefined ? "ran no test" : "no test matched the filter");
  }
  // Anything that went wrong without a failed test to show for it still counts as one.
  const wrong = r.spawnError || r.timedOut || !counts || r.code !== 0 ||
    (passed + failed === 0 && filter === undefined);
  if (wrong && failed === 0) {
    notes.push(
      counts && !r.timedOut && passed > 0
        ? `${status} with no failed test: counted as 1 failed`
        : "counted as 1 failed",
    );
    failed = 1;
  }
  results.push({ name, passed, failed, seconds, status, notes, ok: failed === 0 && r.code === 0 });
}

console.log("\n===== summary");
for (const r of results) {
  const notes = r.notes.length ? `  (${r.notes.join("; ")})` : "";
  console.log(
    `  ${r.ok ? "ok    " : "FAILED"} ${r.name.padEnd(5)} pass ${String(r.passed).padStart(4)}` +
      `  fail ${String(r.failed).padStart(3)}  ${
        r.seconds.toFixed(1).padStart(6)
      } s  ${r.status}${notes}`,
  );
}
if (interrupted) console.log("  interrupted: remaining runtimes not run");
const totalPassed = results.reduce((n, r) => n + r.passed, 0);
const totalFailed = results.reduce((n, r) => n + r.failed, 0);
console.log(`${totalPassed} passed, ${totalFailed} failed`);
process.exitCode = interrupted ? 130 : results.every((r) => r.ok) ? 0 : 1;
