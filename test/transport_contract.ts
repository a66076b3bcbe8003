/**
 * The transport contract (the "Transport contract" region of mod.ts), checked against every
 * built-in adapter this runtime runs, over real sockets on 127.0.0.1: no event is delivered from
 * inside a call the driver makes (`write`, `pause`, `resume`, `end`, `destroy`), whether that call
 * is made from outside any event or from inside an event handler; `onClose` comes exactly once,
 * last; bytes written before `end` arrive before the close.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { transports } from "../mod.ts";
import type { ConnectionEvents, NetAddr, TransportConnection, TransportName } from "../mod.ts";
import { transportsHere, waitUntil } from "./helpers.ts";

/** One accepted connection, with every event it delivered and every rule it broke. */
class Probe {
  readonly events: string[] = [];
  readonly violations: string[] = [];
  connection: TransportConnection | null = null;
  /** Called for each chunk after it is recorded: a test may call the transport from here. */
  onData: (chunk: Uint8Array) => void = () => {};
  onEnd: () => void = () => {};
  #inside: string | null = null;

  /** The events to hand the adapter. */
  readonly handlers: ConnectionEvents = {
    onData: (chunk) => {
      this.#record(`data ${chunk.length}`);
      this.onData(chunk);
    },
    onEnd: () => {
      this.#record("end");
      this.onEnd();
    },
    onDrain: () => this.#record("drain"),
    onClose: () => this.#record("close"),
  };

  /** Calls the transport's `method` as the driver would, watching for events delivered inside. */
  call(name: string, method: (connection: TransportConnection) => unknown): void {
    const outer = this.#inside;
    this.#inside = name;
    try {
      method(this.connection as TransportConnection);
    } finally {
      this.#inside = outer;
    }
  }

  get closes(): number {
    return this.events.filter((event) => event === "close").length;
  }

  #record(event: string): void {
    if (this.#inside !== null) this.violations.push(`${event} delivered inside ${this.#inside}()`);
    if (this.events.includes("close")) this.violations.push(`${event} delivered after close`);
    this.events.push(event);
  }
}

/**
 * Listens with the built-in adapter `name`, connects a client, runs `body` with the accepted
 * connection's probe and the client socket, then expects the contract kept: `onClose` once, last,
 * and no event inside a call.
 */
async function withAdapter(
  name: TransportName,
  body: (probe: Probe, client: net.Socket, received: () => Buffer) => Promise<void>,
): Promise<void> {
  const probe = new Probe();
  const listener = await transports[name](
    { hostname: "127.0.0.1", port: 0 },
    (connection) => {
      probe.connection = connection;
      return probe.handlers;
    },
  );
  const chunks: Buffer[] = [];
  const client = net.connect((listener.addr as NetAddr).port, "127.0.0.1");
  client.on("data", (chunk: Buffer) => chunks.push(chunk));
  client.on("error", () => {});
  let clientClosed = false;
  client.on("close", () => clientClosed = true);
  try {
    await waitUntil(() => probe.connection !== null, "the adapter to accept the connection");
    await body(probe, client, () => Buffer.concat(chunks));
    await waitUntil(() => probe.closes > 0, `onClose (events: ${probe.events.join(", ")})`);
    await waitUntil(() => clientClosed, "the client socket to close");
    // A little longer, for an event that would wrongly follow the close.
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(probe.violations, [], probe.events.join(", "));
    assert.equal(probe.closes, 1, probe.events.join(", "));
    assert.equal(probe.events.at(-1), "close");
  } finally {
    client.destroy();
    listener.close();
  }
}

/**
 * Two connections written to in turns, both clients reading late: what one adapter shares between
 * connections (a scratch array, say) must never mix their bytes.
 */
async function twoLateReaders(name: TransportName, bodyBytes: number): Promise<void> {
  const accepted: TransportConnection[] = [];
  const drains = [0, 0];
  const listener = await transports[name]({ hostname: "127.0.0.1", port: 0 }, (connection) => {
    const index = accepted.push(connection) - 1;
    return { onData() {}, onEnd() {}, onDrain: () => drains[index]++, onClose() {} };
  });
  const port = (listener.addr as NetAddr).port;
  const clients = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
  const received: Buffer[][] = [[], []];
  clients.forEach((client, i) => {
    client.pause();
    client.on("data", (chunk: Buffer) => received[i].push(chunk));
    client.on("error", () => {});
  });
  try {
    await waitUntil(() => accepted.length === 2, "both connections accepted");
    const sent: Uint8Array[][] = [[], []];
    const blocked = [false, false];
    for (let round = 0; round < 20_000 && !(blocked[0] && blocked[1]); round++) {
      const i = round % 2;
      if (blocked[i]) continue;
      const pieces = [97 + round % 50, bodyBytes + 1000 * (round % 7)].map((length) =>
        new Uint8Array(length).map((_, at) => (i * 101 + sent[i].length * 31 + at) & 0xff)
      );
      sent[i].push(...pieces);
      const connection = accepted[i];
      const writable = connection.writeMany !== undefined
        ? connection.writeMany(pieces)
        : pieces.map((bytes) => connection.write(bytes)).every(Boolean);
      if (!writable) blocked[i] = true;
    }
    assert.deepEqual(blocked, [true, true], "both connections backed up");
    for (const client of clients) client.resume();
    for (const i of [0, 1]) {
      const expected = Buffer.concat(sent[i]);
      await waitUntil(
        () => Buffer.concat(received[i]).length >= expected.length,
        `connection ${i}: ${expected.length} bytes`,
        10_000,
      );
      assert.ok(
        expected.equals(Buffer.concat(received[i])),
        `connection ${i}: the bytes, in order`,
      );
    }
    await waitUntil(() => drains[0] > 0 && drains[1] > 0, "onDrain on both");
  } finally {
    for (const client of clients) client.destroy();
    for (const connection of accepted) connection.destroy();
    listener.close();
  }
}

