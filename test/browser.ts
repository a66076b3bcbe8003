/**
 * A real browser against `serveDir`: headless Chromium loads `test/fixtures/site/` from wireserve on
 * 127.0.0.1 — the page, its stylesheet, its script, an image and a `<video>` that seeks — and the
 * test checks both what the page rendered and what the server saw.
 *
 * - The page's script (`app.js`) reads back a style that only `style.css` sets, waits for the image
 *   to decode (natural size 48×32) and for the video's metadata, seeks the video to 3 s (of 4), waits for
 *   `seeked`, writes the results as JSON into `<pre id="result">`, then POSTs the page's DOM (as the
 *   browser has it then) to `/report`. The test's handler records it and the test parses it.
 * - Not `--dump-dom` with `--virtual-time-budget`: virtual time does not wait for the media
 *   pipeline, so the budget (and the page's own timeouts) can run out before the video has seeked
 *   and the dump would race the seek. Chromium instead runs in real time until the report arrives,
 *   then is killed; it is started with the asynchronous `spawn` (the server runs in this process,
 *   so nothing here may block the event loop: no `execFileSync`) as the leader of its own process
 *   group (`startProcess` in `test/helpers.ts`, `detached`), and the whole group is killed after
 *   {@linkcode CHROMIUM_TIMEOUT_MS} at most.
 * - The video is sent at {@linkcode THROTTLE_BYTES_PER_TICK} bytes every
 *   {@linkcode THROTTLE_TICK_MS} ms, as over a modest network. On loopback the whole file would
 *   arrive in one burst with the first `Range: bytes=0-` and Chromium would seek within its cache;
 *   throttled, it drops that response and opens ranges with a non-zero start (the WebM's Cues at
 *   the end, the seek target), which is what this test wants to see served: 206 with the matching
 *   `Content-Range`. Its cancellations exercise the server's handling of a client that goes away
 *   mid-body too. (The 377 KiB video is this large on purpose: Chromium opens a new range only for
 *   a position more than 5 blocks of 32 KiB past what it is already fetching.)
 * - The server's log must show the CSS, script, image and video served with 200 or 206 and the
 *   right `Content-Type`, nothing answered with an error, every `Range` request answered 206 with
 *   the matching `Content-Range` (or 200 when its `If-Range` does not match strongly, as RFC 9110
 *   §13.1.5 requires; serveDir's ETags are strong, so Chromium's revalidations get 206), and at
 *   least one `Range` request with a non-zero start answered 206.
 *
 * Chromium is found through `$WIRESERVE_CHROMIUM`, then `chromium` / `chromium-browser` on `PATH`,
 * then `/usr/bin/chromium`. Debian: `apt-get install -y --no-install-recommends chromium`. When it
 * is missing the test FAILS, unless {@linkcode CHROMIUM_REQUIRED} is false (then it is skipped).
 *
 * Run: `deno test -A test/browser.ts`, `bun test --timeout=60000 ./test/browser.ts`,
 * `node --test test/browser.ts`.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { sendEarlyHints, serve, serveDir } from "../mod.ts";
import { delay, startProcess } from "./helpers.ts";
import type { ProcessExit } from "./helpers.ts";

/**
 * Whether a missing Chromium fails the test (true: CI installs it, so its absence is a broken
 * setup) or skips it (false: for machines where Chromium cannot be installed).
 */
export const CHROMIUM_REQUIRED: boolean = true;

/** The longest Chromium may run before it is killed (with its whole process group). */
export const CHROMIUM_TIMEOUT_MS = 30_000;

/** The video is sent in pieces of this many bytes… */
export const THROTTLE_BYTES_PER_TICK = 8 * 1024;
/** …one every this many milliseconds (160 KiB/s). */
export const THROTTLE_TICK_MS = 50;

/** The fixture site served to the browser. */
const SITE = fileURLToPath(new URL("./fixtures/site/", import.meta.url));

/** Where the page's script seeks the video to, in seconds (as in app.js). */
const SEEK_TO = 3;

/** One request as the test's handler saw it. */
interface Seen {
  method: string;
  path: string;
  range: string | null;
  ifRange: string | null;
  /** `If-Range`, `If-None-Match`, `If-Modified-Since`, as sent. */
  conditions: string;
  status: number;
  contentType: string | null;
  contentRange: string | null;
  etag: string | null;
}

