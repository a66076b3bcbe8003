/**
 * Tests of the access log: `formatAccessLogEntry` as a pure function (Common, Combined, JSON, and
 * escaping that keeps request bytes from splitting or forging a line), then the driver's entries
 * over the in-memory transport with a manual clock: a normal exchange, HEAD, pipelining and
 * batching, a handler that throws or hangs, requests the server refused itself, a client that
 * leaves, a body that fails mid-stream, a client that stops reading, trusted proxies, shutdown.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { formatAccessLogEntry } from "../mod.ts";
import type { AccessLogEntry, AccessLogOptions, Handler } from "../mod.ts";
import { delay, gate, ManualClock, memoryServer, textResponse, waitUntil } from "./helpers.ts";

const ENTRY: AccessLogEntry = {
  time: Date.UTC(2026, 11, 7, 3, 4, 5, 678),
  client: "192.0.2.7",
  request: "GET /a?b=1 HTTP/1.1",
  method: "GET",
  target: "/a?b=1",
  version: "HTTP/1.1",
  status: 200,
  bytes: 1234,
  referer: "https://example.com/",
  userAgent: "curl/8.5.0",
  duration: 1.23456,
  reason: null,
};

describe("formatAccessLogEntry", () => {
  test("Common Log Format", () => {
    assert.equal(
      formatAccessLogEntry(ENTRY, "common"),
      '192.0.2.7 - - [07/Dec/2026:03:04:05 +0000] "GET /a?b=1 HTTP/1.1" 200 1234',
    );
  });

  test('Combined Log Format; no body is -, a missing field is "-"', () => {
    assert.equal(
      formatAccessLogEntry({ ...ENTRY, bytes: 0, referer: null }, "combined"),
      '192.0.2.7 - - [07/Dec/2026:03:04:05 +0000] "GET /a?b=1 HTTP/1.1" 200 - "-" "curl/8.5.0"',
    );
  });

  test("JSON lines carry every field", () => {
    assert.deepEqual(
      JSON.parse(formatAccessLogEntry({ ...ENTRY, reason: "CLIENT_LEFT" }, "json")),
      {
        time: "2026-12-07T03:04:05.678Z",
        client: "192.0.2.7",
        method: "GET",
        target: "/a?b=1",
        version: "HTTP/1.1",
        request: "GET /a?b=1 HTTP/1.1",
        status: 200,
        bytes: 1234,
        duration: 1.235,
        referer: "https://example.com/",
        userAgent: "curl/8.5.0",
        reason: "CLIENT_LEFT",
      },
    );
  });

  test("a field from the request cannot end the line or close its quotes", () => {
    const hostile = { ...ENTRY, referer: 'x" 200 1 "\r\nforged', userAgent: "a\\b\x7f\xff\u2028" };
    for (const format of ["combined", "json"] as const) {
      const line = formatAccessLogEntry(hostile, format);
      assert.doesNotMatch(line, /[\r\n\u2028\u2029]/, format);
    }
    assert.equal(
      formatAccessLogEntry(hostile, "combined"),
      '192.0.2.7 - - [07/Dec/2026:03:04:05 +0000] "GET /a?b=1 HTTP/1.1" 200 1234 ' +
        '"x\\x22 200 1 \\x22\\x0d\\x0aforged" "a\\x5cb\\x7f\\xff\\u2028"',
    );
  });
});

/** A server with an access log that collects what it writes, and the entries parsed. */
function logged(
  handler: Handler,
  options: Omit<AccessLogOptions, "write" | "format"> = {},
  serveOptions: Record<string, unknown> = {},
) {
  const writes: string[] = [];
  const clock = new ManualClock();
  const { server, connect } = memoryServer(handler, {
    clock,
    ...serveOptions,
    accessLog: { ...options, format: "json", write: (text) => writes.push(text) },
  });
  const entries = (): AccessLogEntry[] =>
    writes.join("").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
  return { server, connect, clock, writes, entries };
}

