// Compiles contracts/TestUSDC.sol with solc-js (the exact version pinned in package.json) and
// writes contracts/TestUSDC.json = {contractName, solcVersion, abi, bytecode}.
// Deterministic: fixed settings, fixed source name, stable JSON output (run twice => identical).
// Usage: cd tests/evm && npm ci && node build.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const CONTRACT = "TestUSDC";
const SOURCE_NAME = `contracts/${CONTRACT}.sol`;
const source = readFileSync(join(here, SOURCE_NAME), "utf8");

const input = {
  language: "Solidity",
  sources: { [SOURCE_NAME]: { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    viaIR: false,
    metadata: { bytecodeHash: "ipfs", appendCBOR: true },
    outputSelection: { [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage || e.message);
if (errors.length > 0) {
  console.error(`build.mjs: ${errors.length} compilation error(s)`);
  process.exit(1);
}
const c = output.contracts[SOURCE_NAME][CONTRACT];
const artifact = {
  contractName: CONTRACT,
  solcVersion: solc.version(),
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
};
if (artifact.bytecode.length < 10) throw new Error("empty bytecode");
const outPath = join(here, "contracts", `${CONTRACT}.json`);
writeFileSync(outPath, JSON.stringify(artifact, null, 2) + "\n");
console.log(`wrote ${outPath} (solc ${artifact.solcVersion}, ${(artifact.bytecode.length - 2) / 2} bytes creation code)`);