/** What app.js writes into `<pre id="result">`. */
interface PageResult {
  css: { color: string; width: string } | null;
  image: { naturalWidth?: number; naturalHeight?: number; error?: string } | null;
  video:
    | { duration?: number; currentTime?: number; readyState?: number; error?: string }
    | null;
  errors: string[];
}

//#region Finding and running Chromium

/** Whether `file` exists and is executable. */
async function isExecutable(file: string): Promise<boolean> {
  try {
    await fs.access(file, fs.constants.X_OK);
    return (await fs.stat(file)).isFile();
  } catch {
    return false;
  }
}

/** The Chromium binary to run, or null when there is none. */
async function findChromium(): Promise<string | null> {
  const fromEnv = process.env.WIRESERVE_CHROMIUM;
  if (fromEnv) return await isExecutable(fromEnv) ? fromEnv : null;
  const dirs = (process.env.PATH ?? "").split(path.delimiter).filter((dir) => dir !== "");
  for (const name of ["chromium", "chromium-browser"]) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      if (await isExecutable(candidate)) return candidate;
    }
  }
  return await isExecutable("/usr/bin/chromium") ? "/usr/bin/chromium" : null;
}

const MISSING_CHROMIUM = "Chromium not found: the browser test needs it. Install it with " +
  "`apt-get update && apt-get install -y --no-install-recommends chromium` (Debian), put " +
  "`chromium` on PATH, or point WIRESERVE_CHROMIUM at the binary.";

//#endregion
//#region Serving

/** `body`, re-chunked to {@linkcode THROTTLE_BYTES_PER_TICK} and paced. Cancel passes through. */
function throttle(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let pending: Uint8Array = new Uint8Array(0);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (pending.length === 0) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        pending = value;
      }
      await delay(THROTTLE_TICK_MS);
      controller.enqueue(pending.slice(0, THROTTLE_BYTES_PER_TICK));
      pending = pending.subarray(THROTTLE_BYTES_PER_TICK);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** The text of `<pre id="result">` in a serialized DOM, parsed; null if absent or unparsable. */
function resultFromDom(dom: string): PageResult | null {
  const match = /<pre id="result">([\s\S]*?)<\/pre>/.exec(dom);
  if (!match) return null;
  const text = match[1]
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&nbsp;", "\u00a0")
    .replaceAll("&amp;", "&");
  try {
    return JSON.parse(text) as PageResult;
  } catch {
    return null;
  }
}

/** The last `lines` lines of `text`, for failure messages. */
function tail(text: string, lines = 30): string {
  return text.split("\n").slice(-lines).join("\n");
}

//#endregion