for (const name of transportsHere()) {
  describe(`the transport contract: the ${name} adapter`, () => {
    test("write then end(false): the bytes arrive, then the close; no event inside either call", async () => {
      await withAdapter(name, async (probe, _client, received) => {
        probe.call("write", (c) => c.write(new TextEncoder().encode("hello")));
        probe.call("end", (c) => c.end(false));
        await waitUntil(() => probe.closes > 0, "onClose after end(false)");
        // The client reads in its own turns, after the server's close: wait for its bytes.
        await waitUntil(() => received().length >= 5, "the client to receive the bytes");
        assert.equal(received().toString(), "hello");
      });
    });

    test("destroy(): onClose follows from a later turn, once", async () => {
      await withAdapter(name, async (probe) => {
        probe.call("destroy", (c) => c.destroy());
        assert.equal(probe.closes, 0, "not from inside destroy()");
        await waitUntil(() => probe.closes > 0, "onClose after destroy()");
        probe.call("destroy", (c) => c.destroy()); // twice is harmless
      });
    });

    test("destroy() from inside onData: no close delivered inside it, nothing after it", async () => {
      await withAdapter(name, async (probe, client) => {
        probe.onData = () => probe.call("destroy", (c) => c.destroy());
        client.write("GET / HTTP/1.1\r\n\r\n");
        await waitUntil(() => probe.closes > 0, "onClose after destroy() in onData");
        client.write("more bytes, to a closed connection");
      });
    });

    test("end(false) from inside onEnd (the peer half-closed): the close comes from a later turn", async () => {
      await withAdapter(name, async (probe, client, received) => {
        probe.onEnd = () => {
          probe.call("write", (c) => c.write(new TextEncoder().encode("bye")));
          probe.call("end", (c) => c.end(false));
        };
        client.end();
        await waitUntil(() => probe.events.includes("end"), "onEnd after the client's FIN");
        await waitUntil(() => probe.closes > 0, "onClose after end(false) in onEnd");
        await waitUntil(() => received().length >= 3, "the client to receive the bytes");
        assert.equal(received().toString(), "bye");
      });
    });

    test("pause() and resume(): no data inside either, and data held while paused arrives after", async () => {
      await withAdapter(name, async (probe, client) => {
        probe.call("pause", (c) => c.pause());
        client.write("while paused");
        await new Promise((resolve) => setTimeout(resolve, 30));
        // A read already under way may still land; what matters is that resume delivers the rest.
        probe.call("resume", (c) => c.resume());
        await waitUntil(
          () => probe.events.some((event) => event.startsWith("data")),
          "the data after resume()",
        );
        probe.call("end", (c) => c.end(true));
        client.end();
      });
    });

    test("write and writeMany to a client that reads late: past the high-water mark, onDrain; every byte arrives, in order", async () => {
      await withAdapter(name, async (probe, client, received) => {
        client.pause();
        // Heads and bodies of several sizes, each byte telling its place, written until the
        // adapter asks to wait, then after each onDrain, as the driver does.
        const sent: Uint8Array[] = [];
        const piece = (length: number) => {
          const bytes = new Uint8Array(length).map((_, i) => (sent.length * 31 + i) & 0xff);
          sent.push(bytes);
          return bytes;
        };
        let drains = 0;
        let blocked = 0;
        // Past what the kernel's buffers take, until the adapter has asked to wait three times.
        for (let round = 0; round < 2000 && blocked < 3; round++) {
          let writable = true;
          probe.call("write", (c) => {
            const pieces = [piece(97 + round % 50), piece(1000 * (round % 7) + 90_000)];
            if (c.writeMany === undefined || round % 3 === 2) {
              for (const bytes of pieces) writable = c.write(bytes) && writable;
            } else writable = c.writeMany(pieces);
          });
          if (!writable) {
            blocked++;
            if (blocked === 1) client.resume(); // the client starts reading once it is behind
            const before = probe.events.filter((event) => event === "drain").length;
            await waitUntil(
              () => probe.events.filter((event) => event === "drain").length > before,
              "onDrain after write returned false",
            );
            drains++;
          }
        }
        client.resume();
        let total = 0;
        for (const bytes of sent) total += bytes.length;
        await waitUntil(() => received().length >= total, `${total} bytes at the client`, 10_000);
        assert.ok(blocked === 3 && drains === 3, `blocked ${blocked}, drained ${drains}`);
        assert.ok(Buffer.concat(sent).equals(received()), "the bytes, in order");
        probe.call("end", (c) => c.end(false));
      });
    });

    // Bodies of about 90 KiB, and of about 20 KiB, which an adapter may copy into arrays it reuses.
    for (const bodyBytes of [90_000, 20_000]) {
      test(`two connections backed up at once, ${bodyBytes / 1000} kB bodies: each client gets its own bytes, in order`, async () => {
        await twoLateReaders(name, bodyBytes);
      });
    }
  });
}
