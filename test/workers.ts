/**
 * Several servers on one port: `serve({ reusePort: true })` in one thread, `startWorkers` with
 * worker threads, and the command line's `--workers`, `--unix` and `--proxy-protocol`.
 *
 * - reusePort: two servers in this process bind one port (on each transport the runtime has) and
 *   the kernel hands connections to both; Deno's own transport needs `--unstable-net`, which the
 *   test run does not pass, so there it must refuse with a TypeError, and the default transport
 *   (node:net on Deno then) must share the port.
 * - startWorkers: workers run `test/fixtures/worker_app.ts`, which answers
 *   `{"worker":ID,"thread":THREAD_ID}`, so every response says which worker answered and which
 *   generation of it (a restarted worker keeps its number in a new thread). A worker killed by an
 *   uncaught error is replaced while the other worker's keep-alive connections go on being
 *   answered; a shutdown lets the requests in flight on every worker finish; a module that throws
 *   while loading rejects `ready` and ends the pool.
 * - the command line as a program on this runtime, as in `test/cli.ts`.
 *
 * A pool's workers must all be given the same port (each binding port 0 would get a port of its
 * own), so these tests pick one with {@linkcode freePort}.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { serve, startWorkers } from "../mod.ts";
import type { LogEntry, NetAddr, Server, TransportName, WorkerPool } from "../mod.ts";
import {
  delay,
  field,
  freePort,
  parseResponses,
  RawClient,
  runCommand,
  runtimeName,
  startProcess,
  textOf,
  textResponse,
  transportsHere,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import type { ParsedResponse, RunningProcess } from "./helpers.ts";

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));
const WORKER_APP = new URL("./fixtures/worker_app.ts", import.meta.url);
const WORKER_BROKEN = new URL("./fixtures/worker_broken.ts", import.meta.url);
const BROKEN_POOL = fileURLToPath(new URL("./fixtures/worker_broken_pool.ts", import.meta.url));

/** How many connections a test opens to see both listeners of a port. */
const SPREAD_CONNECTIONS = 40;
/** How long a pool may take to start its workers (each loads mod.ts; Deno compiles it). */
const POOL_READY_MS = 20_000;
/** The longest a child process may live, whatever happens (it is killed by then). */
const CHILD_LIFETIME_MS = 60_000;
/** How long a child may take to print that it listens (Deno compiles mod.ts on a cold cache). */
const LISTEN_MS = 20_000;
/** Bun's default of 5 s per test is too short for starting threads and runtimes on 2 cores. */
const SLOW_TEST = { timeout: CHILD_LIFETIME_MS + 10_000 };

//#region Helpers

/** Which worker, and which generation of it, answered: the body of `worker_app.ts`. */
interface WorkerAnswer {
  worker: number;
  thread: number;
}

/** The worker and thread in a response of `worker_app.ts`; fails the test for anything else. */
function workerAnswer(response: ParsedResponse, what: string): WorkerAnswer {
  assert.equal(response.status, 200, `${what}: ${JSON.stringify(response)}`);
  const answer = JSON.parse(response.body) as WorkerAnswer;
  assert.equal(typeof answer.worker, "number", `${what}: ${response.body}`);
  assert.equal(typeof answer.thread, "number", `${what}: ${response.body}`);
  return answer;
}

/** Sends one `GET path` with `Connection: close` on a new connection; returns the one response. */
async function askOnce(port: number, path = "/"): Promise<ParsedResponse> {
  const client = await RawClient.connect(port);
  try {
    await client.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    await client.waitForClose(5000, `the answer to GET ${path}`);
    const { responses } = parseResponses(textOf(client.chunks));
    assert.equal(responses.length, 1, `one response to GET ${path}: ${client.text()}`);
    return responses[0];
  } finally {
    client.destroy();
  }
}

/**
 * A keep-alive connection that sends one request at a time and waits for its response, counting
 * the responses so far in everything received.
 */
class KeepAlive {
  readonly client: RawClient;
  #answered = 0;

  constructor(client: RawClient) {
    this.client = client;
  }

  static async open(port: number): Promise<KeepAlive> {
    return new KeepAlive(await RawClient.connect(port));
  }

  /** Every complete response received on this connection so far. */
  responses(): ParsedResponse[] {
    return parseResponses(textOf(this.client.chunks)).responses.filter((r) => r.complete);
  }