describe("a real browser (headless Chromium) against serveDir", () => {
  const name =
    "loads the page with its CSS, script and image, and seeks the video with range requests";
  // The timeout covers Chromium's own limit and the server's start and shutdown; Bun's default of
  // 5 s per test is too short for a browser on a busy machine.
  test(name, { timeout: CHROMIUM_TIMEOUT_MS + 30_000 }, async (t) => {
    const chromium = await findChromium();
    if (chromium === null) {
      if (CHROMIUM_REQUIRED) assert.fail(MISSING_CHROMIUM);
      console.log(`# skipped: ${MISSING_CHROMIUM}`);
      t.skip(MISSING_CHROMIUM);
      return;
    }

    const seen: Seen[] = [];
    const reports: string[] = [];
    let onReport = () => {};
    const reported = new Promise<void>((resolve) => onReport = resolve);
    const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
      const url = new URL(request.url);
      let response: Response;
      if (url.pathname === "/report" && request.method === "POST") {
        reports.push(await request.text());
        onReport();
        response = new Response(null, { status: 204 });
      } else {
        response = await serveDir(request, { root: SITE });
        if (url.pathname.endsWith(".webm") && response.body) {
          response = new Response(throttle(response.body), {
            status: response.status,
            statusText: response.statusText,
            headers: response.headers,
          });
        }
      }
      seen.push({
        method: request.method,
        path: url.pathname,
        range: request.headers.get("range"),
        ifRange: request.headers.get("if-range"),
        conditions: ["if-range", "if-none-match", "if-modified-since"]
          .filter((name) => request.headers.has(name))
          .map((name) => `${name}: ${request.headers.get(name)}`)
          .join("; "),
        status: response.status,
        contentType: response.headers.get("content-type"),
        contentRange: response.headers.get("content-range"),
        etag: response.headers.get("etag"),
      });
      return response;
    });
    const profile = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-chromium-"));
    let exit: ProcessExit;
    let gotReport = false;
    try {
      const { port } = await server.ready;
      const browser = startProcess(chromium, [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        `--user-data-dir=${profile}`,
        "--autoplay-policy=no-user-gesture-required",
        `http://127.0.0.1:${port}/`,
      ], { ms: CHROMIUM_TIMEOUT_MS, detached: true });
      // Until the report arrives, Chromium exits (it should not), or the timeout kills it.
      gotReport = await Promise.race([
        reported.then(() => true),
        browser.exited.then(() => false),
      ]);
      browser.kill();
      exit = await browser.exited;
    } finally {
      await server.shutdown();
      await fs.rm(profile, { recursive: true, force: true }).catch(() => {});
    }

    const log = seen.map((s) =>
      `${s.method} ${s.path} range=${s.range ?? "-"}${
        s.conditions ? ` (${s.conditions})` : ""
      } -> ` +
      `${s.status} ` +
      `${s.contentType ?? "-"} ${s.contentRange ?? ""}`
    ).join("\n");
    const context = `\nChromium ran ${exit.ms} ms (${
      gotReport
        ? "killed after the report"
        : exit.timedOut
        ? `killed after ${CHROMIUM_TIMEOUT_MS} ms without a report`
        : exit.error
        ? `could not start: ${exit.error.message}`
        : `exited by itself: code ${exit.code}, signal ${exit.signal}`
    })\nrequests:\n${log}\nreport:\n${reports[0] ?? "(none)"}\nChromium's stderr (tail):\n${
      tail(exit.stderr)
    }`;

    // What the page rendered, from its DOM.
    assert.ok(gotReport, `the page never reported${context}`);
    assert.equal(reports.length, 1, `reports received${context}`);
    const result = resultFromDom(reports[0]);
    assert.ok(result, `the page's DOM has no parsable <pre id="result">${context}`);
    assert.deepEqual(result.errors, [], `the page's script reported errors${context}`);
    // The stylesheet applied: these values come only from style.css.
    assert.deepEqual(result.css, { color: "rgb(1, 2, 3)", width: "321px" }, `CSS${context}`);
    // The image decoded with its natural size.
    assert.deepEqual(result.image, { naturalWidth: 48, naturalHeight: 32 }, `image${context}`);
    // The video loaded its metadata and seeked.
    const video = result.video;
    assert.ok(video && video.error === undefined, `video: ${JSON.stringify(video)}${context}`);
    assert.ok(
      typeof video.duration === "number" && Math.abs(video.duration - 4) < 0.2,
      `video duration ${video.duration}, expected about 4 s${context}`,
    );
    assert.ok(
      typeof video.currentTime === "number" && Math.abs(video.currentTime - SEEK_TO) < 0.05,
      `video currentTime ${video.currentTime} after seeked, expected ${SEEK_TO}${context}`,
    );

    // What the server saw: every file served, with the right type, and no failures.
    const expectTypes: Array<[string, string]> = [
      ["/", "text/html"],
      ["/style.css", "text/css"],
      ["/app.js", "text/javascript"],
      ["/image.png", "image/png"],
      ["/video.webm", "video/webm"],
    ];
    for (const [file, type] of expectTypes) {
      const hits = seen.filter((s) => s.method === "GET" && s.path === file);
      assert.ok(hits.length > 0, `no GET ${file} reached the server${context}`);
      for (const hit of hits) {
        assert.ok(
          hit.status === 200 || hit.status === 206,
          `GET ${file} -> ${hit.status}${context}`,
        );
        assert.ok(
          hit.contentType?.startsWith(type),
          `GET ${file} Content-Type ${hit.contentType}, expected ${type}${context}`,
        );
      }
    }
    const failed = seen.filter((s) => s.status >= 400);
    assert.deepEqual(failed, [], `requests that failed${context}`);

    // Range requests: every one answered 206 with the Content-Range that matches it — or, when it
    // carries an If-Range that does not match strongly, 200 with the whole file (RFC 9110 §13.1.5).
    // Chromium's cache revalidates a partial entry with `If-Range: <the ETag>`; serveDir's ETags
    // are strong, so that matches and gets 206 too.
    const ranged = seen.filter((s) => s.range !== null);
    const videoSize = (await fs.stat(path.join(SITE, "video.webm"))).size;
    for (const r of ranged) {
      assert.equal(r.path, "/video.webm", `a Range request for ${r.path}${context}`);
      const match = /^bytes=(\d+)-(\d*)$/.exec(r.range ?? "");
      assert.ok(match, `a Range header of an unexpected form: ${r.range}${context}`);
      if (r.status === 200 && r.ifRange !== null) {
        const strong = !r.ifRange.startsWith("W/") && r.etag !== null && !r.etag.startsWith("W/");
        assert.ok(
          !(strong && r.ifRange === r.etag),
          `If-Range ${r.ifRange} matches the ETag ${r.etag} strongly, yet 200${context}`,
        );
        assert.equal(r.contentRange, null, `Content-Range on a 200${context}`);
        continue;
      }
      assert.equal(r.status, 206, `Range ${r.range} -> ${r.status}${context}`);
      const start = Number(match[1]);
      const end = match[2] === "" ? videoSize - 1 : Math.min(Number(match[2]), videoSize - 1);
      assert.equal(
        r.contentRange,
        `bytes ${start}-${end}/${videoSize}`,
        `Content-Range for ${r.range}${context}`,
      );
    }
    assert.ok(ranged.length > 0, `no request carried a Range header${context}`);
    const seeks = ranged.filter((r) => !/^bytes=0-/.test(r.range ?? "") && r.status === 206);
    assert.ok(seeks.length > 0, `no Range request with a non-zero start answered 206${context}`);
    console.log(
      `# chromium: ${exit.ms} ms, ${seen.length} requests, ${ranged.length} with Range: ` +
        ranged.map((r) => `${r.range}${r.ifRange ? ` (If-Range)` : ""} -> ${r.status}`).join(", "),
    );
  });
});

