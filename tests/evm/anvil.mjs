// Helpers to locate and start the anvil binary shipped by the npm package @foundry-rs/anvil.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** Absolute path of the native anvil binary (platform package), or the npm bin wrapper. */
export function anvilPath() {
  const arch = { x64: "amd64", arm64: "arm64" }[process.arch];
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`;
  try {
    const p = join(dirname(require.resolve(`${pkg}/package.json`)), "bin", process.platform === "win32" ? "anvil.exe" : "anvil");
    if (existsSync(p)) return p;
  } catch {}
  const wrapper = join(here, "node_modules", ".bin", "anvil");
  if (existsSync(wrapper)) return wrapper;
  throw new Error(`anvil not found: run 'npm ci' in ${here}`);
}

/** Anvil's default dev accounts (mnemonic "test test ... junk"), same on every start. */
export const DEV_KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
];

/**
 * Starts anvil on a free port (--port 0; the port is read from the "Listening on" line).
 * Resolves {url, port, chainId, proc, stop()}.
 */
export function startAnvil({ chainId = 31337, extraArgs = [], timeoutMs = 15000 } = {}) {
  const bin = anvilPath();
  const args = ["--host", "127.0.0.1", "--port", "0", "--chain-id", String(chainId), ...extraArgs];
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`anvil did not start within ${timeoutMs} ms; output:\n${out}`));
    }, timeoutMs);
    const onData = (d) => {
      out += d.toString();
      const m = out.match(/Listening on 127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        proc.stdout.off("data", onData);
        proc.stdout.resume(); // keep draining so anvil never blocks on a full pipe
        const port = Number(m[1]);
        const stop = () =>
          new Promise((res) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return res();
            proc.once("exit", () => res());
            proc.kill("SIGTERM");
            setTimeout(() => proc.kill("SIGKILL"), 3000).unref();
          });
        resolve({ url: `http://127.0.0.1:${port}`, port, chainId, proc, stop });
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", (d) => (out += d.toString()));
    proc.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`anvil exited early (code ${code}, signal ${sig}); output:\n${out}`));
    });
  });
}