describe("the access log over the driver", () => {
  test("one entry per request, written after its response, with every field", async () => {
    const { server, connect, entries } = logged(() => textResponse("hello"));
    const connection = connect();
    connection.send(
      "GET /page?x=1 HTTP/1.1\r\nHost: a\r\nReferer: http://r/\r\nUser-Agent: test-agent\r\n\r\n",
    );
    await waitUntil(() => entries().length === 1, "the entry");
    const [entry] = entries();
    assert.equal(entry.client, "192.0.2.7");
    assert.equal(entry.request, "GET /page?x=1 HTTP/1.1");
    assert.equal(entry.method, "GET");
    assert.equal(entry.target, "/page?x=1");
    assert.equal(entry.version, "HTTP/1.1");
    assert.equal(entry.status, 200);
    assert.equal(entry.bytes, 5);
    assert.equal(entry.referer, "http://r/");
    assert.equal(entry.userAgent, "test-agent");
    assert.equal(entry.reason, null);
    assert.ok(typeof entry.duration === "number" && entry.duration >= 0);
    assert.ok(Math.abs(Date.parse(entry.time as unknown as string) - Date.now()) < 60_000);
    await server.shutdown();
  });

  test("HEAD sends no body bytes; HTTP/1.0 is logged as such", async () => {
    const { server, connect, entries } = logged(() => textResponse("hello"));
    connect().send("HEAD / HTTP/1.0\r\n\r\n");
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].bytes, 0);
    assert.equal(entries()[0].version, "HTTP/1.0");
    await server.shutdown();
  });

  test("pipelined requests are logged in order, in one write per turn", async () => {
    const { server, connect, entries, writes } = logged((request) =>
      textResponse(new URL(request.url).pathname)
    );
    const connection = connect();
    let pipelined = "";
    for (let i = 0; i < 50; i++) pipelined += `GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n`;
    connection.send(pipelined);
    await waitUntil(() => entries().length === 50, "50 entries");
    assert.deepEqual(
      entries().map((entry) => entry.target),
      Array.from({ length: 50 }, (_, i) => `/${i}`),
    );
    assert.ok(writes.length < 5, `${writes.length} writes for 50 entries`);
    await server.shutdown();
  });

  test("a handler that throws: 500, HANDLER_ERROR", async () => {
    const { server, connect, entries } = logged(
      () => {
        throw new Error("boom");
      },
      {},
      { onLog() {} },
    );
    connect().send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 500);
    assert.equal(entries()[0].reason, "HANDLER_ERROR");
    await server.shutdown();
  });

  test("a handler that hangs: 503, HANDLER_TIMEOUT", async () => {
    const never = gate();
    const { server, connect, entries, clock } = logged(
      async () => {
        await never.opened;
        return textResponse("late");
      },
      {},
      { handlerTimeout: 1000, onLog() {} },
    );
    connect().send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    await delay(5);
    clock.advance(1500);
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 503);
    assert.equal(entries()[0].reason, "HANDLER_TIMEOUT");
    assert.equal(entries()[0].target, "/slow");
    never.open();
    await server.shutdown();
  });

  const refused: Array<[string, string, number, string, string]> = [
    [
      "a request line with a control byte",
      'GET /\x01"x\\ HTTP/1.1\r\nHost: a\r\n\r\n',
      400,
      "INVALID_TARGET",
      "GET /\\x01\\x22x\\x5c HTTP/1.1",
    ],
    [
      "an unsupported version",
      "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
      505,
      "UNSUPPORTED_VERSION",
      "GET / HTTP/2.0",
    ],
    ["a bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "BARE_LF", "GET / HTTP/1.1"],
    [
      "TRACE",
      "TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
      501,
      "METHOD_NOT_IMPLEMENTED",
      "TRACE / HTTP/1.1",
    ],
    [
      "a body over the limit",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n",
      413,
      "BODY_TOO_LARGE",
      "POST / HTTP/1.1",
    ],
  ];
  for (const [name, bytes, status, reason, line] of refused) {
    test(`${name}: ${status}, ${reason}, the line escaped`, async () => {
      const { server, connect, entries } = logged(() => textResponse("never"));
      connect().send(bytes);
      await waitUntil(() => entries().length === 1, "the entry");
      const [entry] = entries();
      assert.equal(entry.status, status);
      assert.equal(entry.reason, reason);
      assert.equal(entry.request, line);
      assert.equal(entry.client, "192.0.2.7");
      await server.shutdown();
    });
  }

  test("an over-long head: 431, its line cut at 2048 bytes", async () => {
    const { server, connect, entries } = logged(() => textResponse("never"), {}, {
      maxTargetBytes: 100_000,
      maxHeadBytes: 4096,
    });
    connect().send(`GET /${"a".repeat(5000)} HTTP/1.1\r\nHost: a\r\n\r\n`);
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 431);
    assert.equal(entries()[0].reason, "HEAD_TOO_LARGE");
    assert.equal(entries()[0].request, `GET /${"a".repeat(2043)}`);
    await server.shutdown();
  });

  test("a head cut short by the head timeout: 408, TIMEOUT", async () => {
    const { server, connect, entries, clock } = logged(() => textResponse("never"), {}, {
      headTimeout: 1000,
    });
    connect().send("GET /half HTTP/1.1\r\nHo");
    await delay(5);
    clock.advance(1500);
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 408);
    assert.equal(entries()[0].reason, "TIMEOUT");
    assert.equal(entries()[0].request, "GET /half HTTP/1.1");
    await server.shutdown();
  });

  test("a client that leaves before the response: 499, CLIENT_LEFT", async () => {
    const answer = gate();
    const { server, connect, entries } = logged(async () => {
      await answer.opened;
      return textResponse("too late");
    });
    const connection = connect();
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await delay(5);
    connection.closed = true;
    connection.events?.onClose();
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 499);
    assert.equal(entries()[0].bytes, 0);
    assert.equal(entries()[0].reason, "CLIENT_LEFT");
    answer.open();
    await delay(5);
    assert.equal(entries().length, 1, "nothing more when the handler answers after all");
    await server.shutdown();
  });

  test("a body that fails mid-stream: BODY_STREAM_FAILED, the bytes sent", async () => {
    const { server, connect, entries } = logged(
      () => {
        let step = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              await delay(2);
              if (step++ === 0) controller.enqueue(new Uint8Array(10));
              else controller.error(new Error("broke"));
            },
          }),
        );
      },
      {},
      { onLog() {} },
    );
    connect().send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].status, 200);
    assert.equal(entries()[0].bytes, 10);
    assert.equal(entries()[0].reason, "BODY_STREAM_FAILED");
    await server.shutdown();
  });

  test("a client that stops reading a streamed body: WRITE_TIMEOUT", async () => {
    const { server, connect, entries, clock } = logged(
      () =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              controller.enqueue(new Uint8Array(1024));
            },
          }),
        ),
      {},
      { writeTimeout: 1000 },
    );
    const connection = connect();
    connection.writeResult = false; // the client's window is full
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await delay(20);
    clock.advance(1500);
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].reason, "WRITE_TIMEOUT");
    assert.ok(entries()[0].bytes > 0);
    await server.shutdown();
  });

  test("behind a trusted proxy the forwarded client is logged; else the peer", async () => {
    const { server, connect, entries } = logged(() => textResponse("hi"), {
      trustProxy: ["192.0.2.7"],
    });
    connect().send("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    await waitUntil(() => entries().length === 1, "the entry");
    assert.equal(entries()[0].client, "203.0.113.9");
    await server.shutdown();
    const untrusted = logged(() => textResponse("hi"), { trustProxy: ["10.0.0.1"] });
    untrusted.connect().send("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    await waitUntil(() => untrusted.entries().length === 1, "the entry");
    assert.equal(untrusted.entries()[0].client, "192.0.2.7");
    await untrusted.server.shutdown();
  });

  test("entries are written by the time finished resolves", async () => {
    const { server, connect, entries } = logged(() => textResponse("hi"));
    connect().send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    await delay(0);
    await server.shutdown();
    assert.equal(entries().length, 1);
  });

  test("a bad format is refused", () => {
    assert.throws(
      () => memoryServer(() => textResponse("x"), { accessLog: "apache" as "common" }),
      /accessLog format/,
    );
  });
});