describe("a real browser (headless Chromium) and 103 Early Hints", () => {
  // Chromium acts on the Link of a 103 only over HTTP/2 and HTTP/3 (its docs/early-hints.md:
  // "Early Hints sent on HTTP/1.1 or earlier" are ignored), so over HTTP/1.1 what can be checked
  // is that it parses the 103 and renders the final response with its stylesheet.
  test(
    "parses a 103 and renders the final page",
    { timeout: CHROMIUM_TIMEOUT_MS + 30_000 },
    async (t) => {
      const chromium = await findChromium();
      if (chromium === null) {
        if (CHROMIUM_REQUIRED) assert.fail(MISSING_CHROMIUM);
        t.skip(MISSING_CHROMIUM);
        return;
      }
      const events: string[] = [];
      let hinted = false;
      const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
        const { pathname } = new URL(request.url);
        events.push(`GET ${pathname}`);
        if (pathname === "/hinted.css") {
          return new Response("#p { color: rgb(1, 2, 3); }", {
            headers: { "content-type": "text/css" },
          });
        }
        if (pathname !== "/") return new Response(null, { status: 404 });
        hinted = sendEarlyHints(request, { link: "</hinted.css>; rel=preload; as=style" });
        await delay(200); // the page is "rendering"
        events.push("page answered");
        return new Response(
          '<!doctype html><html><head><link rel="stylesheet" href="/hinted.css"></head><body>' +
            '<p id="p">hinted page</p><script>document.getElementById("p").textContent += " " + ' +
            'getComputedStyle(document.getElementById("p")).color;</script></body></html>',
          { headers: { "content-type": "text/html; charset=utf-8" } },
        );
      });
      const profile = await fs.mkdtemp(path.join(os.tmpdir(), "wireserve-chromium-"));
      let exit: ProcessExit;
      try {
        const { port } = await server.ready;
        exit = await startProcess(chromium, [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-dev-shm-usage",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-extensions",
          `--user-data-dir=${profile}`,
          "--dump-dom",
          `http://127.0.0.1:${port}/`,
        ], { ms: CHROMIUM_TIMEOUT_MS, detached: true }).exited;
      } finally {
        await server.shutdown();
        await fs.rm(profile, { recursive: true, force: true }).catch(() => {});
      }
      const context = `\nserver saw: ${events.join(", ")}\nstderr: ${tail(exit.stderr)}`;
      assert.ok(hinted, "the 103 was sent");
      assert.match(exit.stdout, /hinted page rgb\(1, 2, 3\)/, `the rendered DOM${context}`);
      assert.ok(events.includes("GET /hinted.css"), `the stylesheet was fetched${context}`);
      console.log(`# chromium with a 103: ${events.join(", ")}`);
    },
  );
});