  /** Sends `GET path` and resolves with its response, which must come within `ms`. */
  async ask(path: string, ms = 5000): Promise<ParsedResponse> {
    const before = this.#answered;
    await this.client.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await waitUntil(
      () => this.responses().length > before || this.client.done,
      `the answer to GET ${path} on a kept connection; received ${this.client.text()}`,
      ms,
    );
    const responses = this.responses();
    assert.ok(responses.length > before, `GET ${path}: closed unanswered: ${this.client.text()}`);
    this.#answered = responses.length;
    return responses[before];
  }

  destroy(): void {
    this.client.destroy();
  }
}

/**
 * Opens keep-alive connections to `port` and asks each `GET /` once to learn which worker holds
 * it, until every worker in `workers` holds at least `each` of them (at most 60 connections:
 * the kernel spreads them by a hash of the addresses, so two workers are both seen long before).
 */
async function connectionsByWorker(
  port: number,
  workers: readonly number[],
  each: number,
  opened: KeepAlive[],
): Promise<Map<number, Array<{ connection: KeepAlive; thread: number }>>> {
  const held = new Map(
    workers.map((id) => [id, [] as Array<{ connection: KeepAlive; thread: number }>]),
  );
  const enough = () => [...held.values()].every((list) => list.length >= each);
  for (let attempt = 0; attempt < 60 && !enough(); attempt++) {
    const connection = await KeepAlive.open(port);
    opened.push(connection);
    const answer = workerAnswer(await connection.ask("/"), "GET / on a new connection");
    held.get(answer.worker)?.push({ connection, thread: answer.thread });
  }
  assert.ok(enough(), `${each} connections to each worker of ${workers}: got ${[...held]}`);
  return held;
}

/**
 * Runs `body` with a pool of `count` workers of `worker_app.ts` on a free port, then shuts the pool
 * down (bounded); every connection the body pushed onto `opened` is destroyed first.
 */
async function withPool(
  count: number,
  body: (pool: WorkerPool, port: number, logged: LogEntry[], opened: KeepAlive[]) => Promise<void>,
  data: Record<string, unknown> = {},
): Promise<void> {
  const port = await freePort();
  const logged: LogEntry[] = [];
  const opened: KeepAlive[] = [];
  const pool = startWorkers({
    module: WORKER_APP,
    count,
    data: { port, ...data },
    shutdownTimeout: 5000,
    signals: false,
    onLog: (entry) => logged.push(entry),
  });
  try {
    await body(pool, port, logged, opened);
  } finally {
    for (const connection of opened) connection.destroy();
    await withTimeout(pool.shutdown(), 10_000, "WorkerPool.shutdown()");
  }
}

/** How this runtime runs a TypeScript file as a program, with `args` after it. */
function programArguments(file: string, args: string[]): string[] {
  return runtimeName() === "deno" ? ["run", "-A", file, ...args] : [file, ...args];
}

/** Starts `file` as a program on this runtime with `args`, killed after CHILD_LIFETIME_MS. */
function startProgram(file: string, args: string[]): RunningProcess {
  return startProcess(process.execPath, programArguments(file, args), {
    ms: CHILD_LIFETIME_MS,
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1" },
  });
}

/**
 * Starts `mod.ts` as a program with `args`, waits until stdout matches `listening`, runs `body`,
 * then sends SIGTERM and expects exit code 0; the child is killed in any case.
 */
