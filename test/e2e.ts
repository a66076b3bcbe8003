// Layer 3 of the test suite: the server end to end on 127.0.0.1, port 0, over each transport this
// runtime has, with raw node:net clients, fetch, curl and a Hono app.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { Hono } from "hono";
import {
  BAD_REQUEST,
  bytesOf,
  delay,
  echoUrl,
  errorResponse,
  gate,
  listen,
  ok,
  RawClient,
  rawExchange,
  runCommand,
  textResponse,
  transportsHere,
  waitUntil,
  withServer,
  withTimeout,
} from "./helpers.ts";
import { HttpError, serve, switchProtocols } from "../mod.ts";
import type { Handler } from "../mod.ts";

for (const transport of transportsHere()) {
  describe(`serve() end to end over the ${transport} transport`, () => {
    test("serve() listens on 127.0.0.1 port 0 and answers fetch", async () => {
      const listened: number[] = [];
      const handler: Handler = (request, info) =>
        textResponse(
          `${request.method} ${
            new URL(request.url).pathname
          } from ${info.remoteAddr.hostname} to ${info.localAddr.port}`,
        );
      await withServer(
        await listen(transport, handler, { onListen: (addr) => listened.push(addr.port) }),
        async ({ server, port, addr }) => {
          assert.ok(port > 0);
          assert.deepEqual(server.addr, addr);
          assert.deepEqual(addr, { hostname: "127.0.0.1", port, transport: "tcp" });
          assert.deepEqual(listened, [port]);
          const response = await fetch(`http://127.0.0.1:${port}/hi`);
          assert.equal(response.status, 200);
          assert.equal(response.headers.get("content-type"), "text/plain");
          assert.equal(await response.text(), `GET /hi from 127.0.0.1 to ${port}`);
        },
      );
    });

    test("switchProtocols hands the socket to the new protocol after the 101, bytes past the head included", async () => {
      // The example of switchProtocols' JSDoc and the README: an echo protocol.
      const handler: Handler = () =>
        switchProtocols(({ transport: socket, buffered }) => {
          if (buffered.length > 0) socket.write(buffered.slice());
          return {
            onData: (chunk) => void socket.write(chunk),
            onEnd: () => socket.end(false),
            onDrain() {},
            onClose() {},
          };
        }, { upgrade: "echo" });
      await withServer(await listen(transport, handler), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          await client.write(
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nhello",
          );
          await client.waitForText(
            (text) => text.endsWith("\r\n\r\nhello"),
            "the 101 and the echo",
          );
          assert.ok(client.text().startsWith("HTTP/1.1 101 Switching Protocols\r\n"));
          assert.match(client.text(), /\r\nconnection: upgrade\r\n/);
          await client.write(" world");
          await client.waitForText((text) => text.endsWith("hello world"), "the second echo");
          client.socket.end();
          await client.waitForClose();
        } finally {
          client.destroy();
        }
      });
    });

    test("Server.addr and onListen come once ready resolves, on every runtime", async () => {
      const listened: number[] = [];
      const server = serve({
        port: 0,
        hostname: "127.0.0.1",
        transport,
        onListen: (addr) => listened.push(addr.port),
      }, echoUrl);
      try {
        assert.throws(() => server.addr, /await server.ready/);
        assert.deepEqual(listened, []);
        const addr = await withTimeout(server.ready, 3000, "Server.ready");
        assert.deepEqual(server.addr, addr);
        assert.deepEqual(listened, [addr.port]);
      } finally {
        await withTimeout(server.shutdown(), 3000, "Server.shutdown()");
      }
    });

    test('hostname "localhost" is reported as the address bound, not the name', async () => {
      const server = serve({ port: 0, hostname: "localhost", transport }, echoUrl);
      try {
        const addr = await withTimeout(server.ready, 3000, "Server.ready");
        const { address } = await lookup("localhost");
        assert.deepEqual(addr, { hostname: address, port: addr.port, transport: "tcp" });
        const client = await RawClient.connect(addr.port, { host: address });
        client.destroy();
      } finally {
        await withTimeout(server.shutdown(), 3000, "Server.shutdown()");
      }
    });

    test("serve() echoes a fetch POST body", async () => {
      const handler: Handler = async (request) =>
        new Response(await request.arrayBuffer(), {
          headers: { "content-type": "application/octet-stream" },
        });
      await withServer(await listen(transport, handler), async ({ port }) => {
        const small = await fetch(`http://127.0.0.1:${port}/echo`, {
          method: "POST",
          body: "héllo wörld",
        });
        assert.equal(await small.text(), "héllo wörld");
        const big = new Uint8Array(1024 * 1024 + 7);
        for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
        const response = await fetch(`http://127.0.0.1:${port}/echo`, {
          method: "POST",
          body: big,
        });
        assert.deepEqual(new Uint8Array(await response.arrayBuffer()), big);
      });
    });

    test("serve() streams a response to fetch as it is produced", async () => {
      const second = gate();
      const handler: Handler = () => {
        let step = 0;
        return textResponse(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              step++;
              if (step === 1) controller.enqueue(bytesOf("first;"));
              else if (step === 2) {
                await second.opened;
                controller.enqueue(bytesOf("second"));
              } else controller.close();
            },
          }),
        );
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const response = await fetch(`http://127.0.0.1:${port}/stream`);
        assert.ok(response.body);
        const reader = response.body.getReader();
        let text = "";
        const decoder = new TextDecoder();
        while (text.length < "first;".length) {
          const { value, done } = await withTimeout(reader.read(), 3000, "the first chunk");
          assert.equal(done, false, "the body ended before the second chunk was produced");
          text += decoder.decode(value);
        }
        assert.equal(text, "first;");
        second.open();
        for (let i = 0; i < 100; i++) {
          const { value, done } = await withTimeout(reader.read(), 3000, "the rest");
          if (done) break;
          text += decoder.decode(value);
        }
        assert.equal(text, "first;second");
      });
    });

    test("serve() parses a request sent byte by byte", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          const request = "GET /bytes HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
          for (const byte of bytesOf(request)) {
            await client.write(new Uint8Array([byte]));
            await delay(1);
          }
          await client.waitForClose();
          assert.equal(client.text(), ok("GET http://b/bytes", "connection: close\r\n"));
        } finally {
          client.destroy();
        }
      });
    });

    test("serve() keeps serving after a client disconnects mid-body", async () => {
      const entered = gate();
      let outcome = "";
      const handler: Handler = async (request) => {
        if (request.method === "POST") {
          entered.open();
          try {
            outcome = `read ${(await request.text()).length}`;
          } catch {
            outcome = "body failed";
          }
        }
        return textResponse("ok");
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const client = await RawClient.connect(port);
        await client.write(
          "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789",
        );
        await withTimeout(entered.opened, 3000, "the handler");
        client.destroy();
        await waitUntil(() => outcome !== "", "the handler to see the body fail");
        assert.equal(outcome, "body failed");
        assert.equal(
          await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
          ok("ok", "connection: close\r\n"),
        );
      });
    });

    test("serve() with abortOnDisconnect aborts request.signal when the client leaves", async () => {
      const entered = gate();
      let reason = "";
      const handler: Handler = (request) => {
        if (new URL(request.url).pathname !== "/slow") return textResponse("ok");
        entered.open();
        return new Promise((resolve) => {
          request.signal.addEventListener("abort", () => {
            reason = request.signal.reason instanceof HttpError
              ? request.signal.reason.code
              : String(request.signal.reason);
            resolve(textResponse("too late"));
          });
        });
      };
      await withServer(
        await listen(transport, handler, { abortOnDisconnect: true }),
        async ({ port }) => {
          const client = await RawClient.connect(port);
          await client.write("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
          await withTimeout(entered.opened, 3000, "the handler");
          client.destroy();
          await waitUntil(() => reason !== "", "request.signal to abort");
          assert.equal(reason, "UNEXPECTED_EOF");
          assert.equal(
            await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            ok("ok", "connection: close\r\n"),
          );
        },
      );
    });

    test("serve() leaves request.signal alone by default", async () => {
      let aborted = false;
      const handler: Handler = async (request) => {
        await delay(20);
        aborted = request.signal.aborted;
        return textResponse("ok");
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        assert.equal(
          await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
          ok("ok", "connection: close\r\n"),
        );
        assert.equal(aborted, false);
      });
    });

    test("serve() stops pulling a response stream the client does not read", async () => {
      const chunk = 64 * 1024;
      const total = 64 * 1024 * 1024;
      let pulled = 0;
      let cancelled = false;
      const handler: Handler = (request) => {
        if (new URL(request.url).pathname !== "/big") return textResponse("small");
        return new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              if (pulled >= total) return controller.close();
              pulled += chunk;
              controller.enqueue(new Uint8Array(chunk));
            },
            cancel() {
              cancelled = true;
            },
          }),
          { headers: { "content-type": "application/octet-stream" } },
        );
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          client.socket.pause();
          await client.write("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
          await waitUntil(() => pulled > 0, "the handler's stream to be pulled");
          await delay(500);
          assert.ok(
            pulled < 16 * 1024 * 1024,
            `pulled ${pulled} bytes for a client that reads nothing`,
          );
        } finally {
          client.destroy();
        }
        await waitUntil(() => cancelled, "the response stream to be cancelled", 5000);
        assert.equal(
          await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
          ok("small", "connection: close\r\n"),
        );
      });
    });

    test("serve() stops reading a request body the handler does not read yet", async () => {
      const size = 48 * 1024 * 1024;
      const release = gate();
      const handler: Handler = async (request) => {
        await release.opened;
        return textResponse(String((await request.arrayBuffer()).byteLength));
      };
      await withServer(
        await listen(transport, handler, { maxBodyBytes: 64 * 1024 * 1024 }),
        async ({ port }) => {
          const client = await RawClient.connect(port);
          try {
            await client.write(
              `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`,
            );
            let flushed = false;
            const written = client.write(new Uint8Array(size)).then(() => flushed = true);
            await delay(500);
            // 48 MiB is far more than the kernel's socket buffers hold: had the server read it
            // all into memory, the write would be done by now.
            assert.equal(flushed, false, "the server read a body nobody was reading");
            release.open();
            await withTimeout(written, 10_000, "the body to be sent");
            await client.waitForClose(10_000);
            assert.equal(client.text(), ok(String(size), "connection: close\r\n"));
          } finally {
            release.open();
            client.destroy();
          }
        },
      );
    });

    test("serve() stops answering pipelined requests the client does not read", async () => {
      const body = new Uint8Array(256 * 1024);
      let calls = 0;
      const handler: Handler = (request) => {
        if (new URL(request.url).pathname !== "/big") return textResponse("small");
        calls++;
        return new Response(body, { headers: { "content-type": "application/octet-stream" } });
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          client.socket.pause();
          await client.write("GET /big HTTP/1.1\r\nHost: a\r\n\r\n".repeat(200));
          await waitUntil(() => calls > 0, "the handler to be called");
          await delay(500);
          // 200 answers are 50 MiB; the kernel's socket buffers hold a few MiB at most.
          assert.ok(
            calls < 100,
            `answered ${calls} of 200 requests for a client that reads nothing`,
          );
        } finally {
          client.destroy();
        }
        assert.equal(
          await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
          ok("small", "connection: close\r\n"),
        );
      });
    });

    test("serve() answers pipelined requests over a socket in order", async () => {
      const handler: Handler = async (request) => {
        const path = new URL(request.url).pathname;
        if (path === "/1") await delay(20);
        return textResponse(path);
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const text = await rawExchange(
          port,
          "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n" +
            "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert.equal(text, ok("/1") + ok("/2") + ok("/3", "connection: close\r\n"));
      });
    });

    test("serve() answers a client that half-closes after its request", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          await client.write("GET /half HTTP/1.1\r\nHost: a\r\n\r\n");
          client.socket.end();
          await client.waitForClose();
          // Whether the FIN is read before the response head is written is a race; either way
          // the server must answer in full and then close (RFC 9112 §9.6 asks no close option).
          assert.equal(
            client.text().replace("connection: close\r\n", ""),
            ok("GET http://a/half"),
          );
        } finally {
          client.destroy();
        }
      });
    });

    test("serve() reads a chunked request body sent in pieces over a socket", async () => {
      const handler: Handler = async (request) => textResponse(`got ${await request.text()}`);
      await withServer(await listen(transport, handler), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          await client.write("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
          for (const piece of ["5\r\nhel", "lo\r\n", "6\r\n worl", "d\r\n0\r\n", "\r\n"]) {
            await delay(5);
            await client.write(piece);
          }
          await client.write("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
          await client.waitForClose();
          assert.equal(
            client.text(),
            ok("got hello world") + ok("got ", "connection: close\r\n"),
          );
        } finally {
          client.destroy();
        }
      });
    });

    test("serve() sends large bodies intact, with a length and chunked", async () => {
      const size = 8 * 1024 * 1024 + 3;
      const big = new Uint8Array(size);
      for (let i = 0; i < size; i++) big[i] = (i * 7 + (i >> 11)) & 0xff;
      const handler: Handler = (request) => {
        if (new URL(request.url).pathname === "/known") return new Response(big);
        let offset = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              if (offset >= size) return controller.close();
              const end = Math.min(size, offset + 100_000);
              controller.enqueue(big.slice(offset, end));
              offset = end;
            },
          }),
        );
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        for (const path of ["/known", "/streamed"]) {
          const response = await fetch(`http://127.0.0.1:${port}${path}`);
          const got = new Uint8Array(await response.arrayBuffer());
          assert.equal(got.length, size, path);
          let mismatch = -1;
          for (let i = 0; i < size && mismatch === -1; i++) if (got[i] !== big[i]) mismatch = i;
          assert.equal(mismatch, -1, `${path}: first differing byte`);
        }
      });
    });

    test("serve() answers many concurrent connections", async () => {
      const handler: Handler = async (request) => {
        await delay(5);
        return textResponse(new URL(request.url).pathname);
      };
      await withServer(await listen(transport, handler), async ({ port }) => {
        const answers = await Promise.all(
          Array.from(
            { length: 50 },
            (_, i) =>
              rawExchange(port, `GET /${i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, 5000),
          ),
        );
        answers.forEach((answer, i) => assert.equal(answer, ok(`/${i}`, "connection: close\r\n")));
      });
    });

    test("serve() with an already aborted signal listens and shuts down at once", async () => {
      const server = serve(
        { port: 0, hostname: "127.0.0.1", transport, signal: AbortSignal.abort() },
        echoUrl,
      );
      const addr = await withTimeout(server.ready, 3000, "Server.ready");
      await withTimeout(server.finished, 3000, "Server.finished");
      await assert.rejects(RawClient.connect(addr.port), "the server accepts connections");
    });

    test("serve() reports a port already in use by rejecting ready, the same on every runtime", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        // serve() does not throw (Deno.listen and Bun.listen would): ready rejects.
        const second = serve({ port, hostname: "127.0.0.1", transport }, echoUrl);
        const failure = await withTimeout(
          second.ready.then(() => null, (error: unknown) => error),
          3000,
          "Server.ready",
        );
        assert.ok(failure instanceof Error, "a second server listened on a port in use");
        assert.equal(failure.message, `Cannot listen on 127.0.0.1:${port}: the address is in use`);
        assert.equal((failure as Error & { code?: string }).code, "EADDRINUSE");
        assert.ok(failure.cause !== undefined, "the runtime's own error is its cause");
        assert.throws(() => second.addr, /await server.ready/);
        // A server that never listened is finished, and shutting it down is harmless.
        await withTimeout(second.finished, 3000, "Server.finished");
        await withTimeout(second.shutdown(), 3000, "Server.shutdown()");
      });
    });

    test("serve() closes the socket after Connection: close", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          await client.write("GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
          await client.waitForClose();
          assert.equal(client.text(), ok("GET http://a/c", "connection: close\r\n"));
        } finally {
          client.destroy();
        }
      });
    });

    test("serve() keeps a socket open between requests", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        const client = await RawClient.connect(port);
        try {
          await client.write("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
          await client.waitForText((text) => text === ok("GET http://a/1"), "the first response");
          await delay(20);
          assert.equal(client.ended, false);
          await client.write("GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
          await client.waitForText(
            (text) => text === ok("GET http://a/1") + ok("GET http://a/2"),
            "the second response",
          );
        } finally {
          client.destroy();
        }
      });
    });

    test("serve() answers a refused request and closes the socket", async () => {
      await withServer(await listen(transport, echoUrl), async ({ port }) => {
        assert.equal(
          await rawExchange(
            port,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
          ),
          BAD_REQUEST,
        );
      });
    });

    test("serve() answers curl", async () => {
      const handler: Handler = async (request) =>
        request.method === "POST"
          ? textResponse(`posted ${await request.text()}`)
          : textResponse("hello curl");
      await withServer(await listen(transport, handler), async ({ port }) => {
        const url = `http://127.0.0.1:${port}/`;
        const got = await runCommand("curl", ["--http1.1", "-sS", "-i", url]);
        assert.equal(got.replace(/date: [^\r]+/gi, "date: X"), ok("hello curl"));
        const posted = await runCommand("curl", [
          "--http1.1",
          "-sS",
          "-i",
          "-H",
          "Expect: 100-continue",
          "--data-binary",
          "hi there",
          url,
        ]);
        assert.equal(
          posted.replace(/date: [^\r]+/gi, "date: X"),
          "HTTP/1.1 100 Continue\r\n\r\n" + ok("posted hi there"),
        );
      });
    });

    test("Server.shutdown() finishes the in-flight response and closes idle connections", async () => {
      const entered = gate();
      const release = gate();
      const handler: Handler = async (request) => {
        if (new URL(request.url).pathname === "/slow") {
          entered.open();
          await release.opened;
          return textResponse("slow done");
        }
        return textResponse("quick");
      };
      const { server, port } = await listen(transport, handler);
      const idle = await RawClient.connect(port);
      const busy = await RawClient.connect(port);
      try {
        await idle.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        await idle.waitForText((text) => text === ok("quick"), "the idle client's response");
        await busy.write("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        await withTimeout(entered.opened, 3000, "the slow handler");
        let finished = false;
        const shutdown = server.shutdown().then(() => {
          finished = true;
        });
        await idle.waitForClose();
        assert.equal(idle.text(), ok("quick"));
        await delay(50);
        assert.equal(finished, false, "shutdown resolved before the in-flight response");
        assert.equal(busy.ended, false);
        release.open();
        await busy.waitForClose();
        assert.equal(busy.text(), ok("slow done", "connection: close\r\n"));
        await withTimeout(shutdown, 3000, "Server.shutdown()");
        await withTimeout(server.finished, 100, "Server.finished");
        await assert.rejects(RawClient.connect(port), "the server still accepts connections");
      } finally {
        release.open();
        idle.destroy();
        busy.destroy();
        await withTimeout(server.shutdown(), 3000, "Server.shutdown()").catch(() => {});
      }
    });

    test("serve() shuts down when its signal aborts", async () => {
      const controller = new AbortController();
      const { server, port } = await listen(transport, echoUrl, { signal: controller.signal });
      try {
        assert.equal(
          await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
          ok("GET http://a/", "connection: close\r\n"),
        );
        controller.abort();
        await withTimeout(server.finished, 3000, "Server.finished after abort");
        await assert.rejects(RawClient.connect(port), "the server still accepts connections");
      } finally {
        await withTimeout(server.shutdown(), 3000, "Server.shutdown()").catch(() => {});
      }
    });

    test("serve() answers 503 to a connection over maxConnections", async () => {
      await withServer(
        await listen(transport, echoUrl, { maxConnections: 2 }),
        async ({ port }) => {
          const first = await RawClient.connect(port);
          const second = await RawClient.connect(port);
          try {
            for (const client of [first, second]) {
              await client.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
              await client.waitForText((text) => text === ok("GET http://a/"), "a response");
            }
            assert.equal(
              await rawExchange(port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              errorResponse(503, "Service Unavailable"),
            );
            // Once a client has closed its connection, its slot is free again. Noticing the close
            // takes a moment, so retry for a while; but well under the 2 s that a transport may
            // linger on a connection that the server closed first, which must not apply here.
            first.destroy();
            let answer = "";
            const deadline = Date.now() + 1500;
            for (let attempt = 0; attempt < 500 && Date.now() < deadline; attempt++) {
              answer = await rawExchange(
                port,
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
              );
              if (!answer.startsWith("HTTP/1.1 503")) break;
              await delay(10);
            }
            assert.equal(answer, ok("GET http://a/", "connection: close\r\n"));
          } finally {
            first.destroy();
            second.destroy();
          }
        },
      );
    });

    test("serve() serves a Hono app", async () => {
      const app = new Hono();
      app.get(
        "/users/:id",
        (c) => c.json({ id: c.req.param("id"), tab: c.req.query("tab") ?? null }),
      );
      app.get("/headers", (c) => {
        c.header("x-powered-by", "wireserve");
        return c.text(`client says ${c.req.header("x-client") ?? "nothing"}`);
      });
      app.post("/echo", async (c) => c.json({ received: await c.req.json() }, 201));
      await withServer(
        await listen(transport, (request, info) => app.fetch(request, info)),
        async ({ port }) => {
          const base = `http://127.0.0.1:${port}`;
          const user = await fetch(`${base}/users/42?tab=posts`);
          assert.equal(user.status, 200);
          assert.match(user.headers.get("content-type") ?? "", /^application\/json/);
          assert.deepEqual(await user.json(), { id: "42", tab: "posts" });

          const headers = await fetch(`${base}/headers`, { headers: { "x-client": "hello" } });
          assert.equal(headers.headers.get("x-powered-by"), "wireserve");
          assert.equal(await headers.text(), "client says hello");

          const echo = await fetch(`${base}/echo`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ a: [1, 2, 3], b: "ü" }),
          });
          assert.equal(echo.status, 201);
          assert.deepEqual(await echo.json(), { received: { a: [1, 2, 3], b: "ü" } });

          const missing = await fetch(`${base}/nowhere`);
          assert.equal(missing.status, 404);
          assert.equal(await missing.text(), "404 Not Found");
        },
      );
    });
  });
}
