/**
 * The command line (the `import.meta.main` region at the bottom of `mod.ts`), run as a program on
 * the runtime running the tests: `deno run -A mod.ts`, `bun mod.ts` or `node mod.ts`, always with
 * `--port 0 --host 127.0.0.1`. The port it bound is read from the line it prints when listening
 * (`Serving … on http://127.0.0.1:PORT/`); raw `node:net` clients then ask it for pages, and SIGTERM
 * must end it with exit code 0.
 *
 * - Without a directory it serves the demo site: `/` and `/about` as HTML, a 404 page for
 *   anything else, 405 for a method other than GET and HEAD.
 * - With `test/fixtures/site` it serves those files, byte for byte, with their content types.
 *
 * Every wait is bounded, and the child is killed (SIGKILL) when a test ends, however it ends.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as nodeNet from "node:net";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  field,
  parseResponses,
  RawClient,
  runtimeName,
  startProcess,
  textOf,
  waitUntil,
} from "./helpers.ts";
import type { ParsedResponse, RunningProcess } from "./helpers.ts";

const MOD = fileURLToPath(new URL("../mod.ts", import.meta.url));
const SITE = fileURLToPath(new URL("./fixtures/site/", import.meta.url));

/** The longest a CLI child may live, whatever happens (it is killed by then). */
const CHILD_LIFETIME_MS = 60_000;
/** How long the CLI may take to print that it listens (Deno compiles mod.ts on a cold cache). */
const LISTEN_MS = 20_000;

/** How this runtime runs a TypeScript file as a program, with `args` after it. */
function programArguments(args: string[]): string[] {
  switch (runtimeName()) {
    case "deno":
      return ["run", "-A", MOD, ...args];
    case "bun":
    case "node": // Node >= 22.18 strips the types itself.
      return [MOD, ...args];
  }
}

/** `text` with every character a regular expression gives a meaning to escaped. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The CLI's line once it listens: `Serving the demo site on http://127.0.0.1:PORT/`. */
const LISTENING = /^Serving (.+) on http:\/\/127\.0\.0\.1:(\d+)\/$/m;

/**
 * Starts `mod.ts` as a program with `args` on this runtime, waits until it says where it listens,
 * runs `body` with that port, then stops it with SIGTERM and expects a clean exit; it is killed in
 * any case.
 */