async function withCli(
  args: string[],
  listening: RegExp,
  body: (child: RunningProcess) => Promise<void>,
): Promise<void> {
  const child = startProgram(MOD, args);
  let exited = false;
  child.exited.then(() => exited = true);
  const output = () => `\nstdout:\n${child.stdout}\nstderr:\n${child.stderr}`;
  try {
    await waitUntil(
      () => listening.test(child.stdout) || exited,
      `the CLI to print ${listening}${output()}`,
      LISTEN_MS,
    );
    assert.match(child.stdout, listening, `the CLI exited without listening${output()}`);
    await body(child);
    child.kill("SIGTERM");
    await waitUntil(() => exited, `the CLI to exit after SIGTERM${output()}`, 10_000);
    assert.equal((await child.exited).code, 0, `the CLI's exit code after SIGTERM${output()}`);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}

//#endregion
//#region reusePort

/** Whether Deno was started with `--unstable-net` (its unstable network APIs exist only then). */
const DENO_UNSTABLE_NET =
  typeof (globalThis as { Deno?: { listenDatagram?: unknown } }).Deno?.listenDatagram ===
    "function";

/**
 * Serves two servers on one port with reusePort (over `transport`, or the default when
 * undefined), each answering its own name, and expects both names among SPREAD_CONNECTIONS
 * connections.
 */
async function expectSharedPort(transport: TransportName | undefined): Promise<void> {
  const servers: Server[] = [];
  try {
    const first = serve(
      { hostname: "127.0.0.1", port: 0, reusePort: true, transport, shutdownTimeout: 1000 },
      () => textResponse("first"),
    );
    servers.push(first);
    const { port } = await withTimeout(first.ready, 5000, "the first server's ready");
    const second = serve(
      { hostname: "127.0.0.1", port, reusePort: true, transport, shutdownTimeout: 1000 },
      () => textResponse("second"),
    );
    servers.push(second);
    const addr: NetAddr = await withTimeout(second.ready, 5000, "the second server's ready");
    assert.equal(addr.port, port);
    const seen = new Map<string, number>();
    for (let i = 0; i < SPREAD_CONNECTIONS; i++) {
      const response = await askOnce(port);
      assert.equal(response.status, 200);
      seen.set(response.body, (seen.get(response.body) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort(), ["first", "second"], `answers: ${[...seen]}`);
  } finally {
    await Promise.all(servers.map((server) => withTimeout(server.shutdown(), 5000, "shutdown")));
  }
}

describe(`serve({ reusePort: true }) on ${runtimeName()}`, () => {
  for (const transport of transportsHere()) {
    if (transport === "deno" && !DENO_UNSTABLE_NET) {
      test("serve over the deno transport rejects reusePort without --unstable-net", async () => {
        // The transport throws when serve() calls it; serve() turns a failure to listen into a
        // rejected `ready` (the same on every runtime, as node:net fails asynchronously).
        const server = serve(
          { hostname: "127.0.0.1", port: 0, reusePort: true, transport: "deno" },
          () => textResponse("never"),
        );
        await assert.rejects(
          withTimeout(server.ready, 5000, "ready"),
          (error: unknown) => error instanceof TypeError && /--unstable-net/.test(error.message),
        );
        await withTimeout(server.finished, 5000, "finished after a failure to listen");
      });
      continue;
    }
    test(`two servers share a port over the ${transport} transport`, async () => {
      await expectSharedPort(transport);
    });
  }

  test("two servers share a port over the default transport (node:net on Deno without the flag)", async () => {
    await expectSharedPort(undefined);
  });

  test("serve refuses reusePort for a Unix socket with a TypeError", () => {
    assert.throws(
      () => serve({ path: join(tmpdir(), "never.sock"), reusePort: true }, () => textResponse("")),
      TypeError,
    );
  });
});

//#endregion
//#region startWorkers

describe(`startWorkers on ${runtimeName()}`, () => {
  test("startWorkers starts two workers on one port, and both answer", SLOW_TEST, async () => {
    await withPool(2, async (pool, port) => {
      assert.equal(pool.size, 2);
      const addrs = await withTimeout(pool.ready, POOL_READY_MS, "WorkerPool.ready");
      assert.equal(addrs.length, 2);
      for (const addr of addrs) {
        assert.deepEqual(addr, { hostname: "127.0.0.1", port, transport: "tcp" });
      }
      const seen = new Set<number>();
      const threads = new Set<number>();
      for (let i = 0; i < SPREAD_CONNECTIONS; i++) {
        const answer = workerAnswer(await askOnce(port), `connection ${i}`);
        seen.add(answer.worker);
        threads.add(answer.thread);
      }
      assert.deepEqual([...seen].sort(), [0, 1]);
      assert.equal(threads.size, 2, "one thread per worker");
    });
  });

  test(
    "startWorkers replaces a worker that dies while the other keeps its kept connections",
    SLOW_TEST,
    async () => {
      await withPool(2, async (pool, port, logged, opened) => {
        await withTimeout(pool.ready, POOL_READY_MS, "WorkerPool.ready");
        // Worker 0 dies; worker 1 holds three keep-alive connections meanwhile.
        const victim = 0;
        const other = 1;
        const held = await connectionsByWorker(port, [victim, other], 3, opened);
        const [{ connection: crashing, thread: victimThread }] = held.get(victim)!;
        const kept = held.get(other)!;

        // Load on worker 1's connections, one request after another on each, until worker 0's
        // replacement has answered (at most 200 requests a connection).
        let replaced = false;
        const load = kept.map(async ({ connection, thread }, index) => {
          const answers: WorkerAnswer[] = [];
          for (let i = 0; i < 200 && !replaced; i++) {
            answers.push(workerAnswer(await connection.ask("/"), `kept connection ${index}`));
            await delay(5);
          }
          for (const answer of answers) assert.deepEqual(answer, { worker: other, thread });
          return answers.length;
        });

        workerAnswer(await crashing.ask("/crash"), "GET /crash");
        await waitUntil(() => logged.length > 0, "the pool to log the dead worker", 5000);
        assert.equal(logged[0].level, "error");
        assert.match(logged[0].message, new RegExp(`worker ${victim} died`));
        assert.ok(logged[0].error instanceof Error, "the entry carries the worker's error");

        // New connections reach worker 0 again once its new thread listens.
        let replacement: WorkerAnswer | undefined;
        for (let i = 0; i < 200 && replacement === undefined; i++) {
          const answer = workerAnswer(await askOnce(port), "GET / after the crash");
          if (answer.worker === victim) {
            assert.notEqual(answer.thread, victimThread, "a new thread, not the dead one");
            replacement = answer;
          } else await delay(10);
        }
        replaced = true;
        assert.ok(replacement, `worker ${victim} answered again after the crash`);
        const counts = await withTimeout(Promise.all(load), 10_000, "the kept connections");
        for (const count of counts) assert.ok(count > 0);
        assert.equal(logged.length, 1, `one death logged: ${logged.map((e) => e.message)}`);
      });
    },
  );

  test(
    "startWorkers shutdown lets the requests in flight on every worker finish",
    SLOW_TEST,
    async () => {
      const port = await freePort();
      const opened: KeepAlive[] = [];
      const pool = startWorkers({
        module: WORKER_APP,
        count: 2,
        data: { port, slowMs: 400 },
        shutdownTimeout: 5000,
        signals: false,
        onLog: () => {},
      });
      try {
        await withTimeout(pool.ready, POOL_READY_MS, "WorkerPool.ready");
        const held = await connectionsByWorker(port, [0, 1], 3, opened);
        const slow = [...held].flatMap(([worker, list]) =>
          list.map(({ connection, thread }) => ({ worker, thread, connection }))
        );
        const answers = slow.map(({ connection }) =>
          connection.ask("/slow", 10_000).then((response) => ({ response, at: Date.now() }))
        );
        await delay(100); // the requests have reached their handlers, which answer 400 ms after they came
        const shutdownAt = Date.now();
        const finished = pool.shutdown();
        const answered = await withTimeout(Promise.all(answers), 10_000, "the slow requests");
        answered.forEach(({ response, at }, i) => {
          const { worker, thread } = slow[i];
          assert.deepEqual(workerAnswer(response, `GET /slow ${i}`), { worker, thread });
          assert.equal(field(response, "connection"), "close", "the last answer before shutdown");
          assert.ok(at >= shutdownAt, `GET /slow ${i} was answered after shutdown() was called`);
        });
        await withTimeout(finished, 10_000, "WorkerPool.shutdown()");
        await withTimeout(pool.finished, 1000, "WorkerPool.finished");
      } finally {
        for (const connection of opened) connection.destroy();
        await withTimeout(pool.shutdown(), 10_000, "WorkerPool.shutdown()");
      }
    },
  );

  test(
    "startWorkers rejects ready and finishes when the module throws while loading",
    SLOW_TEST,
    async () => {
      const logged: LogEntry[] = [];
      const pool = startWorkers({
        module: WORKER_BROKEN,
        count: 2,
        signals: false,
        onLog: (entry) => logged.push(entry),
      });
      await assert.rejects(
        withTimeout(pool.ready, POOL_READY_MS, "WorkerPool.ready"),
        (error: unknown) => error instanceof Error && /on purpose/.test(error.message),
      );
      await withTimeout(pool.finished, 5000, "WorkerPool.finished");
      assert.deepEqual(logged, [], "a worker that never listened is not restarted");
    },
  );

  test(
    "startWorkers leaves no timer behind when its only worker fails to load",
    SLOW_TEST,
    async () => {
      // The pool's finished resolves at once; the program must then end, not wait out the
      // shutdown timer (shutdownTimeout + 1 s, 11 s by default) meant for workers still running.
      const child = startProgram(BROKEN_POOL, []);
      try {
        await waitUntil(
          () => child.stdout.includes("finished"),
          `the pool to finish\nstdout:\n${child.stdout}\nstderr:\n${child.stderr}`,
          LISTEN_MS,
        );
        const finishedAt = Date.now();
        const exit = await child.exited;
        assert.match(exit.stdout, /ready rejected/);
        assert.equal(exit.code, 0, `stderr:\n${exit.stderr}`);
        const lingered = Date.now() - finishedAt;
        assert.ok(lingered < 3000, `the program lingered ${lingered} ms after the pool finished`);
      } finally {
        child.kill("SIGKILL");
        await child.exited;
      }
    },
  );
});

//#endregion
//#region CLI

describe(`the CLI's --workers, --unix and --proxy-protocol on ${runtimeName()}`, () => {
  test(
    "mod.ts --workers 2 serves /about from two workers and exits 0 on SIGTERM",
    SLOW_TEST,
    async () => {
      const port = await freePort();
      const listening = new RegExp(
        `^Serving the demo site on http://127\\.0\\.0\\.1:${port}/ with 2 workers$`,
        "m",
      );
      await withCli(
        ["--workers", "2", "--port", String(port), "--host", "127.0.0.1"],
        listening,
        async () => {
          for (let i = 0; i < 10; i++) {
            const about = await askOnce(port, "/about");
            assert.equal(about.status, 200);
            assert.match(about.body, /<title>About<\/title>/);
          }
        },
      );
    },
  );

  test(
    "mod.ts --unix serves over the socket file and removes it on SIGTERM",
    SLOW_TEST,
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "wireserve-unix-"));
      const socket = join(dir, "cli.sock");
      try {
        const listening = new RegExp(
          `^Serving the demo site on unix:${socket.replace(/[.]/g, "\\.")}$`,
          "m",
        );
        await withCli(["--unix", socket], listening, async () => {
          const out = await runCommand("curl", [
            "--silent",
            "--show-error",
            "--include",
            "--max-time",
            "10",
            "--unix-socket",
            socket,
            "http://localhost/about",
          ]);
          assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
          assert.match(out, /<title>About<\/title>/);
        });
        await assert.rejects(
          stat(socket),
          (error: unknown) => (error as { code?: string }).code === "ENOENT",
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  test("mod.ts --workers 2 --unix refuses to start with exit code 2", SLOW_TEST, async () => {
    const child = startProgram(MOD, ["--workers", "2", "--unix", join(tmpdir(), "never.sock")]);
    try {
      const exit = await child.exited;
      const output = `\nstdout:\n${exit.stdout}\nstderr:\n${exit.stderr}`;
      assert.equal(exit.code, 2, `the CLI's exit code${output}`);
      assert.match(exit.stderr, /^Cannot start: --workers/m, output);
      assert.doesNotMatch(exit.stdout, /Serving/, output);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  });

  test(
    "mod.ts --proxy-protocol closes a request without the header and serves curl --haproxy-protocol",
    SLOW_TEST,
    async () => {
      const listening = /^Serving the demo site on http:\/\/127\.0\.0\.1:(\d+)\/$/m;
      await withCli(
        ["--port", "0", "--host", "127.0.0.1", "--proxy-protocol", "127.0.0.1"],
        listening,
        async (child) => {
          const port = Number(listening.exec(child.stdout)![1]);
          const plain = await RawClient.connect(port);
          try {
            await plain.write(
              "GET /about HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            await plain.waitForClose(5000, "the server to close a connection without the header");
            assert.equal(plain.bytesReceived, 0, `no bytes: ${plain.text()}`);
          } finally {
            plain.destroy();
          }
          const out = await runCommand("curl", [
            "--silent",
            "--show-error",
            "--include",
            "--max-time",
            "10",
            "--haproxy-protocol",
            `http://127.0.0.1:${port}/about`,
          ]);
          assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
          assert.match(out, /<title>About<\/title>/);
        },
      );
    },
  );
});

//#endregion
