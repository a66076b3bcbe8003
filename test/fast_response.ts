// Layer 2 of the test suite, FastResponse: the class as a Response (fields, body readers, the
// Fetch standard's errors), then serve() writing it over an in-memory connection, asserting the
// exact bytes written back (the Date value masked as `date: X`), and last the class under the
// runtime's own server (Deno.serve, Bun.serve), where it has one.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  bytesOf,
  capturingErrors,
  expectOutput,
  type MemoryConnection,
  memoryServer,
  settle,
  textOf,
  withServer,
} from "./helpers.ts";
import { FastResponse, serve } from "../mod.ts";
import type { Handler } from "../mod.ts";

describe("FastResponse", () => {
  /** A handler that calls `handlers` one after the other, one per request. */
  const inTurn = (handlers: Handler[]): Handler => {
    let next = 0;
    return (request, info) => handlers[next++](request, info);
  };

  /** Sends a GET on a new connection and returns the answer once its head is complete. */
  const answerToGet = async (connect: () => MemoryConnection): Promise<string> => {
    const connection = connect();
    connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await settle(() => connection.output().includes("\r\n\r\n"));
    return connection.output();
  };

  const fastHead = (length: number, type = "text/plain;charset=UTF-8", extra = "") =>
    `HTTP/1.1 200 OK\r\ncontent-type: ${type}\r\n${extra}date: X\r\ncontent-length: ${length}\r\n\r\n`;

  test("FastResponse is a Response with the fields and body Response gives it", async () => {
    const response = new FastResponse("héllo", {
      status: 201,
      statusText: "Made",
      headers: { "x-a": "1" },
    });
    assert.ok(response instanceof Response);
    assert.equal(response.status, 201);
    assert.equal(response.statusText, "Made");
    assert.equal(response.ok, true);
    assert.equal(response.type, "default");
    assert.deepEqual([...response.headers], [
      ["content-type", "text/plain;charset=UTF-8"],
      ["x-a", "1"],
    ]);
    assert.equal(response.bodyUsed, false);
    const copy = response.clone();
    assert.ok(copy instanceof FastResponse);
    assert.equal(await copy.text(), "héllo");
    assert.equal(copy.status, 201);
    assert.equal(copy.statusText, "Made");
    const untyped = new FastResponse("x");
    untyped.headers.delete("content-type");
    assert.equal(untyped.clone().headers.get("content-type"), null);
    assert.equal(await response.text(), "héllo");
    assert.equal(response.bodyUsed, true);
    await assert.rejects(response.text(), TypeError);
    assert.throws(() => response.clone(), TypeError);
  });

  test("FastResponse reads as a stream, bytes, a blob and JSON", async () => {
    assert.equal(textOf(await new FastResponse("abc").bytes()), "abc");
    assert.equal(new TextDecoder().decode(await new FastResponse("abc").arrayBuffer()), "abc");
    const blob = await new FastResponse("abc").blob();
    assert.equal(blob.type.toLowerCase(), "text/plain;charset=utf-8");
    assert.equal(await blob.text(), "abc");
    assert.deepEqual(await new FastResponse('{"a":1}').json(), { a: 1 });
    const reader = new FastResponse(bytesOf("xyz") as BodyInit).body!.getReader();
    const chunks: Uint8Array[] = [];
    for (let result = await reader.read(); !result.done; result = await reader.read()) {
      chunks.push(result.value);
    }
    assert.equal(textOf(chunks), "xyz");
    assert.equal(new FastResponse().body, null);
    assert.equal(new FastResponse(null, { status: 204 }).body, null);
  });

  test("FastResponse copies bytes as Response does", async () => {
    const bytes = bytesOf("abc");
    const response = new FastResponse(bytes as BodyInit);
    bytes[0] = 0x7a;
    assert.equal(textOf(await response.bytes()), "abc");
    assert.equal(response.headers.get("content-type"), null);
  });

  test("FastResponse throws where the Fetch standard's Response throws, on every runtime", () => {
    // Bun's own Response lets the null-body statuses and the CR LF pass; Deno's and Node's don't.
    for (const status of [204, 205, 304]) {
      assert.throws(() => new FastResponse("x", { status }), TypeError);
      assert.throws(() => new FastResponse(bytesOf("x") as BodyInit, { status }), TypeError);
      assert.equal(new FastResponse(null, { status }).status, status);
    }
    assert.throws(() => new FastResponse("x", { statusText: "a\r\nb" }), TypeError);
    assert.throws(() => new FastResponse("x", { status: 99 }), RangeError);
    assert.throws(() => new FastResponse("x", { status: 600 }), RangeError);
    assert.throws(() => new FastResponse("x", { headers: { "bad name": "1" } }), TypeError);
  });

  test("FastResponse.json serializes with application/json", async () => {
    const response = FastResponse.json({ a: [1, "é"] }, { status: 202, headers: { "x-b": "2" } });
    assert.ok(response instanceof FastResponse);
    assert.equal(response.status, 202);
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.equal(response.headers.get("x-b"), "2");
    assert.deepEqual(await response.json(), { a: [1, "é"] });
    const typed = FastResponse.json(1, { headers: { "content-type": "application/x-thing" } });
    assert.equal(typed.headers.get("content-type"), "application/x-thing");
    assert.throws(() => FastResponse.json(undefined), TypeError);
  });

  test("serve() writes a FastResponse's string body as UTF-8 with its length", async () => {
    const handler: Handler = () => new FastResponse("héllo ✓", { headers: { "x-a": "1" } });
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      const body = textOf(bytesOf(unescape(encodeURIComponent("héllo ✓"))));
      await expectOutput(connection, fastHead(body.length, undefined, "x-a: 1\r\n") + body, false);
    });
  });

  test("serve() writes a FastResponse with bytes, no body, and a status that has none", async () => {
    const bodies: Handler[] = [
      () =>
        new FastResponse(bytesOf("\x00\xff") as BodyInit, { headers: { "content-type": "x/y" } }),
      () => new FastResponse(null, { headers: { "content-type": "x/y" } }),
      () => new FastResponse(null, { status: 204 }),
    ];
    await withServer(memoryServer(inTurn(bodies)), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3));
      await expectOutput(
        connection,
        fastHead(2, "x/y") + "\x00\xff" + fastHead(0, "x/y") +
          "HTTP/1.1 204 No Content\r\ndate: X\r\n\r\n",
        false,
      );
    });
  });

  test("serve() writes a FastResponse without making or reading its body stream", async () => {
    let streamsAsked = 0;
    class Watched extends FastResponse {
      override get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
        streamsAsked++;
        return super.body;
      }
    }
    const handler: Handler = () => new Watched("watched");
    await withServer(memoryServer(handler), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3));
      await expectOutput(connection, (fastHead(7) + "watched").repeat(3), false);
      assert.equal(streamsAsked, 0);
    });
  });

  test("serve() writes a small response in one write and a large body after its head, uncopied", async () => {
    const large = "x".repeat(300 * 1024);
    const handler: Handler = (request) =>
      new FastResponse(new URL(request.url).pathname === "/large" ? large : "small");
    await withServer(memoryServer(handler), async ({ connect }) => {
      const small = connect();
      small.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await expectOutput(small, fastHead(5) + "small", false);
      assert.equal(small.writes.length, 1);
      const big = connect();
      big.send("GET /large HTTP/1.1\r\nHost: a\r\n\r\n");
      await expectOutput(big, fastHead(large.length) + large, false);
      assert.equal(big.writes.length, 2);
      assert.equal(big.writes[1].length, large.length); // the body, not copied in with the head
    });
  });

  test("serve() answers HEAD for a FastResponse with the GET length and no body", async () => {
    await withServer(memoryServer(() => new FastResponse("hello")), async ({ connect }) => {
      const connection = connect();
      connection.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
      await expectOutput(connection, fastHead(5) + fastHead(5) + "hello", false);
    });
  });

  test("serve() sends a FastResponse whose body a middleware read, as the middleware left it", async () => {
    // Reading a clone leaves the body unread; a middleware that peeks at the stream and returns it.
    const handler: Handler = async () => {
      const response = new FastResponse("abc");
      assert.equal(await response.clone().text(), "abc");
      return response;
    };
    const asked: Handler = () => {
      const response = new FastResponse("def");
      void response.body; // made, not read
      return response;
    };
    await withServer(
      memoryServer(inTurn([handler, asked])),
      async ({ connect }) => {
        const connection = connect();
        connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2));
        await expectOutput(connection, fastHead(3) + "abc" + fastHead(3) + "def", false);
      },
    );
  });

  test("serve() sends the same FastResponse without a body any number of times", async () => {
    const noContent = new FastResponse(null, { status: 204 });
    await withServer(memoryServer(() => noContent), async ({ connect }) => {
      const connection = connect();
      connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(3));
      await expectOutput(connection, "HTTP/1.1 204 No Content\r\ndate: X\r\n\r\n".repeat(3), false);
      assert.equal(noContent.bodyUsed, false);
    });
  });

  test("serve() reads a FastResponse's stream once someone has it, and fails as Response does on a locked one", async () => {
    const handlers: Handler[] = [
      () => {
        const response = new FastResponse("locked");
        response.body!.getReader();
        return response;
      },
      () => {
        const response = new FastResponse("teed");
        const [mine, yours] = response.body!.tee();
        void mine.cancel();
        return new FastResponse(yours, { headers: response.headers });
      },
    ];
    const errors = await capturingErrors(async () => {
      await withServer(
        memoryServer(inTurn(handlers)),
        async ({ connect }) => {
          assert.match(await answerToGet(connect), /^HTTP\/1\.1 500 /);
          const second = connect();
          second.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
          await settle(() => second.output().endsWith("teed"));
          assert.match(second.output(), /^HTTP\/1\.1 200 OK\r\n/);
          assert.ok(second.output().endsWith("\r\n\r\nteed"), second.output());
        },
      );
    });
    assert.equal(errors.length, 1);
  });

  test("serve() answers 500 for a FastResponse whose body was used, or sent already", async () => {
    const shared = new FastResponse("once");
    const handlers: Handler[] = [
      () => shared,
      () => shared,
      async () => {
        const response = new FastResponse("read");
        await response.text();
        return response;
      },
    ];
    const errors = await capturingErrors(async () => {
      await withServer(
        memoryServer(inTurn(handlers)),
        async ({ connect }) => {
          const connection = connect();
          connection.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
          await expectOutput(connection, fastHead(4) + "once", false);
          assert.equal(shared.bodyUsed, true);
          await assert.rejects(shared.text(), TypeError);
          assert.match(await answerToGet(connect), /^HTTP\/1\.1 500 /); // sent already
          assert.match(await answerToGet(connect), /^HTTP\/1\.1 500 /); // read by the handler
        },
      );
    });
    assert.equal(errors.length, 2);
  });

  test("FastResponse works under the runtime's own server, where it has one", async () => {
    const runtime = globalThis as unknown as {
      Deno?: {
        serve(
          options: { port: number; hostname: string; onListen(): void },
          handler: () => Response,
        ): { addr: { port: number }; shutdown(): Promise<void> };
      };
      Bun?: {
        serve(options: { port: number; hostname: string; fetch(): Response }): {
          port: number;
          stop(force: boolean): Promise<void>;
        };
      };
    };
    const handler = () => new FastResponse("native", { headers: { "x-a": "1" } });
    let port: number;
    let stop: () => Promise<void>;
    if (runtime.Deno !== undefined) {
      const server = runtime.Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
      port = server.addr.port;
      stop = () => server.shutdown();
    } else if (runtime.Bun !== undefined) {
      const server = runtime.Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: handler });
      port = server.port;
      stop = () => server.stop(true);
    } else {
      // Node has no fetch-handler server of its own: wireserve's is the one.
      const server = serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
      port = (await server.ready).port;
      stop = () => server.shutdown();
    }
    try {
      const response = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(response.headers.get("x-a"), "1");
      assert.equal(await response.text(), "native");
    } finally {
      await stop();
    }
  });
});
