/**
 * Tests of the WebSocket server (RFC 6455): the pure parts first (the frame reader fed whole,
 * split at every byte and byte by byte; the writer; close codes; the accept key), then the
 * handshake and the protocol through the driver over the in-memory transport with exact frames
 * (fragmentation, control frames, UTF-8 failing fast, limits, the closing handshake, shutdown,
 * idle pings, backpressure), then real clients over every transport: the runtime's own
 * `WebSocket`, the `ws` package, Python's `websockets` and a Hono app.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as zlib from "node:zlib";
import { Hono } from "hono";
import { defineWebSocketHelper, WSContext } from "hono/ws";
import {
  encodeWebSocketFrame,
  isValidCloseCode,
  serve,
  ServerWebSocket,
  upgradeWebSocket,
  webSocketAccept,
  WebSocketError,
  WebSocketFrameReader,
  WebSocketUpgradeError,
} from "../mod.ts";
import type { Handler, LogEntry, UpgradeWebSocketOptions, WebSocketFrameHeader } from "../mod.ts";
import type { MemoryConnection } from "./helpers.ts";
import {
  bytesOf,
  delay,
  ManualClock,
  memoryServer,
  runtimeName,
  startProcess,
  textOf,
  transportsHere,
  waitUntil,
} from "./helpers.ts";

//#region Frames, by hand

const MASK = [0x37, 0xfa, 0x21, 0x3d];

/** A client frame: masked (unless `mask: false`), FIN set unless `fin: false`. */
function clientFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: { fin?: boolean; mask?: boolean; rsv?: number } = {},
): Uint8Array {
  const data = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const masked = options.mask ?? true;
  const length = data.length;
  const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + lengthBytes + (masked ? 4 : 0) + length);
  frame[0] = ((options.fin ?? true) ? 0x80 : 0) | (options.rsv ?? 0) << 4 | opcode;
  frame[1] = (masked ? 0x80 : 0) | (lengthBytes === 0 ? length : lengthBytes === 2 ? 126 : 127);
  const view = new DataView(frame.buffer);
  if (lengthBytes === 2) view.setUint16(2, length);
  if (lengthBytes === 8) view.setUint32(6, length);
  let at = 2 + lengthBytes;
  if (masked) {
    frame.set(MASK, at);
    at += 4;
  }
  for (let i = 0; i < length; i++) frame[at + i] = data[i] ^ (masked ? MASK[i & 3] : 0);
  return frame;
}

/** The payload of a close frame. */
function closePayload(code: number, reason = ""): Uint8Array {
  const text = new TextEncoder().encode(reason);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}

/** A server frame as the tests expect it (unmasked), as latin1 text for comparing output. */
function serverFrame(opcode: number, payload: Uint8Array | string = ""): string {
  const data = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  return textOf(encodeWebSocketFrame(opcode, data));
}

/** What a reader delivered, in a form to compare. */
function readAll(
  chunks: Uint8Array[],
  options = { maxPayloadBytes: 1 << 20, requireMask: true },
): Array<{ header: WebSocketFrameHeader; payload: string }> {
  const frames: Array<{ header: WebSocketFrameHeader; payload: string }> = [];
  const reader = new WebSocketFrameReader(options, {
    header: (header) => frames.push({ header, payload: "" }),
    payload: (bytes) => frames[frames.length - 1].payload += textOf(bytes),
    end: () => {},
  });
  for (const chunk of chunks) reader.push(chunk);
  return frames;
}

