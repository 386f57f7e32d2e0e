// x402 over MCP with the official x402 client libraries (@x402/core's client with the
// @x402/evm "exact" signer, viem), for the Rust tests.
//
// Usage: X402_PRIVATE_KEY=0x... node x402-mcp-pay.mjs <mcp-url> <tool> <json-arguments>
//   1. tools/call without payment: expects an isError result whose structuredContent is the
//      x402 PaymentRequired;
//   2. signs it with x402Client.createPaymentPayload and calls again with
//      params._meta["x402/payment"];
//   - prints ONE JSON line on stdout: {challenge, paid} (the two tools/call results);
//   - exit non-zero on an exception (message on stderr).
import { x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

async function rpc(url, id, method, params) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "mcp-protocol-version": "2025-06-18" },
    body: JSON.stringify({ jsonrpc: "2.0", id, method, params }),
    signal: AbortSignal.timeout(120000),
  });
  const body = await res.json();
  if (body.error) throw new Error(`${method}: HTTP ${res.status} ${JSON.stringify(body.error)}`);
  return body.result;
}

async function main() {
  const [url, tool, argsJson] = process.argv.slice(2);
  if (!url || !tool) throw new Error("usage: node x402-mcp-pay.mjs <mcp-url> <tool> <json-arguments>");
  const pk = process.env.X402_PRIVATE_KEY;
  if (!pk || !/^0x[0-9a-fA-F]{64}$/.test(pk)) throw new Error("X402_PRIVATE_KEY must be 0x + 64 hex digits");
  const args = JSON.parse(argsJson || "{}");
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(pk)));
  // The local test token is not one of the library's default assets.
  client.setSpendControls(false);

  const challenge = await rpc(url, 1, "tools/call", { name: tool, arguments: args });
  if (!challenge.isError || !challenge.structuredContent?.accepts) {
    throw new Error(`expected a PaymentRequired result, got ${JSON.stringify(challenge)}`);
  }
  const payment = await client.createPaymentPayload(challenge.structuredContent);
  const paid = await rpc(url, 2, "tools/call", {
    name: tool,
    arguments: args,
    _meta: { "x402/payment": payment },
  });
  process.stdout.write(JSON.stringify({ challenge, paid }) + "\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`x402-mcp-pay: ${e?.stack || e}`);
    process.exit(1);
  },
);
