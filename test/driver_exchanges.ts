// Layer 2 of the test suite, as a table: the driver over an in-memory connection, one exchange per
// case. Each case sends its raw bytes at once on one connection and asserts the exact bytes written
// back (the Date value masked as `date: X`) and whether the driver ended the connection; the tests
// that need more turns than that (several sends, waits, gates, backpressure) stay as ordinary tests
// in `test/driver.ts`.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  BAD_REQUEST,
  capturingErrors,
  delay,
  echoUrl,
  errorResponse,
  expectOutput,
  MemoryConnection,
  memoryServer,
  ok,
  okHead,
  slowStream,
  textResponse,
  withServer,
} from "./helpers.ts";
import type { Handler, NetAddr, ServeOptions } from "../mod.ts";

/** What a case runs against: the handler, the server's options, and what to check they saw. */
interface ExchangeSubject {
  handler: Handler;
  options?: Omit<ServeOptions, "transport">;
  /** Assertions beyond the output, run once it has been checked, before the server shuts down. */
  after?: () => void;
}

/** One exchange: raw bytes (a request, or several pipelined) sent at once, and the exact answer. */
type ExchangeCase =
  & {
    /** The test's name; the loop appends `(rfc)` when given. */
    name: string;
    /** The section whose strict choice the case checks, e.g. "RFC 9112 §6.3". */
    rfc?: string;
    /** A connection other than the default plain one on 127.0.0.1 (secure, IPv6). */
    connection?: () => MemoryConnection;
    /** The raw request bytes, one byte per code unit. */
    send: string;
    /** The exact output, Date masked. */
    expect: string;
    /** Whether the driver ends the connection afterwards. */
    closed: boolean;
    /**
     * For a case whose handler fails on purpose: the errors the server logs are captured, not
     * printed, and given here once the server has shut down.
     */
    logged?: (logged: unknown[][]) => void;
  }
  & (
    | ExchangeSubject
    // A subject that counts or records what it sees is made afresh for each run, so that no run
    // can see another's state.
    | { make: () => ExchangeSubject }
  );

/** A handler that counts its calls, for the cases that check when the driver calls it at all. */
function counting(answer: string, expectedCalls: number): ExchangeSubject {
  let calls = 0;
  return {
    handler: () => {
      calls++;
      return textResponse(answer);
    },
    after: () => assert.equal(calls, expectedCalls),
  };
}

/** The plain 500 the driver answers when neither the handler nor onError gives a response. */
const INTERNAL_ERROR =
  "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\ndate: X\r\n" +
  "content-length: 26\r\n\r\n500 Internal Server Error\n";

class SecureConnection extends MemoryConnection {
  override readonly secure = true;
}

class V6Connection extends MemoryConnection {
  override readonly localAddr: NetAddr = { hostname: "::1", port: 8443, transport: "tcp" };
}