/** Concatenates byte arrays. */
function join(...parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

//#endregion
//#region Layer 1: pure functions

describe("WebSocket frames, pure", () => {
  test("the accept key of RFC 6455 §1.3", () => {
    assert.equal(webSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  });

  test("close codes that may be sent and received (RFC 6455 §7.4)", () => {
    const valid = [
      1000,
      1001,
      1002,
      1003,
      1007,
      1008,
      1009,
      1010,
      1011,
      1012,
      1013,
      1014,
      3000,
      3999,
      4000,
      4999,
    ];
    const invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];
    for (const code of valid) assert.equal(isValidCloseCode(code), true, String(code));
    for (const code of invalid) assert.equal(isValidCloseCode(code), false, String(code));
  });

  test("the writer uses the shortest length form (RFC 6455 §5.2)", () => {
    for (const [length, header] of [[0, 2], [125, 2], [126, 4], [65535, 4], [65536, 10]] as const) {
      const frame = encodeWebSocketFrame(2, new Uint8Array(length));
      assert.equal(frame.length, header + length, `length ${length}`);
      assert.equal(frame[0], 0x82);
      const decoded = readAll([frame], { maxPayloadBytes: 1 << 20, requireMask: false });
      assert.equal(decoded[0].header.length, length);
    }
    assert.deepEqual([...encodeWebSocketFrame(1, bytesOf("hi"))], [0x81, 2, 0x68, 0x69]);
    assert.equal(encodeWebSocketFrame(0, bytesOf("x"), false)[0], 0x00);
    assert.equal(encodeWebSocketFrame(1, bytesOf("x"), true, true)[0], 0xc1);
  });

  const stream = join(
    clientFrame(1, "Hello"),
    clientFrame(2, new Uint8Array(300).map((_, i) => i)),
    clientFrame(1, "frag", { fin: false }),
    clientFrame(9, "ping!"),
    clientFrame(0, "ment", { fin: true }),
    clientFrame(2, new Uint8Array(70_000).fill(7)),
    clientFrame(8, closePayload(1000, "bye")),
    clientFrame(10),
  );
  const whole = readAll([stream.slice()]);

  test("the reader reads masked frames of every length form", () => {
    assert.deepEqual(whole.map((f) => [f.header.opcode, f.header.fin, f.header.length]), [
      [1, true, 5],
      [2, true, 300],
      [1, false, 4],
      [9, true, 5],
      [0, true, 4],
      [2, true, 70_000],
      [8, true, 5],
      [10, true, 0],
    ]);
    assert.equal(whole[0].payload, "Hello");
    assert.equal(whole[3].payload, "ping!");
    assert.equal(whole[5].payload, textOf(new Uint8Array(70_000).fill(7)));
  });

  test("the reader gives the same frames split at every index", () => {
    for (let split = 1; split < stream.length; split += split < 400 ? 1 : 997) {
      const copy = stream.slice();
      assert.deepEqual(
        readAll([copy.subarray(0, split), copy.subarray(split)]),
        whole,
        `at ${split}`,
      );
    }
  });

  test("unmasking is exact at every alignment and mask position", () => {
    const payload = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 0xff);
    const expected = textOf(payload);
    for (let lead = 0; lead < 8; lead++) {
      for (let split = 1; split < 40; split++) {
        // `lead` bytes before the frame shift its payload's alignment in the buffer.
        const buffer = join(new Uint8Array(lead), clientFrame(2, payload));
        const frame = buffer.subarray(lead);
        const frames = readAll([frame.subarray(0, 8 + split), frame.subarray(8 + split)]);
        assert.equal(frames[0].payload, expected, `lead ${lead}, split ${split}`);
      }
    }
  });

  test("the reader gives the same frames byte by byte", () => {
    const copy = stream.slice(0, 500); // the first frames: byte by byte is slow for 70 KB
    const expected = readAll([copy.slice()]);
    const bytes: Uint8Array[] = [];
    for (let i = 0; i < copy.length; i++) bytes.push(copy.subarray(i, i + 1));
    assert.deepEqual(readAll(bytes), expected);
  });

  const violations: Array<[string, Uint8Array, number]> = [
    ["RSV1 without an extension", clientFrame(1, "x", { rsv: 4 }), 1002],
    ["RSV2", clientFrame(1, "x", { rsv: 2 }), 1002],
    ["RSV3", clientFrame(1, "x", { rsv: 1 }), 1002],
    ...[3, 4, 5, 6, 7, 11, 12, 13, 14, 15].map((opcode): [string, Uint8Array, number] => [
      `opcode ${opcode}`,
      clientFrame(opcode, "x"),
      1002,
    ]),
    ["a fragmented ping", clientFrame(9, "x", { fin: false }), 1002],
    ["a close frame of 126 bytes", clientFrame(8, new Uint8Array(126)), 1002],
    ["an unmasked frame", clientFrame(1, "x", { mask: false }), 1002],
    ["a 16-bit length under 126", new Uint8Array([0x81, 0xfe, 0, 5, 1, 2, 3, 4]), 1002],
    ["a 64-bit length under 65536", new Uint8Array([0x82, 0xff, 0, 0, 0, 0, 0, 0, 1, 0]), 1002],
    [
      "a 64-bit length with the top bit",
      new Uint8Array([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
      1002,
    ],
    ["a frame over the limit", new Uint8Array([0x82, 0xff, 0, 0, 0, 0, 0, 0x20, 0, 0]), 1009],
  ];
  for (const [name, frame, code] of violations) {
    test(`the reader refuses ${name} with ${code}, from its header alone`, () => {
      // Only as many bytes as the header: the error comes before any payload.
      const headerLength = (frame[1] & 0x7f) === 127 ? 10 : (frame[1] & 0x7f) === 126 ? 4 : 2;
      assert.throws(
        () => readAll([frame.slice(0, headerLength)]),
        (error: unknown) => error instanceof WebSocketError && error.code === code,
      );
    });
  }
});

//#endregion
//#region Layer 2: the protocol through the driver

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE = `GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
const SWITCHED = "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: " +
  "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nupgrade: websocket\r\ndate: X\r\nconnection: upgrade\r\n\r\n";

/** An echo server over the memory transport, and what its sockets saw. */
function echoServer(
  options: UpgradeWebSocketOptions = {},
  serveOptions: Record<string, unknown> = {},
) {
  const closes: Array<[number, string, boolean]> = [];
  const logs: LogEntry[] = [];
  const sockets: ServerWebSocket[] = [];
  const clock = new ManualClock();
  const { server, connect } = memoryServer((request) => {
    const { socket, response } = upgradeWebSocket(request, options);
    sockets.push(socket);
    socket.onmessage = (event) => socket.send(event.data);
    socket.onclose = (event) => closes.push([event.code, event.reason, event.wasClean]);
    return response;
  }, { clock, onLog: (entry) => logs.push(entry), shutdownTimeout: 50, ...serveOptions });
  const open = async (): Promise<MemoryConnection> => {
    const connection = connect();
    connection.send(HANDSHAKE);
    await waitUntil(
      () => connection.output().startsWith(SWITCHED),
      `the 101: ${connection.output()}`,
    );
    return connection;
  };
  return { server, open, closes, logs, sockets, clock };
}

/** What the server wrote after the 101. */
function afterSwitch(connection: MemoryConnection): string {
  return connection.output().slice(SWITCHED.length);
}

/** Waits until the server wrote `expected` after the 101, then checks it is exactly that. */
async function expectFrames(connection: MemoryConnection, expected: string): Promise<void> {
  await waitUntil(
    () => afterSwitch(connection).length >= expected.length,
    `frames: ${JSON.stringify(afterSwitch(connection))}`,
  );
  await delay(5);
  assert.equal(afterSwitch(connection), expected);
}

describe("WebSocket through the driver", () => {
  test("the 101 carries the accept key; text and binary echo; the socket opens", async () => {
    const { server, open, sockets } = echoServer();
    const connection = await open();
    assert.equal(sockets[0].readyState, ServerWebSocket.OPEN);
    assert.equal(sockets[0].url, "ws://a/chat");
    connection.sendBytes(clientFrame(1, "héllo"));
    connection.sendBytes(clientFrame(2, new Uint8Array([0, 1, 2, 255])));
    await expectFrames(
      connection,
      serverFrame(1, "héllo") + serverFrame(2, new Uint8Array([0, 1, 2, 255])),
    );
    await server.shutdown();
  });

  test("fragments make one message; control frames may come between them (RFC 6455 §5.4)", async () => {
    const { server, open } = echoServer();
    const connection = await open();
    connection.sendBytes(join(
      clientFrame(1, "Hel", { fin: false }),
      clientFrame(9, "p"),
      clientFrame(0, "lo, ", { fin: false }),
      clientFrame(0, "world"),
    ));
    await expectFrames(connection, serverFrame(10, "p") + serverFrame(1, "Hello, world"));
    await server.shutdown();
  });

  test("a ping is answered with a pong carrying its payload; a pong is ignored", async () => {
    const { server, open } = echoServer();
    const connection = await open();
    connection.sendBytes(join(clientFrame(9, "abc"), clientFrame(10, "unasked")));
    await expectFrames(connection, serverFrame(10, "abc"));
    await server.shutdown();
  });

  test("the client closes: the server echoes its code, closes TCP, close is clean", async () => {
    const { server, open, closes } = echoServer();
    const connection = await open();
    connection.sendBytes(clientFrame(8, closePayload(4001, "done")));
    await expectFrames(connection, serverFrame(8, closePayload(4001)));
    await waitUntil(() => connection.ended, "the server to end the connection");
    connection.events?.onClose();
    await waitUntil(() => closes.length === 1, "the close event");
    assert.deepEqual(closes[0], [4001, "done", true]);
    await server.shutdown();
  });

  test("an empty close frame is answered with an empty one; code 1005", async () => {
    const { server, open, closes } = echoServer();
    const connection = await open();
    connection.sendBytes(clientFrame(8));
    await expectFrames(connection, serverFrame(8));
    connection.events?.onClose();
    await waitUntil(() => closes.length === 1, "the close event");
    assert.deepEqual(closes[0], [1005, "", true]);
    await server.shutdown();
  });

  const failures: Array<[string, Uint8Array[], number]> = [
    ["invalid UTF-8 in a text message", [clientFrame(1, new Uint8Array([0x68, 0xc3, 0x28]))], 1007],
    [
      "text that ends inside a character",
      [clientFrame(1, new Uint8Array([0x68, 0xe2, 0x82]))],
      1007,
    ],
    ["invalid UTF-8 across fragments", [
      clientFrame(1, new Uint8Array([0xf0, 0x9f]), { fin: false }),
      clientFrame(0, new Uint8Array([0x41])),
    ], 1007],
    ["a continuation without a message", [clientFrame(0, "x")], 1002],
    ["a new message inside a fragmented one", [
      clientFrame(1, "a", { fin: false }),
      clientFrame(1, "b"),
    ], 1002],
    ["a close frame of one byte", [clientFrame(8, new Uint8Array([3]))], 1002],
    ["close code 1005", [clientFrame(8, closePayload(1005))], 1002],
    ["close code 999", [clientFrame(8, closePayload(999))], 1002],
    ["a close reason that is not UTF-8", [
      clientFrame(8, join(closePayload(1000), new Uint8Array([0xff]))),
    ], 1007],
    ["an unmasked frame", [clientFrame(1, "x", { mask: false })], 1002],
    ["a reserved opcode", [clientFrame(3, "x")], 1002],
  ];
  for (const [name, frames, code] of failures) {
    test(`${name}: the connection fails with ${code}`, async () => {
      const { server, open, closes } = echoServer();
      const connection = await open();
      for (const frame of frames) connection.sendBytes(frame);
      await expectFrames(connection, serverFrame(8, closePayload(code)));
      await waitUntil(() => connection.ended, "the server to end the connection");
      connection.events?.onClose();
      await waitUntil(() => closes.length === 1, "the close event");
      assert.deepEqual(closes[0], [code, "", false]);
      await server.shutdown();
    });
  }

  test("invalid UTF-8 fails at once, before the rest of its frame arrives", async () => {
    const { server, open } = echoServer();
    const connection = await open();
    const frame = clientFrame(
      1,
      join(bytesOf("valid start "), new Uint8Array([0xc0, 0x80]), new Uint8Array(100)),
    );
    connection.sendBytes(frame.slice(0, 2 + 4 + 14)); // header, mask and the bad bytes only
    await expectFrames(connection, serverFrame(8, closePayload(1007)));
    await server.shutdown();
  });

  test("a message over maxMessageBytes fails with 1009 from its header", async () => {
    const { server, open } = echoServer({ maxMessageBytes: 1000 });
    const connection = await open();
    connection.sendBytes(clientFrame(2, new Uint8Array(1001)).slice(0, 8));
    await expectFrames(connection, serverFrame(8, closePayload(1009)));
    await server.shutdown();
  });

  test("fragments that together pass maxMessageBytes fail with 1009", async () => {
    const { server, open } = echoServer({ maxMessageBytes: 1000 });
    const connection = await open();
    connection.sendBytes(clientFrame(2, new Uint8Array(600), { fin: false }));
    connection.sendBytes(clientFrame(0, new Uint8Array(600)));
    await expectFrames(connection, serverFrame(8, closePayload(1009)));
    await server.shutdown();
  });

  test("more fragments than maxFragments fail with 1009", async () => {
    const { server, open } = echoServer({ maxFragments: 3 });
    const connection = await open();
    for (let i = 0; i < 4; i++) {
      connection.sendBytes(clientFrame(i === 0 ? 1 : 0, "x", { fin: false }));
    }
    await expectFrames(connection, serverFrame(8, closePayload(1009)));
    await server.shutdown();
  });

  test("the server closes: close frame, then the client's answer ends it cleanly", async () => {
    const closes: Array<[number, string, boolean]> = [];
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request);
      socket.onmessage = () => socket.close(4000, "enough");
      socket.onclose = (event) => closes.push([event.code, event.reason, event.wasClean]);
      return response;
    }, { shutdownTimeout: 50 });
    const connection = connect();
    connection.send(HANDSHAKE);
    await waitUntil(() => connection.output().startsWith(SWITCHED), "the 101");
    connection.sendBytes(clientFrame(1, "go"));
    await expectFrames(connection, serverFrame(8, closePayload(4000, "enough")));
    assert.equal(connection.ended, false, "it waits for the client's close frame");
    connection.sendBytes(clientFrame(8, closePayload(4000)));
    await waitUntil(() => connection.ended, "the server to end the connection");
    connection.events?.onClose();
    await waitUntil(() => closes.length === 1, "the close event");
    assert.deepEqual(closes[0], [4000, "", true]);
    await server.shutdown();
  });

  test("a client that never answers the close frame is dropped after closeTimeout", async () => {
    const { server, open, clock, sockets } = echoServer({ closeTimeout: 1000 });
    const connection = await open();
    sockets[0].close();
    await expectFrames(connection, serverFrame(8));
    clock.advance(1500);
    assert.ok(connection.destroyed, "dropped");
    await server.shutdown();
  });

  test("close() checks its code and reason as a browser does", async () => {
    const { server, open, sockets } = echoServer();
    await open();
    assert.throws(
      () => sockets[0].close(1001),
      (e: unknown) => e instanceof DOMException && e.name === "InvalidAccessError",
    );
    assert.throws(
      () => sockets[0].close(1000, "x".repeat(124)),
      (e: unknown) => e instanceof DOMException && e.name === "SyntaxError",
    );
    await server.shutdown();
  });

  test("an idle client is pinged, then dropped when nothing comes back", async () => {
    const { server, open, clock } = echoServer({ idleTimeout: 1000 });
    const connection = await open();
    clock.advance(500);
    await expectFrames(connection, "");
    clock.advance(600);
    await expectFrames(connection, serverFrame(9));
    clock.advance(1100);
    assert.ok(connection.destroyed, "dropped after twice the idle time");
    await server.shutdown();
  });

  test("a pong keeps an idle client", async () => {
    const { server, open, clock } = echoServer({ idleTimeout: 1000 });
    const connection = await open();
    clock.advance(1100);
    await expectFrames(connection, serverFrame(9));
    connection.sendBytes(clientFrame(10));
    clock.advance(1100);
    assert.equal(connection.destroyed, false);
    await server.shutdown();
  });

  test("shutdown closes open WebSockets with 1001 and waits for their answer", async () => {
    const { server, open, closes } = echoServer({}, { shutdownTimeout: 5000 });
    const connection = await open();
    const finished = server.shutdown();
    await expectFrames(connection, serverFrame(8, closePayload(1001, "going away")));
    let done = false;
    finished.then(() => done = true);
    await delay(10);
    assert.equal(done, false, "finished waits for the closing handshake");
    connection.sendBytes(clientFrame(8, closePayload(1001)));
    await waitUntil(() => connection.ended, "the end");
    connection.events?.onClose();
    await finished;
    assert.deepEqual(closes[0], [1001, "", true]);
  });

  test("send() says when it queues; drain follows; past maxBufferedBytes the socket is dropped", async () => {
    const results: boolean[] = [];
    let drains = 0;
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request, { maxBufferedBytes: 10_000 });
      socket.ondrain = () => drains++;
      socket.onmessage = () => {
        results.push(socket.send("a".repeat(100)));
        results.push(socket.send("b".repeat(100)));
        results.push(socket.bufferedAmount > 0);
      };
      return response;
    }, { onLog() {}, shutdownTimeout: 50 });
    const connection = connect();
    connection.send(HANDSHAKE);
    await waitUntil(() => connection.output().startsWith(SWITCHED), "the 101");
    connection.writeResult = false; // the client stops reading
    connection.sendBytes(clientFrame(1, "go"));
    await waitUntil(() => results.length === 3, "the sends");
    assert.deepEqual(results, [false, false, true]);
    connection.writeResult = true;
    connection.events?.onDrain();
    assert.equal(drains, 1);
    connection.writeResult = false;
    for (let i = 0; i < 60; i++) connection.sendBytes(clientFrame(1, "go"));
    await waitUntil(() => connection.destroyed, "dropped past maxBufferedBytes");
    await server.shutdown();
  });

  test("a listener or handler that throws is logged; the socket goes on", async () => {
    const logs: LogEntry[] = [];
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request);
      socket.addEventListener("message", () => {
        throw new Error("listener broke");
      });
      socket.onmessage = (event) => {
        socket.send(event.data);
        throw new Error("handler broke");
      };
      return response;
    }, { onLog: (entry) => logs.push(entry), shutdownTimeout: 50 });
    const connection = connect();
    connection.send(HANDSHAKE);
    await waitUntil(() => connection.output().startsWith(SWITCHED), "the 101");
    connection.sendBytes(clientFrame(1, "one"));
    connection.sendBytes(clientFrame(1, "two"));
    await expectFrames(connection, serverFrame(1, "one") + serverFrame(1, "two"));
    assert.equal(
      logs.filter((entry) => /broke/.test(String((entry.error as Error)?.message))).length,
      4,
    );
    await server.shutdown();
  });

  test("Blobs are sent in order with strings; binaryType blob delivers Blobs", async () => {
    const received: string[] = [];
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request);
      socket.binaryType = "blob";
      socket.onmessage = async (event) => {
        received.push(
          event.data instanceof Blob ? `blob ${await event.data.text()}` : String(event.data),
        );
        socket.send(new Blob(["first"]));
        socket.send("second");
      };
      return response;
    }, { shutdownTimeout: 50 });
    const connection = connect();
    connection.send(HANDSHAKE);
    await waitUntil(() => connection.output().startsWith(SWITCHED), "the 101");
    connection.sendBytes(clientFrame(2, "bin"));
    await expectFrames(connection, serverFrame(2, "first") + serverFrame(1, "second"));
    assert.deepEqual(received, ["blob bin"]);
    await server.shutdown();
  });

  test("the chosen subprotocol is in the 101 and on the socket", async () => {
    let protocol = "";
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request, { protocol: "chat" });
      protocol = socket.protocol;
      return response;
    }, { shutdownTimeout: 50 });
    const connection = connect();
    connection.send(
      HANDSHAKE.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: superchat, chat\r\n\r\n"),
    );
    await waitUntil(() => connection.output().includes("\r\n\r\n"), "the 101");
    assert.match(connection.output(), /^HTTP\/1\.1 101 [^]*sec-websocket-protocol: chat\r\n/);
    assert.equal(protocol, "chat");
    await server.shutdown();
  });

  const refusals: Array<[string, string, number]> = [
    ["a POST", HANDSHAKE.replace("GET", "POST"), 400],
    ["HTTP/1.0", HANDSHAKE.replace("HTTP/1.1", "HTTP/1.0"), 400],
    ["no Upgrade", HANDSHAKE.replace("Upgrade: websocket\r\n", ""), 400],
    ["Upgrade: h2c", HANDSHAKE.replace("Upgrade: websocket", "Upgrade: h2c"), 400],
    [
      "Connection without upgrade",
      HANDSHAKE.replace("Connection: Upgrade", "Connection: keep-alive"),
      400,
    ],
    ["no key", HANDSHAKE.replace(`Sec-WebSocket-Key: ${KEY}\r\n`, ""), 400],
    ["a key of 15 bytes", HANDSHAKE.replace(KEY, "dGhlIHNhbXBsZSBub25j"), 400],
    ["version 8", HANDSHAKE.replace("Version: 13", "Version: 8"), 426],
  ];
  for (const [name, request, status] of refusals) {
    test(`${name}: upgradeWebSocket throws, its response is ${status} (RFC 6455 §4.2.1)`, async () => {
      let thrown: unknown;
      const { server, connect } = memoryServer((req) => {
        try {
          return upgradeWebSocket(req).response;
        } catch (error) {
          thrown = error;
          return (error as WebSocketUpgradeError).response;
        }
      });
      const connection = connect();
      connection.send(request);
      await waitUntil(() => connection.output().includes("\r\n\r\n"), "a response");
      assert.ok(
        thrown instanceof WebSocketUpgradeError && thrown instanceof TypeError,
        String(thrown),
      );
      assert.match(connection.output(), new RegExp(`^HTTP/1\\.1 ${status} `));
      if (status === 426) assert.match(connection.output(), /sec-websocket-version: 13\r\n/);
      await server.shutdown();
    });
  }

  test("a request serve() did not parse, or a subprotocol not offered, is a TypeError", async () => {
    const request = new Request("http://a/", { headers: { upgrade: "websocket" } });
    assert.throws(() => upgradeWebSocket(request), WebSocketUpgradeError);
    let thrown: unknown;
    const { server, connect } = memoryServer((req) => {
      try {
        return upgradeWebSocket(req, { protocol: "chat" }).response;
      } catch (error) {
        thrown = error;
        return new Response("no", { status: 400 });
      }
    });
    const connection = connect();
    connection.send(HANDSHAKE.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: superchat\r\n\r\n"));
    await waitUntil(() => connection.output().includes("\r\n\r\n"), "a response");
    assert.ok(
      thrown instanceof TypeError && /subprotocol "chat"/.test(thrown.message),
      String(thrown),
    );
    assert.match(connection.output(), /^HTTP\/1\.1 400 /);
    await server.shutdown();
  });
});

describe("permessage-deflate (RFC 7692) through the driver", () => {
  /** The 101's Sec-WebSocket-Extensions for an offer, with compression on or off. */
  async function agreed(offer: string | null, compression = true): Promise<string | undefined> {
    const { server, connect } = memoryServer(
      (request) => upgradeWebSocket(request, { compression }).response,
      { shutdownTimeout: 50 },
    );
    const connection = connect();
    const extra = offer === null ? "" : `Sec-WebSocket-Extensions: ${offer}\r\n`;
    connection.send(HANDSHAKE.replace("\r\n\r\n", `\r\n${extra}\r\n`));
    await waitUntil(() => connection.output().includes("\r\n\r\n"), "the 101");
    await server.shutdown();
    return /sec-websocket-extensions: ([^\r]*)\r\n/.exec(connection.output())?.[1];
  }

  const offers: Array<[string | null, string | undefined]> = [
    ["permessage-deflate", "permessage-deflate; server_no_context_takeover"],
    [
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; server_no_context_takeover",
    ],
    [
      "permessage-deflate; server_max_window_bits=10",
      "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
    ],
    [
      "permessage-deflate; client_no_context_takeover",
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ],
    [
      "permessage-deflate; server_max_window_bits=8, permessage-deflate",
      "permessage-deflate; server_no_context_takeover",
    ],
    ["permessage-deflate; unknown=1", undefined],
    ["permessage-deflate; server_no_context_takeover; server_no_context_takeover", undefined],
    ["permessage-deflate; server_max_window_bits=16", undefined],
    ["permessage-deflate; client_max_window_bits=07", undefined],
    ["x-webkit-deflate-frame", undefined],
    [null, undefined],
  ];
  for (const [offer, expected] of offers) {
    test(`offer ${JSON.stringify(offer)} gets ${expected ?? "no extension"} (RFC 7692 §7.1)`, async () => {
      assert.equal(await agreed(offer), expected);
    });
  }

  test("with compression off, an offer is declined", async () => {
    assert.equal(await agreed("permessage-deflate", false), undefined);
  });

  /** A client compressor that keeps its context, as browsers do. */
  function clientDeflater(): (text: string) => Promise<Uint8Array> {
    const stream = zlib.createDeflateRaw();
    const out: Uint8Array[] = [];
    stream.on("data", (chunk: Uint8Array) => out.push(chunk));
    return (text) =>
      new Promise<Uint8Array>((resolve) => {
        stream.write(new TextEncoder().encode(text));
        stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          const bytes = join(...out.splice(0));
          resolve(bytes.subarray(0, bytes.length - 4)); // without 00 00 ff ff
        });
      });
  }

  /** The frames in `text` (server frames, unmasked), with their RSV1. */
  function framesOf(text: string): Array<{ rsv1: boolean; opcode: number; payload: Uint8Array }> {
    const frames: Array<{ rsv1: boolean; opcode: number; payload: Uint8Array }> = [];
    let rsv1 = false;
    let opcode = 0;
    let pieces: Uint8Array[] = [];
    new WebSocketFrameReader({ maxPayloadBytes: 1 << 24, requireMask: false, allowRsv1: true }, {
      header: (h) => {
        rsv1 = h.rsv1;
        opcode = h.opcode;
        pieces = [];
      },
      payload: (bytes) => pieces.push(bytes.slice()),
      end: () => frames.push({ rsv1, opcode, payload: join(...pieces) }),
    }).push(bytesOf(text));
    return frames;
  }

  /** A memory connection switched with permessage-deflate offered, and where its frames start. */
  async function deflateConnection(options: UpgradeWebSocketOptions, echo = true) {
    const { server, connect } = memoryServer((request) => {
      const { socket, response } = upgradeWebSocket(request, options);
      if (echo) socket.onmessage = (event) => socket.send(event.data);
      return response;
    }, { shutdownTimeout: 50, onLog() {} });
    const connection = connect();
    connection.send(
      HANDSHAKE.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    );
    await waitUntil(() => connection.output().includes("\r\n\r\n"), "the 101");
    const headEnd = connection.output().indexOf("\r\n\r\n") + 4;
    return { server, connection, frames: () => framesOf(connection.output().slice(headEnd)) };
  }

  test("compressed messages with the client's context inflate; big answers go compressed", async () => {
    const { server, connection, frames } = await deflateConnection({
      compression: { threshold: 100 },
    });
    const deflate = clientDeflater();
    const long = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    connection.sendBytes(clientFrame(1, await deflate(long), { rsv: 4 }));
    // The second refers back into the first: only the context kept here inflates it.
    connection.sendBytes(clientFrame(1, await deflate(long + "!"), { rsv: 4 }));
    connection.sendBytes(clientFrame(1, await deflate("short"), { rsv: 4 }));
    await waitUntil(() => frames().length === 3, "three answers");
    const answers = frames();
    assert.deepEqual(answers.map((f) => f.rsv1), [true, true, false]);
    const inflate = (payload: Uint8Array) =>
      new TextDecoder().decode(
        zlib.inflateRawSync(join(payload, new Uint8Array([0, 0, 0xff, 0xff])), {
          finishFlush: zlib.constants.Z_SYNC_FLUSH,
        }),
      );
    assert.equal(inflate(answers[0].payload), long);
    assert.equal(inflate(answers[1].payload), long + "!");
    assert.equal(new TextDecoder().decode(answers[2].payload), "short");
    assert.ok(answers[0].payload.length < long.length / 5, `${answers[0].payload.length} bytes`);
    await server.shutdown();
  });

  test("a small message that inflates past maxMessageBytes fails with 1009 (a bomb)", async () => {
    const { server, connection } = await deflateConnection({
      compression: true,
      maxMessageBytes: 100_000,
    });
    const bomb = zlib.deflateRawSync(new Uint8Array(10_000_000), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    assert.ok(bomb.length < 20_000, `${bomb.length} bytes`);
    connection.sendBytes(clientFrame(2, bomb.subarray(0, bomb.length - 4), { rsv: 4 }));
    await waitUntil(
      () => connection.output().endsWith(serverFrame(8, closePayload(1009))),
      "the 1009",
    );
    await server.shutdown();
  });

  const broken: Array<[string, Uint8Array[], number]> = [
    ["compressed data that does not inflate", [
      clientFrame(1, new Uint8Array([0xff, 0xff, 0xff]), { rsv: 4 }),
    ], 1007],
    ["RSV1 on a continuation", [
      clientFrame(1, "a", { fin: false }),
      clientFrame(0, "b", { rsv: 4 }),
    ], 1002],
  ];
  for (const [name, sent, code] of broken) {
    test(`${name} fails with ${code}`, async () => {
      const { server, connection } = await deflateConnection({ compression: true });
      for (const frame of sent) connection.sendBytes(frame);
      await waitUntil(
        () => connection.output().endsWith(serverFrame(8, closePayload(code))),
        `the ${code}`,
      );
      await server.shutdown();
    });
  }
});

//#endregion
//#region Layer 3: real clients

/** An echo server on 127.0.0.1 over `transport`; resolves with its port and a stop function. */
async function listenEcho(transport: "deno" | "bun" | "node", handler?: Handler) {
  const server = serve(
    { port: 0, hostname: "127.0.0.1", transport, onListen() {} },
    handler ?? ((request) => {
      if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("plain");
      }
      const { socket, response } = upgradeWebSocket(request, { compression: true });
      socket.onmessage = (event) => socket.send(event.data);
      return response;
    }),
  );
  const { port } = await server.ready;
  return { server, port };
}

const NODE = fileURLToPath(new URL("../node_modules/.bin/node", import.meta.url));
const WS_CLIENT = fileURLToPath(new URL("./fixtures/ws_client.mjs", import.meta.url));
const PY_CLIENT = fileURLToPath(new URL("./fixtures/ws_client.py", import.meta.url));

for (const transport of transportsHere()) {
  describe(`WebSocket with real clients over ${transport}`, () => {
    test(`${runtimeName()}'s own WebSocket client: text, binary, close`, async () => {
      const { server, port } = await listenEcho(transport);
      try {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.binaryType = "arraybuffer";
        const got: Array<string | number> = [];
        const closed = await new Promise<CloseEvent>((resolve, reject) => {
          ws.onopen = () => {
            ws.send("hello");
            ws.send(new Uint8Array(100_000).fill(1));
          };
          ws.onmessage = (event) => {
            got.push(typeof event.data === "string" ? event.data : event.data.byteLength);
            if (got.length === 2) ws.close(1000, "done");
          };
          ws.onclose = resolve;
          ws.onerror = () => reject(new Error("client error"));
        });
        assert.deepEqual(got, ["hello", 100_000]);
        assert.equal(closed.code, 1000);
        assert.equal(closed.wasClean, true);
      } finally {
        await server.shutdown();
      }
    });

    test("the ws package (in a Node process) and Python's websockets, with and without permessage-deflate", async () => {
      const { server, port } = await listenEcho(transport);
      try {
        for (
          const [binary, script, mode] of [
            [NODE, WS_CLIENT, "plain"],
            [NODE, WS_CLIENT, "deflate"],
            ["/usr/bin/python3", PY_CLIENT, "plain"],
            ["/usr/bin/python3", PY_CLIENT, "deflate"],
          ]
        ) {
          const exit = await startProcess(binary, [script, `ws://127.0.0.1:${port}/`, mode], {
            ms: 15_000,
          }).exited;
          assert.equal(exit.code, 0, `${script}: ${exit.stdout}${exit.stderr}`);
          assert.match(exit.stdout, /^ok /m, exit.stdout);
        }
      } finally {
        await server.shutdown();
      }
    });
  });
}

