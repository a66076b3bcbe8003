/**
 * wireserve's test suite: the one file that `npm test` runs on Deno, Bun and Node (with
 * `node:test` and `node:assert/strict`, which all three run).
 *
 * The suite is in layers, each in its own module so that none is thousands of lines long; the
 * modules register their tests when this file imports them, in this order:
 *
 * 1. the pure protocol core (below): tables of raw requests from `test/core_cases.ts`, each fed
 *    whole, split at every index, byte by byte and inside poison bytes (`test/feed.ts`);
 * 2. the connection driver over an in-memory transport, asserting exact bytes (`test/driver.ts`;
 *    the driver tests that send their bytes at once and check the exact answer are a table in
 *    `test/driver_exchanges.ts`, its states and deadlines on a manual clock are in
 *    `test/driver_states.ts`), and `FastResponse` (`test/fast_response.ts`), and 3. end to end
 *    over every transport the runtime has, with raw sockets, fetch, curl and a Hono app
 *    (`test/e2e.ts`), and the transport contract kept by every built-in adapter the runtime runs
 *    (`test/transport_contract.ts`: no event inside a call, `onClose` once, last);
 * 4. the router and static files, with real files and raw-socket traversal attempts, and under
 *    `Deno.serve` and `Bun.serve` (`test/static.ts`), and headless Chromium loading a page and seeking a video
 *    (`test/browser.ts`), and `compress` (`test/compress.ts`: each coding decoded by node:zlib
 *    and curl, event streams flushed event by event, backpressure through the compressor), and
 *    `sendEarlyHints` (`test/interim.ts`: exact bytes, then curl, Node's `http` client and
 *    Chromium), and the access log (`test/access_log.ts`: formats and escaping, then one entry per
 *    request through the driver, with the reason when it went wrong), and the PROXY protocol
 *    (`test/proxy_protocol.ts`: parseProxyHeader fed whole and as every prefix, the gate in
 *    serve() over the in-memory transport, then raw clients and curl on every transport), and
 *    deploying (`test/deploy.ts`: Unix sockets on every transport, HTTPS behind the PROXY
 *    protocol, HAProxy with send-proxy and send-proxy-v2, nginx over a socket and over TCP), and
 *    WebSocket (`test/websocket.ts`: the frame reader fed whole and split, the protocol through
 *    the driver with exact frames, then the runtime's client, the ws package and Python's);
 * 5. hostile clients: TLS, timeouts, connection caps, 1,000 slowloris and 5,000 idle connections,
 *    rate limiting, graceful shutdown, faults, a seeded fuzzer and a table of smuggling vectors
 *    (`test/hostile.ts`), and several servers on one port: `reusePort`, `startWorkers` (a worker
 *    killed and replaced, a graceful shutdown, a module that fails to load) and the CLI's
 *    `--workers`, `--unix` and `--proxy-protocol` (`test/workers.ts`);
 * 6. the command line, `mod.ts` run as a program on this runtime: the demo site and a directory
 *    (`test/cli.ts`).
 *
 * Shared helpers are in `test/helpers.ts`.
 */

import "./test/driver.ts";
import "./test/fast_response.ts";
import "./test/e2e.ts";
import "./test/driver_exchanges.ts";
import "./test/driver_states.ts";
import "./test/transport_contract.ts";
import "./test/static.ts";
import "./test/compress.ts";
import "./test/interim.ts";
import "./test/access_log.ts";
import "./test/proxy_protocol.ts";
import "./test/deploy.ts";
import "./test/websocket.ts";
import "./test/browser.ts";
import "./test/hostile.ts";
import "./test/workers.ts";
import "./test/cli.ts";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ChunkedDecoder,
  DEFAULT_LIMITS,
  encodeChunk,
  HTTP_ERROR,
  HttpError,
  LAST_CHUNK,
  parseContentLength,
  requestFraming,
  responseFraming,
  serializeResponseHead,
} from "./mod.ts";
import type { Framing } from "./mod.ts";
import {
  CHUNKED_CASES,
  CONTENT_LENGTH_CASES,
  EXPECTED_DEFAULT_LIMITS,
  EXPECTED_STATUS,
  FIND_HEAD_END_CASES,
  HEAD_CASES,
  REQUEST_FRAMING_CASES,
  RESPONSE_FRAMING_CASES,
} from "./test/core_cases.ts";
import {
  checkChunkedCase,
  checkFindHeadEndCase,
  checkHeadCase,
  fromLatin1,
  isHttpError,
  latin1,
} from "./test/feed.ts";

