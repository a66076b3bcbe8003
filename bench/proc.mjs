// What the benchmark scripts share: commands that may fail, medians, a free port,
// and a process tree's CPU time and memory from Linux's /proc. Plain JavaScript for any Node >= 18.

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { cpus } from "node:os";

/** The trimmed stdout of a command, or null when it fails or is missing. */
export function tryExec(file, args) {
  try {
    return execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return null;
  }
}

/** The median of the finite numbers in `values`, or null when there are none. */
export function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Cores on this machine. */
export const NPROC = Number(tryExec("nproc", [])) || cpus().length;
/** Clock ticks per second, the unit of /proc/PID/stat's CPU times. */
export const CLK_TCK = Number(tryExec("getconf", ["CLK_TCK"])) || 100;

/** The pids of `pid` and everything below it (Linux /proc), or just `pid` where unknown. */
export function processTree(pid) {
  const pids = [pid];
  for (let i = 0; i < pids.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${pids[i]}/task`)) {
        const children = readFileSync(`/proc/${pids[i]}/task/${task}/children`, "utf8");
        for (const child of children.split(" ")) if (child.trim()) pids.push(Number(child));
      }
    } catch { /* gone, or not Linux */ }
  }
  return pids;
}

/** User + system CPU seconds of `pid` and its descendants; null where /proc cannot say. */
export function cpuSeconds(pid) {
  let ticks = 0;
  let known = false;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
      known = true;
    } catch { /* gone */ }
  }
  return known ? ticks / CLK_TCK : null;
}

/** The resident memory of `pid` in KiB (VmRSS), or null. */
export function vmRssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** A TCP port that was free a moment ago: bound on 127.0.0.1 port 0 and released. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}