//#endregion

//#region Hono

/**
 * Hono's `upgradeWebSocket` on wireserve: the few lines of `hono/deno`'s adapter with
 * `Deno.upgradeWebSocket` replaced by wireserve's (the README shows the same code).
 */
const honoUpgradeWebSocket = defineWebSocketHelper((c, events, options) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") return;
  const { response, socket } = upgradeWebSocket(c.req.raw, options);
  const context = new WSContext({
    send: (source) => socket.send(source),
    close: (code, reason) => socket.close(code, reason),
    raw: socket,
    get readyState() {
      return socket.readyState as 0 | 1 | 2 | 3;
    },
    get protocol() {
      return socket.protocol;
    },
    url: new URL(socket.url),
  });
  socket.onopen = (event) => events.onOpen?.(event, context);
  socket.onmessage = (event) => events.onMessage?.(event, context);
  socket.onclose = (event) => events.onClose?.(event, context);
  socket.onerror = (event) => events.onError?.(event, context);
  return response;
});

for (const transport of transportsHere()) {
  test(`Hono's upgradeWebSocket runs on wireserve over ${transport}`, async () => {
    const app = new Hono();
    const closes: number[] = [];
    app.get("/", (c) => c.text("plain"));
    app.get(
      "/ws/:room",
      honoUpgradeWebSocket((c) => ({
        onMessage(event, ws) {
          ws.send(`${c.req.param("room")}: ${event.data}`);
        },
        onClose(event) {
          closes.push((event as CloseEvent).code);
        },
      })),
    );
    const { server, port } = await listenEcho(transport, (request) => app.fetch(request));
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/lobby`);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("hi");
        ws.onmessage = (event) => resolve(String(event.data));
        ws.onerror = () => reject(new Error("client error"));
      });
      assert.equal(reply, "lobby: hi");
      ws.close(1000);
      await waitUntil(() => closes.length === 1, "the close on the server");
      assert.deepEqual(closes, [1000]);
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "plain");
    } finally {
      await server.shutdown();
    }
  });
}

//#endregion
