// What the fetch objects leave behind for the old generation: makes 100,000 of each kind of object,
// keeping at most 50 alive at a time (as 50 connections keep one request each), and prints how
// much the heap grew per object over the loop, before any full collection. Objects that die young
// show as a few bytes each; hundreds mean they survived the young generation's collections and
// wait, promoted, for a mark-compact, whose pauses are a server's p99. Measured on 2026-12-08
// (Deno 2.9.6, Node 24.9.0, Bun 1.4.5): on Deno a `Request` leaves 467 bytes; on Node a `Request`
// 487 and a `Response` with a body 2,076 (undici); on Bun nothing; an object literal, a `URL` and
// a `Headers` under 20 everywhere. That is why even the fetch-objects ceiling has a p99 several
// times `Deno.serve`'s, and part of what `FastResponse` saves on Node (README, "Performance").
//
//   deno run --v8-flags=--expose-gc bench/gc_survival.ts
//   node --expose-gc bench/gc_survival.ts
//   bun bench/gc_survival.ts
//
// The numbers are the V8 heap's (Deno, Node) or JSC's (Bun, `heapSize` of bun:jsc's heapStats),
// read right after the loop, without awaiting in it: nothing but the kept 50 may hold an object.

const G = globalThis as unknown as {
  gc?: () => void;
  Bun?: { gc(force: boolean): void };
  Deno?: { memoryUsage(): { heapUsed: number } };
  process?: { memoryUsage(): { heapUsed: number } };
};

const COUNT = 100_000;
const ALIVE = 50;

function collect(): void {
  if (G.Bun !== undefined) G.Bun.gc(true);
  else if (G.gc !== undefined) G.gc();
  else throw new Error("run with --expose-gc (Node) or --v8-flags=--expose-gc (Deno)");
}

const heapUsed: () => number = G.Bun !== undefined
  ? await (async () => {
    const { heapStats } = await import("bun:jsc" as string) as {
      heapStats(): { heapSize: number };
    };
    return () => heapStats().heapSize;
  })()
  : () => (G.Deno ?? G.process)!.memoryUsage().heapUsed;

const KINDS: Record<string, () => unknown> = {
  "object literal": () => ({ a: 1, b: [1], c: "x" }),
  "URL": () => new URL("http://127.0.0.1:8080/"),
  "Headers": () => new Headers([["host", "127.0.0.1:8080"]]),
  "Response": () => new Response("Hello, World!"),
  "Request": () => new Request("http://127.0.0.1:8080/"),
};

for (const [name, make] of Object.entries(KINDS)) {
  // One round to warm up the code, one measured.
  let grown = 0;
  for (let round = 0; round < 2; round++) {
    collect();
    const before = heapUsed();
    let alive: unknown[] = [];
    for (let i = 0; i < COUNT; i++) {
      alive.push(make());
      if (alive.length === ALIVE) alive = [];
    }
    grown = heapUsed() - before;
    alive = [];
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  console.log(`${name.padEnd(15)} ${(grown / COUNT).toFixed(0).padStart(5)} bytes per object`);
}