const EXCHANGES: readonly ExchangeCase[] = [
  // Framing and keep-alive.
  {
    name: "serve() answers a GET with a length-framed response",
    make() {
      const seen: string[] = [];
      return {
        handler: (request, info) => {
          seen.push(`${info.remoteAddr.hostname}:${info.remoteAddr.port} ${info.secure}`);
          return echoUrl(request, info);
        },
        after: () => assert.deepEqual(seen, ["192.0.2.7:40000 false"]),
      };
    },
    send: "GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    expect: ok("GET http://example.com/hello?x=1"),
    closed: false,
  },
  {
    name: "serve() answers two pipelined requests in one chunk in order",
    handler: echoUrl,
    send: "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: ok("GET http://a/one") + ok("GET http://a/two"),
    closed: false,
  },
  {
    name: "serve() answers pipelined requests in order when the second handler is slower",
    handler: async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/slow") await delay(30);
      return textResponse(path);
    },
    send:
      "GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: ok("/fast") + ok("/slow") + ok("/last"),
    closed: false,
  },
  {
    name: "serve() closes after an HTTP/1.0 request without keep-alive",
    rfc: "RFC 9112 §9.3",
    handler: echoUrl,
    send: "GET /old HTTP/1.0\r\n\r\n",
    expect: ok("GET http://127.0.0.1:8080/old", "connection: close\r\n"),
    closed: true,
  },
  {
    name: "serve() closes after Connection: close and answers nothing pipelined behind it",
    rfc: "RFC 9112 §9.6",
    handler: echoUrl,
    send:
      "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("GET http://h/a", "connection: close\r\n"),
    closed: true,
  },
  {
    name: "serve() closes after maxRequestsPerConnection requests",
    handler: echoUrl,
    options: { maxRequestsPerConnection: 2 },
    send:
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("GET http://h/1") + ok("GET http://h/2", "connection: close\r\n"),
    closed: true,
  },

  // Responses without a body, and streamed ones.
  {
    name: "serve() answers HEAD with the GET content-length and no body",
    rfc: "RFC 9110 §9.3.2",
    handler: () => textResponse("hello"),
    send: "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: okHead(5) + ok("hello"),
    closed: false,
  },
  {
    name: "serve() sends 204 without content-length or body",
    rfc: "RFC 9110 §8.6",
    handler: () => new Response(null, { status: 204, headers: { "x-a": "1" } }),
    send: "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\nDELETE /y HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "HTTP/1.1 204 No Content\r\nx-a: 1\r\ndate: X\r\n\r\n".repeat(2),
    closed: false,
  },
  {
    name: "serve() sends 304 without a body",
    rfc: "RFC 9110 §15.4.5",
    handler: () =>
      new Response(null, { status: 304, headers: { etag: '"v1"', "cache-control": "max-age=9" } }),
    send:
      'GET /x HTTP/1.1\r\nHost: a\r\nIf-None-Match: "v1"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n',
    expect: 'HTTP/1.1 304 Not Modified\r\ncache-control: max-age=9\r\netag: "v1"\r\ndate: X\r\n\r\n'
      .repeat(2),
    closed: false,
  },
  {
    name: "serve() streams a body of unknown length as chunked",
    handler: () => textResponse(slowStream(["hello", " ", "wonderful world"])),
    send: "GET /s HTTP/1.1\r\nHost: a\r\n\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: (
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\n" +
      "transfer-encoding: chunked\r\n\r\n" +
      "5\r\nhello\r\n1\r\n \r\nf\r\nwonderful world\r\n0\r\n\r\n"
    ).repeat(2),
    closed: false,
  },
  {
    name: "serve() streams to an HTTP/1.0 client unframed and closes",
    rfc: "RFC 9112 §6.1",
    handler: () => textResponse(slowStream(["hello", " ", "world"])),
    send: "GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    expect:
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\nconnection: close\r\n\r\nhello world",
    closed: true,
  },
  {
    name: "serve() frames a stream by the content-length the handler set",
    handler: () =>
      textResponse(slowStream(["hello", " ", "world"]), { headers: { "content-length": "11" } }),
    send: "GET /s HTTP/1.1\r\nHost: a\r\n\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: ok("hello world") + ok("hello world"),
    closed: false,
  },
  {
    name: "serve() answers HEAD for a stream of unknown length with neither length nor body",
    handler: () => textResponse(slowStream(["hello"])),
    send: "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\n\r\n" +
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: X\r\ntransfer-encoding: chunked\r\n\r\n" +
      "5\r\nhello\r\n0\r\n\r\n",
    closed: false,
  },
  {
    name: "serve() writes the handler's statusText, and an empty reason for an unknown status",
    rfc: "RFC 9112 §4",
    handler: (request) =>
      new URL(request.url).pathname === "/custom"
        ? textResponse("x", { status: 200, statusText: "Fine" })
        : textResponse("y", { status: 299 }),
    send: "GET /custom HTTP/1.1\r\nHost: h\r\n\r\nGET /unknown HTTP/1.1\r\nHost: h\r\n\r\n",
    expect:
      "HTTP/1.1 200 Fine\r\ncontent-type: text/plain\r\ndate: X\r\ncontent-length: 1\r\n\r\nx" +
      "HTTP/1.1 299 \r\ncontent-type: text/plain\r\ndate: X\r\ncontent-length: 1\r\n\r\ny",
    closed: false,
  },

  // Request bodies: Expect, limits, and bodies the handler leaves unread.
  {
    name: "serve() never sends 100 Continue when the handler ignores the body, and closes",
    handler: () => textResponse("no thanks"),
    send: "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    expect: ok("no thanks", "connection: close\r\n"),
    closed: true,
  },
  {
    name: "serve() sends no 100 Continue when the handler cancels the body",
    rfc: "RFC 9110 §10.1.1",
    handler: async (request) => {
      await request.body?.cancel();
      return textResponse("cancelled");
    },
    send: "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    expect: ok("cancelled", "connection: close\r\n"),
    closed: true,
  },
  {
    name: "serve() answers 413 before calling the handler when Content-Length is over maxBodyBytes",
    make: () => ({ ...counting("called", 0), options: { maxBodyBytes: 10 } }),
    send: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
    expect: errorResponse(413, "Content Too Large"),
    closed: true,
  },
  {
    name: "serve() accepts a Content-Length body of exactly maxBodyBytes",
    handler: async (request) => textResponse(await request.text()),
    options: { maxBodyBytes: 10 },
    send: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
    expect: ok("0123456789"),
    closed: false,
  },
  {
    name: "serve() answers 400 to a malformed chunk and nothing after it",
    handler: async (request) => {
      await request.text().catch(() => "");
      return textResponse("handler answer");
    },
    send:
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: BAD_REQUEST,
    closed: true,
  },
  {
    name: "serve() discards a GET body and answers the next pipelined request",
    handler: echoUrl,
    send:
      "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("GET http://h/a") + ok("GET http://h/b"),
    closed: false,
  },
  {
    name: "serve() closes rather than discard a large unread body",
    handler: () => textResponse("no thanks"),
    send: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nhello",
    expect: ok("no thanks", "connection: close\r\n"),
    closed: true,
  },
  {
    name: "serve() closes after answering while an unread chunked body remains",
    handler: () => textResponse("no thanks"),
    send: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    expect: ok("no thanks", "connection: close\r\n"),
    closed: true,
  },

  // The request head: targets, limits, fields, and what is not a request.
  {
    name: "serve() accepts a target of exactly maxTargetBytes and maxHeaderCount fields",
    handler: (request) => textResponse(String(new URL(request.url).pathname.length)),
    send: `GET /${"a".repeat(8191)} HTTP/1.1\r\nHost: a\r\n${
      Array.from({ length: 99 }, (_, i) => `X-${i}: ${i}\r\n`).join("")
    }\r\n`,
    expect: ok("8192"),
    closed: false,
  },
  {
    name: "serve() gives the handler the URL of an absolute-form target",
    rfc: "RFC 9112 §3.2.2",
    handler: echoUrl,
    send: "GET http://example.com:8000/p?q=1 HTTP/1.1\r\nHost: example.com:8000\r\n\r\n",
    expect: ok("GET http://example.com:8000/p?q=1"),
    closed: false,
  },
  {
    name: "serve() ignores empty lines before a request line",
    rfc: "RFC 9112 §2.2",
    handler: echoUrl,
    send: "\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("GET http://h/a"),
    closed: false,
  },
  {
    name: "serve() hands the handler repeated fields joined and bytes 0x80-0xFF as latin1",
    rfc: "RFC 9110 §5.3",
    handler: (request) =>
      textResponse(
        `${request.headers.get("accept")}|${
          [...request.headers.get("x-latin") ?? ""].map((c) => c.charCodeAt(0).toString(16))
        }|${request.headers.get("host")}`,
      ),
    send: "GET / HTTP/1.1\r\nHost: h\r\nAccept: a/b\r\nX-Latin: caf\xe9\r\nAccept: c/d\r\n\r\n",
    expect: ok("a/b, c/d|63,61,66,e9|h"),
    closed: false,
  },
  {
    name: "serve() answers the requests before a bad pipelined one, then 400",
    handler: echoUrl,
    send:
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nBad Header: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("GET http://h/a") + BAD_REQUEST,
    closed: true,
  },
  {
    name: "serve() answers 400 at once to TLS bytes on a plain connection",
    handler: echoUrl,
    // A TLS ClientHello's first bytes, the same bytes as sendBytes would deliver.
    send: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
    expect: BAD_REQUEST,
    closed: true,
  },
  {
    name: "serve() answers 408 to a head not complete within headTimeout",
    handler: echoUrl,
    options: { headTimeout: 60 },
    send: "GET / HTTP/1.1\r\nHo",
    expect: errorResponse(408, "Request Timeout"),
    closed: true,
  },

  // OPTIONS *, which the driver answers itself.
  {
    name: "serve() answers OPTIONS * with 204 and an allow field, without the handler",
    rfc: "RFC 9112 §3.2.4",
    make: () => counting("handler answer", 1),
    send: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect:
      "HTTP/1.1 204 No Content\r\nallow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\ndate: X\r\n\r\n" +
      ok("handler answer"),
    closed: false,
  },
  {
    name: "serve() discards the body of OPTIONS * and answers the next request",
    handler: echoUrl,
    send:
      "OPTIONS * HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    expect:
      "HTTP/1.1 204 No Content\r\nallow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\ndate: X\r\n\r\n" +
      ok("GET http://a/next"),
    closed: false,
  },

  // The connection's own facts in the URL and ConnInfo.
  {
    name: "serve() builds https URLs and reports secure on a secure connection",
    connection: () => new SecureConnection(),
    handler: (request, info) => textResponse(`${request.url} ${info.secure}`),
    send: "GET /s HTTP/1.1\r\nHost: h\r\n\r\n",
    expect: ok("https://h/s true"),
    closed: false,
  },
  {
    name: "serve() builds the URL of an HTTP/1.0 request without Host from the local IPv6 address",
    connection: () => new V6Connection(),
    handler: echoUrl,
    send: "GET /old HTTP/1.0\r\n\r\n",
    expect: ok("GET http://[::1]:8443/old", "connection: close\r\n"),
    closed: true,
  },

  // Handlers that fail, and onError.
  {
    name: "serve() answers 500 when the handler throws and keeps the connection",
    handler: (request) => {
      if (new URL(request.url).pathname === "/throw") throw new Error("boom");
      return textResponse("fine");
    },
    send: "GET /throw HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: INTERNAL_ERROR + ok("fine"),
    closed: false,
    logged(logged) {
      assert.equal(logged.length, 1, "the error should be logged once");
      assert.ok(logged[0].some((value) => value instanceof Error && value.message === "boom"));
    },
  },
  {
    name: "serve() answers 500 when an async handler rejects",
    handler: () => Promise.reject(new Error("late boom")),
    send: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: INTERNAL_ERROR,
    closed: false,
    // Captured only so that the run's output stays clean; the case above checks what is logged.
    logged() {},
  },
  {
    name: "serve() answers 500 when the handler returns something that is not a Response",
    handler: (() => "hello") as unknown as Handler,
    send: "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: INTERNAL_ERROR + INTERNAL_ERROR,
    closed: false,
    logged: (logged) => assert.equal(logged.length, 2),
  },
  {
    name: "serve() answers with onError's response when the handler throws",
    make() {
      const seen: string[] = [];
      return {
        handler: () => {
          throw new Error("boom");
        },
        options: {
          onError(error: unknown, request: Request) {
            seen.push(`${(error as Error).message} ${request.url}`);
            return textResponse("custom failure", { status: 503, headers: { "retry-after": "1" } });
          },
        },
        after: () => assert.deepEqual(seen, ["boom http://a/x"]),
      };
    },
    send: "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    expect:
      "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\ndate: X\r\n" +
      "content-length: 14\r\n\r\ncustom failure",
    closed: false,
  },
  {
    name: "serve() answers a plain 500 when onError throws",
    handler: () => {
      throw new Error("boom");
    },
    options: {
      onError() {
        throw new Error("boom again");
      },
    },
    send: "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expect: INTERNAL_ERROR,
    closed: false,
  },
];

describe("serve() driver over an in-memory connection, one exchange each", () => {
  for (const exchange of EXCHANGES) {
    const name = exchange.rfc ? `${exchange.name} (${exchange.rfc})` : exchange.name;
    test(name, async () => {
      const { handler, options, after } = "make" in exchange ? exchange.make() : exchange;
      const run = () =>
        withServer(memoryServer(handler, options), async ({ connect }) => {
          const connection = connect(exchange.connection?.());
          connection.send(exchange.send);
          await expectOutput(connection, exchange.expect, exchange.closed);
          after?.();
        });
      if (exchange.logged) exchange.logged(await capturingErrors(run));
      else await run();
    });
  }
});
