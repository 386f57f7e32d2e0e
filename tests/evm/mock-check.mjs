// Runs x402-pay.mjs (the official client) against mock-402-server.mjs and prints what the
// client sends / does in each scenario. Asserts the behaviour documented in README.md, so a
// library upgrade that changes it is noticed. Usage: node mock-check.mjs [--verbose]
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startMockServer } from "./mock-402-server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PK = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"; // anvil dev account 1
const PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const verbose = process.argv.includes("--verbose");

function pay(url, body, env = {}) {
  const args = [join(here, "x402-pay.mjs"), url];
  if (body !== undefined) args.push(body);
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, X402_PRIVATE_KEY: PK, ...env }, timeout: 30000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout: stdout.trim(), stderr: stderr.trim(), json: stdout.trim() ? JSON.parse(stdout.trim()) : null });
    });
  });
}

let passed = 0, failed = 0;
const check = (c, what) => { c ? passed++ : failed++; console.log(`${c ? "ok  " : "FAIL"} - ${what}`); };
const show = (title, v) => { if (verbose) console.log(`--- ${title}\n${typeof v === "string" ? v : JSON.stringify(v, null, 2)}`); };

const m = await startMockServer();
try {
  // 1. POST with body to /paid
  let n0 = m.log.length;
  const t0 = Math.floor(Date.now() / 1000);
  let r = await pay(`${m.url}/paid?x=1`, JSON.stringify({ credits: 5 }));
  let t1 = Math.floor(Date.now() / 1000);
  let reqs = m.log.slice(n0);
  show("/paid stdout", r.json);
  show("/paid requests", reqs.map(({ method, path, headers, body, paymentHeaderName }) => ({ method, path, body, paymentHeaderName, headers })));
  check(r.code === 0 && r.json.status === 200, "paid POST: exit 0, final status 200");
  check(reqs.length === 2, `paid POST: exactly 2 requests (got ${reqs.length})`);
  const sent = reqs[1];
  check(sent.paymentHeaderName === "payment-signature", `retry carries header PAYMENT-SIGNATURE (got ${sent.paymentHeaderName})`);
  check(sent.body === JSON.stringify({ credits: 5 }) && sent.method === "POST", "retry re-sends the same method and body");
  check(sent.headers["content-type"] === "application/json", "retry keeps content-type");
  const p = sent.payment;
  console.log("decoded PAYMENT-SIGNATURE payload:\n" + JSON.stringify(p, null, 2));
  check(p.x402Version === 2, "payload.x402Version === 2");
  check(JSON.stringify(Object.keys(p)) === JSON.stringify(["x402Version", "payload", "resource", "accepted"]), `payload keys in order: ${JSON.stringify(Object.keys(p))}`);
  check(!("extensions" in p) || p.extensions === undefined, "extensions absent when the 402 declares none (undefined is dropped by JSON)");
  check(JSON.stringify(p.accepted) === JSON.stringify({ scheme: "exact", network: "eip155:31337", amount: "5000000", asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3", payTo: "0x90F79bf6EB2c4f870365E785982E1f101E93b906", maxTimeoutSeconds: 300, extra: { name: "USD Coin", version: "2" } }), "accepted is a verbatim copy of the offered requirement (same key order)");
  check(p.resource && p.resource.url === `${m.url}/paid?x=1` && p.resource.description === "Buy 5 credits", "resource copied from the 402");
  const a = p.payload.authorization;
  check(typeof p.payload.signature === "string" && /^0x[0-9a-f]{130}$/.test(p.payload.signature), "signature: 0x + 65 bytes lowercase hex");
  check(a.from === PAYER && a.to === "0x90F79bf6EB2c4f870365E785982E1f101E93b906", "from = payer (checksummed), to = getAddress(payTo)");
  check(a.value === "5000000" && typeof a.value === "string", "value is the decimal string amount");
  check(a.validAfter === "0", `validAfter === "0" (got ${a.validAfter})`);
  const vb = Number(a.validBefore);
  check(typeof a.validBefore === "string" && vb >= t0 + 300 && vb <= t1 + 300, `validBefore = now + maxTimeoutSeconds (${a.validBefore}, now ~${t0})`);
  check(/^0x[0-9a-f]{64}$/.test(a.nonce), "nonce: 0x + 32 bytes lowercase hex");
  check(r.json.paymentResponse && r.json.paymentResponse.success === true, "paymentResponse decoded from PAYMENT-RESPONSE");
  check(r.json.paymentRequired === null, "paymentRequired null on the 200");

  // 2. GET without body
  n0 = m.log.length;
  r = await pay(`${m.url}/paid`);
  reqs = m.log.slice(n0);
  check(r.code === 0 && r.json.status === 200 && reqs.every((q) => q.method === "GET" && q.body === ""), "GET without body works, retry is a GET");

  // 3. 402 with JSON body, no header
  n0 = m.log.length;
  r = await pay(`${m.url}/body-only`, "{}");
  reqs = m.log.slice(n0);
  show("/body-only", r);
  check(r.code !== 0 && /Failed to parse payment requirements: Invalid payment required response/.test(r.stderr) && reqs.length === 1,
    `body-only 402: client throws "Failed to parse payment requirements: Invalid payment required response", no retry (exit ${r.code})`);

  // 4. retried response is again 402
  n0 = m.log.length;
  r = await pay(`${m.url}/always-402`, "{}");
  reqs = m.log.slice(n0);
  show("/always-402", r);
  check(r.code === 0 && r.json.status === 402 && reqs.length === 2, `second 402: no throw, no third request, script prints status 402 (requests: ${reqs.length})`);
  check(r.json.paymentResponse?.success === false && r.json.paymentRequired?.error === "insufficient_funds", "second 402: paymentResponse + paymentRequired (with error) decoded");

  // 5. several accepts
  n0 = m.log.length;
  r = await pay(`${m.url}/multi`, "{}");
  reqs = m.log.slice(n0);
  const chosen = reqs[1]?.payment?.accepted;
  show("/multi chosen", chosen);
  check(r.code === 0 && chosen?.network === "eip155:8453", `several accepts, spend controls off: picks the first EVM entry (got ${chosen?.network} amount ${chosen?.amount})`);
  n0 = m.log.length;
  r = await pay(`${m.url}/multi`, "{}", { X402_SPEND_CONTROLS: "default" });
  reqs = m.log.slice(n0);
  show("/multi default spend controls", r);
  check(r.code !== 0 && /maxAmountPerPayment/.test(r.stderr), "several accepts, library-default spend controls: 5 USDC > $1 cap on Base USDC, local token not a default asset => throws");
  n0 = m.log.length;
  r = await pay(`${m.url}/paid`, "{}", { X402_SPEND_CONTROLS: "default" });
  show("/paid default spend controls", r);
  check(r.code !== 0 && /spendControls/.test(r.stderr), "library-default spend controls reject the local test token (why x402-pay.mjs disables them)");
  r = await pay(`${m.url}/paid`, "{}", { X402_SPEND_CONTROLS: JSON.stringify({ allowedAssets: [{ network: "eip155:31337", asset: "0x5FbDB2315678afecb367f032d93F642f64180aa3", maxAmountPerPayment: "4999999" }] }) });
  check(r.code !== 0 && /maxAmountPerPayment/.test(r.stderr), "per-asset atomic cap below the amount rejects");
} finally {
  await m.close();
}
console.log(`mock-check: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