// Layer 1: the pure protocol core
//
// Table-driven: the cases live in test/core_cases.ts, the feeding strategies (whole, split at every
// index, byte by byte, inside poison bytes) in test/feed.ts. One test per case, named after it.

describe("HttpError", () => {
  test("HTTP_ERROR gives every contract code its status", () => {
    for (const [code, status] of Object.entries(EXPECTED_STATUS)) {
      assert.equal((HTTP_ERROR as Record<string, number>)[code], status, code);
    }
  });

  test("HttpError carries code and status", () => {
    const error = new HttpError("BARE_LF", "Cannot parse head: LF without CR");
    assert.ok(error instanceof Error);
    assert.equal(error.code, "BARE_LF");
    assert.equal(error.status, 400);
    assert.equal(new HttpError("TARGET_TOO_LONG", "x").status, 414);
    assert.equal(new HttpError("UNSUPPORTED_VERSION", "x").status, 505);
  });

  test("DEFAULT_LIMITS has the documented defaults", () => {
    assert.deepEqual({ ...DEFAULT_LIMITS }, EXPECTED_DEFAULT_LIMITS);
  });
});

describe("findHeadEnd", () => {
  for (const c of FIND_HEAD_END_CASES) test(c.name, () => checkFindHeadEndCase(c));
});

describe("parseRequestHead", () => {
  for (const c of HEAD_CASES) test(c.name, () => checkHeadCase(c));
});

describe("parseContentLength", () => {
  for (const c of CONTENT_LENGTH_CASES) {
    test(c.name, () => {
      if (typeof c.expect === "number") assert.equal(parseContentLength(c.value), c.expect);
      else assert.throws(() => parseContentLength(c.value), isHttpError(c.expect));
    });
  }
});

describe("requestFraming", () => {
  for (const c of REQUEST_FRAMING_CASES) {
    test(c.name, () => {
      if (typeof c.expect === "string") {
        assert.throws(() => requestFraming(c.headers, c.version), isHttpError(c.expect));
      } else {
        assert.deepEqual(plainFraming(requestFraming(c.headers, c.version)), c.expect);
      }
    });
  }
});