async function withCli(
  args: string[],
  body: (port: number, served: string, stdout: () => string) => Promise<void>,
): Promise<void> {
  const child: RunningProcess = startProcess(
    process.execPath,
    programArguments(["--port", "0", "--host", "127.0.0.1", ...args]),
    {
      ms: CHILD_LIFETIME_MS,
      env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1" },
    },
  );
  let exited = false;
  child.exited.then(() => exited = true);
  const output = () => `\nstdout:\n${child.stdout}\nstderr:\n${child.stderr}`;
  try {
    await waitUntil(
      () => LISTENING.test(child.stdout) || exited,
      `the CLI to print where it listens${output()}`,
      LISTEN_MS,
    );
    const match = LISTENING.exec(child.stdout);
    assert.ok(match, `the CLI exited without listening${output()}`);
    await body(Number(match[2]), match[1], () => child.stdout);
    child.kill("SIGTERM");
    await waitUntil(() => exited, `the CLI to exit after SIGTERM${output()}`, 5000);
    const exit = await child.exited;
    assert.equal(exit.code, 0, `the CLI's exit code after SIGTERM${output()}`);
    assert.match(exit.stdout, /Shutting down/);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}

/**
 * Starts `mod.ts` as a program with `args` and expects it to refuse to start: exit code 1, the
 * given message on stderr, and no "Serving" line.
 */
async function expectRefusal(args: string[], message: RegExp): Promise<void> {
  const child: RunningProcess = startProcess(
    process.execPath,
    programArguments(["--host", "127.0.0.1", ...args]),
    {
      ms: CHILD_LIFETIME_MS,
      env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1" },
    },
  );
  try {
    const exit = await child.exited;
    const output = `\nstdout:\n${exit.stdout}\nstderr:\n${exit.stderr}`;
    assert.equal(exit.code, 1, `the CLI's exit code${output}`);
    assert.match(exit.stderr, message, output);
    assert.doesNotMatch(exit.stdout, /Serving/, output);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}

/** Sends one request with `Connection: close` and parses the one response (bytes as latin1). */
async function ask(port: number, path: string, method = "GET"): Promise<ParsedResponse> {
  const client = await RawClient.connect(port);
  try {
    await client.write(
      `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
    );
    await client.waitForClose(5000);
    // The raw bytes, not text(): a body must not have its Date-like bytes masked.
    const { responses, rest } = parseResponses(textOf(client.chunks));
    assert.equal(responses.length, 1, `one response to ${method} ${path}: ${client.text()}`);
    assert.equal(rest, "", `nothing after the response to ${method} ${path}`);
    return responses[0];
  } finally {
    client.destroy();
  }
}

describe(`the CLI as a program on ${runtimeName()}`, () => {
  // Bun's default of 5 s per test is too short for starting a runtime on a busy machine.
  const options = { timeout: CHILD_LIFETIME_MS + 10_000 };

  test(
    "the CLI serves the demo site without a directory: /, /about, 404, 405",
    options,
    async () => {
      await withCli([], async (port, served) => {
        assert.equal(served, "the demo site");
        const home = await ask(port, "/");
        assert.equal(home.status, 200);
        assert.equal(field(home, "content-type"), "text/html; charset=utf-8");
        assert.match(home.body, /^<!doctype html>/);
        assert.match(home.body, /<title>Hello from wireserve<\/title>/);
        assert.match(home.body, /<a href="\/about">/);
        const about = await ask(port, "/about");
        assert.equal(about.status, 200);
        assert.equal(field(about, "content-type"), "text/html; charset=utf-8");
        assert.match(about.body, /<title>About<\/title>/);
        const missing = await ask(port, "/no-such-page");
        assert.equal(missing.status, 404);
        assert.equal(field(missing, "content-type"), "text/html; charset=utf-8");
        assert.match(missing.body, /404 Not Found/);
        const posted = await ask(port, "/", "POST");
        assert.equal(posted.status, 405);
        assert.match(field(posted, "allow") ?? "", /\bGET\b/);
      });
    },
  );

  test(
    "the CLI serves a directory: files byte for byte with their content types",
    options,
    async () => {
      const files: Array<[string, string, RegExp]> = [
        ["/", "index.html", /^text\/html/],
        ["/style.css", "style.css", /^text\/css/],
        ["/app.js", "app.js", /^text\/javascript/],
        ["/image.png", "image.png", /^image\/png$/],
      ];
      await withCli([SITE], async (port, served) => {
        assert.equal(served, JSON.stringify(SITE));
        for (const [path, file, type] of files) {
          const response = await ask(port, path);
          assert.equal(response.status, 200, `GET ${path}`);
          assert.match(field(response, "content-type") ?? "", type, `GET ${path}`);
          assert.equal(field(response, "x-content-type-options"), "nosniff", `GET ${path}`);
          const expected = textOf(new Uint8Array(await readFile(SITE + file)));
          assert.ok(response.body === expected, `GET ${path}: the bytes of ${file}`);
        }
        assert.equal((await ask(port, "/no-such-file.txt")).status, 404);
      });
    },
  );

  test(
    "the CLI writes an access log with --log and --log-format, and compresses with --compress",
    options,
    async () => {
      let stdout = () => "";
      await withCli(["--log-format", "json", "--compress", SITE], async (port, _served, output) => {
        stdout = output;
        const client = await RawClient.connect(port);
        try {
          await client.write(
            `GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n` +
              "User-Agent: cli-test\r\nConnection: close\r\n\r\n",
          );
          await client.waitForClose(5000);
          const [response] = parseResponses(textOf(client.chunks)).responses;
          assert.equal(response.status, 200);
          assert.equal(field(response, "content-encoding"), "gzip");
          assert.equal(field(response, "vary"), "Accept-Encoding");
        } finally {
          client.destroy();
        }
        assert.equal((await ask(port, "/missing")).status, 404);
        await waitUntil(
          () => output().split("\n").filter((l) => l.startsWith("{")).length === 2,
          "two log lines",
        );
      });
      const lines = stdout().split("\n").filter((line) => line.startsWith("{")).map((line) =>
        JSON.parse(line)
      );
      assert.deepEqual(lines.map((entry) => [entry.target, entry.status, entry.userAgent]), [
        ["/app.js", 200, "cli-test"],
        ["/missing", 404, null],
      ]);
      assert.ok(lines[0].bytes < 2454, `compressed: ${lines[0].bytes} bytes of body`);
      await withCli(["--log"], async (port, _served, output) => {
        await ask(port, "/about");
        await waitUntil(
          () => /"GET \/about HTTP\/1\.1" 200 \d+ "-" "-"$/m.test(output()),
          `a Combined line${output()}`,
        );
      });
    },
  );

  test(
    "the CLI serves a changed file within its cache's second, and at once with --no-cache",
    options,
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "wireserve-cli-cache-"));
      const file = join(dir, "page.txt");
      let version = 0;
      const change = async () => {
        version++;
        await writeFile(file, `version ${version}`);
        // A new mtime each time, whatever the file system's clock resolution.
        const mtime = new Date(Date.UTC(2024, 0, 1, 0, 0, version));
        await utimes(file, mtime, mtime);
      };
      try {
        await change();
        await withCli([dir], async (port) => {
          assert.equal((await ask(port, "/page.txt")).body, "version 1");
          await change();
          // The default cache trusts what it learnt for a second: bounded polling, not a sleep.
          const started = Date.now();
          let body = "";
          while (Date.now() - started < 5000) {
            body = (await ask(port, "/page.txt")).body;
            if (body === "version 2") break;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          assert.equal(body, "version 2", "the change is served within the cache's interval");
        });
        await withCli(["--no-cache", dir], async (port) => {
          assert.equal((await ask(port, "/page.txt")).body, "version 2");
          await change();
          assert.equal((await ask(port, "/page.txt")).body, "version 3");
          await change();
          assert.equal((await ask(port, "/page.txt")).body, "version 4");
        });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  test("the CLI refuses a directory that does not exist", options, async () => {
    const missing = SITE + "no-such-directory";
    await expectRefusal(
      ["--port", "0", missing],
      new RegExp(`Cannot start: ${escapeRegExp(JSON.stringify(missing))} does not exist`),
    );
  });

  test("the CLI refuses a file given as the directory", options, async () => {
    const file = SITE + "index.html";
    await expectRefusal(
      ["--port", "0", file],
      new RegExp(`Cannot start: ${escapeRegExp(JSON.stringify(file))} is not a directory`),
    );
  });

  test("the CLI refuses a port in use: exit code 1, one line that says so", options, async () => {
    const taken = nodeNet.createServer();
    await new Promise<void>((resolve, reject) => {
      taken.once("error", reject);
      taken.listen(0, "127.0.0.1", resolve);
    });
    try {
      const { port } = taken.address() as nodeNet.AddressInfo;
      await expectRefusal(
        ["--port", String(port)],
        new RegExp(`Cannot start: Cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`),
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