describe("ChunkedDecoder", () => {
  for (const c of CHUNKED_CASES) test(c.name, () => checkChunkedCase(c));

  test("pushes views into the input buffer, not copies", () => {
    const bytes = latin1("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    const out: Uint8Array[] = [];
    const decoder = new ChunkedDecoder();
    assert.equal(decoder.decode(bytes, 0, bytes.length, out), bytes.length);
    assert.ok(decoder.done);
    assert.ok(out.length > 0);
    for (const view of out) assert.equal(view.buffer, bytes.buffer);
    assert.equal(out.map(fromLatin1).join(""), "hello world");
  });

  test("consumes nothing more once done", () => {
    const bytes = latin1("0\r\n\r\n0\r\n\r\n");
    const decoder = new ChunkedDecoder();
    assert.equal(decoder.decode(bytes, 0, bytes.length, []), 5);
    assert.ok(decoder.done);
    assert.equal(decoder.decode(bytes, 5, bytes.length, []), 0);
  });
});

describe("responseFraming", () => {
  for (const c of RESPONSE_FRAMING_CASES) {
    test(c.name, () => {
      const result = responseFraming(c.input);
      assert.deepEqual({ framing: plainFraming(result.framing), close: result.close }, c.expect);
    });
  }
});

describe("serializeResponseHead", () => {
  const LENGTH_5: Framing = { kind: "length", length: 5 };
  /** Serializes and decodes the head as latin1. */
  const head = (...args: Parameters<typeof serializeResponseHead>) =>
    fromLatin1(serializeResponseHead(...args));
  /** The values of every line `name: value` of `text`, matching the name case-insensitively. */
  const fields = (text: string, name: string) =>
    text.split("\r\n").filter((line) => line.toLowerCase().startsWith(name + ":")).map((line) =>
      line.slice(name.length + 1).trim()
    );

  test("writes the status line", () => {
    assert.ok(head(200, [], { framing: LENGTH_5, close: false }).startsWith("HTTP/1.1 200 OK\r\n"));
    assert.ok(
      head(404, [], { framing: LENGTH_5, close: false }).startsWith("HTTP/1.1 404 Not Found\r\n"),
    );
  });

  test("writes a custom status text", () => {
    const text = head(299, [], { statusText: "Whatever", framing: LENGTH_5, close: false });
    assert.ok(text.startsWith("HTTP/1.1 299 Whatever\r\n"), text);
  });

  test("ends the head with exactly one empty line", () => {
    const text = head(200, [["x", "y"]], { framing: LENGTH_5, close: false });
    assert.ok(text.endsWith("\r\n\r\n"));
    assert.equal(text.indexOf("\r\n\r\n"), text.length - 4);
  });

  test("ends every line with CRLF", () => {
    const text = head(200, [["x", "y"]], { framing: { kind: "chunked" }, close: true });
    assert.doesNotMatch(text, /[^\r]\n/);
    assert.doesNotMatch(text, /\r[^\n]/);
  });

  test("writes the handler's fields", () => {
    const text = head(200, new Headers({ "x-custom": "v", "content-type": "text/plain" }), {
      framing: LENGTH_5,
      close: false,
    });
    assert.deepEqual(fields(text, "x-custom"), ["v"]);
    assert.deepEqual(fields(text, "content-type"), ["text/plain"]);
  });

  test("writes each set-cookie on its own line", () => {
    const headers = new Headers();
    headers.append("set-cookie", "a=1");
    headers.append("set-cookie", "b=2");
    const text = head(200, headers, { framing: LENGTH_5, close: false });
    assert.deepEqual(fields(text, "set-cookie"), ["a=1", "b=2"]);
  });

  test("writes the date field it is given, and reads no clock for one", () => {
    const date = "Sun, 06 Dec 2026 12:00:00 GMT";
    const text = head(200, [], { framing: LENGTH_5, close: false, date });
    assert.deepEqual(fields(text, "date"), [date]);
    assert.deepEqual(fields(head(200, [], { framing: LENGTH_5, close: false }), "date"), []);
  });

  test("keeps a date field the handler set instead of the one given", () => {
    const own = "Thu, 01 Jan 2026 00:00:00 GMT";
    const text = head(200, [["date", own]], {
      framing: LENGTH_5,
      close: false,
      date: "Sun, 06 Dec 2026 12:00:00 GMT",
    });
    assert.deepEqual(fields(text, "date"), [own]);
  });

  test("writes Connection: upgrade for a 101 with upgrade set (RFC 9110 §7.8)", () => {
    const text = head(101, [["upgrade", "websocket"]], {
      framing: { kind: "none" },
      close: true,
      upgrade: true,
    });
    assert.deepEqual(fields(text, "connection"), ["upgrade"]);
    assert.deepEqual(fields(text, "upgrade"), ["websocket"]);
  });

  test("writes Content-Length for length framing", () => {
    const text = head(200, [], { framing: LENGTH_5, close: false });
    assert.deepEqual(fields(text, "content-length"), ["5"]);
    assert.deepEqual(fields(text, "transfer-encoding"), []);
  });

  test("replaces a handler-set Content-Length", () => {
    const text = head(200, [["content-length", "999"]], { framing: LENGTH_5, close: false });
    assert.deepEqual(fields(text, "content-length"), ["5"]);
  });

  test("drops a handler-set Transfer-Encoding under length framing", () => {
    const text = head(200, [["transfer-encoding", "gzip, chunked"]], {
      framing: LENGTH_5,
      close: false,
    });
    assert.deepEqual(fields(text, "transfer-encoding"), []);
    assert.deepEqual(fields(text, "content-length"), ["5"]);
  });

  test("writes Transfer-Encoding: chunked for chunked framing", () => {
    const text = head(200, [["content-length", "10"], ["transfer-encoding", "gzip"]], {
      framing: { kind: "chunked" },
      close: false,
    });
    assert.deepEqual(fields(text, "transfer-encoding"), ["chunked"]);
    assert.deepEqual(fields(text, "content-length"), []);
  });

  test("writes Connection: close when closing", () => {
    const text = head(200, [["connection", "keep-alive"], ["keep-alive", "timeout=5"]], {
      framing: LENGTH_5,
      close: true,
    });
    assert.deepEqual(fields(text, "connection"), ["close"]);
    assert.deepEqual(fields(text, "keep-alive"), []);
  });

  test("replaces a handler-set Connection: close when keeping the connection", () => {
    const text = head(200, [["connection", "close"], ["keep-alive", "timeout=5"]], {
      framing: LENGTH_5,
      close: false,
    });
    assert.ok(!fields(text, "connection").includes("close"), text);
    assert.deepEqual(fields(text, "keep-alive"), []);
  });

  test("writes Connection: keep-alive for a kept HTTP/1.0 connection", () => {
    const text = head(200, [], { framing: LENGTH_5, close: false, version: 0 });
    assert.deepEqual(fields(text, "connection").map((v) => v.toLowerCase()), ["keep-alive"]);
  });

  test("writes no framing fields for none", () => {
    const text = head(204, [["content-length", "3"]], { framing: { kind: "none" }, close: false });
    assert.deepEqual(fields(text, "content-length"), []);
    assert.deepEqual(fields(text, "transfer-encoding"), []);
  });

  test("advertises the GET length on HEAD", () => {
    const text = head(200, [], { framing: { kind: "none" }, close: false, contentLength: 5 });
    assert.deepEqual(fields(text, "content-length"), ["5"]);
    assert.deepEqual(fields(text, "transfer-encoding"), []);
  });

  test("writes no length for close framing", () => {
    const text = head(200, [["content-length", "5"]], { framing: { kind: "close" }, close: true });
    assert.deepEqual(fields(text, "content-length"), []);
    assert.deepEqual(fields(text, "transfer-encoding"), []);
    assert.deepEqual(fields(text, "connection"), ["close"]);
  });

  test("throws RangeError for a status outside 100-999", () => {
    assert.throws(
      () => serializeResponseHead(99, [], { framing: LENGTH_5, close: false }),
      RangeError,
    );
    assert.throws(
      () => serializeResponseHead(1000, [], { framing: LENGTH_5, close: false }),
      RangeError,
    );
  });

  test("throws TypeError for CR or LF in a field set by the handler", () => {
    const options = { framing: LENGTH_5, close: false };
    assert.throws(() => serializeResponseHead(200, [["x", "a\r\nb: c"]], options), TypeError);
    assert.throws(() => serializeResponseHead(200, [["x", "a\nb"]], options), TypeError);
    assert.throws(() => serializeResponseHead(200, [["x\r\ny", "a"]], options), TypeError);
  });
});

describe("encodeChunk", () => {
  test("encodes hello", () => {
    assert.equal(fromLatin1(encodeChunk(latin1("hello"))), "5\r\nhello\r\n");
  });

  test("encodes the size in hex", () => {
    const data = new Uint8Array(255).fill(0x61);
    const text = fromLatin1(encodeChunk(data));
    assert.match(text, /^ff\r\n/i);
    assert.equal(text.length, 4 + 255 + 2);
    assert.ok(text.endsWith("a\r\n"));
    assert.ok(fromLatin1(encodeChunk(new Uint8Array(4096))).startsWith("1000\r\n"));
  });

  test("encodes empty data as nothing", () => {
    assert.equal(encodeChunk(new Uint8Array(0)).length, 0);
  });

  test("LAST_CHUNK is 0 CRLF CRLF", () => {
    assert.equal(fromLatin1(LAST_CHUNK), "0\r\n\r\n");
  });
});

/** Copies a framing into a plain object so that it compares with `deepEqual`. */
function plainFraming(framing: Framing): Framing {
  return framing.kind === "length"
    ? { kind: "length", length: framing.length }
    : { kind: framing.kind };
}
