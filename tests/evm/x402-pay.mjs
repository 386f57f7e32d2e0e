// Interop x402 v2 client for the Rust tests, built ONLY from the official client libraries
// (@x402/fetch, @x402/evm, @x402/core, viem).
//
// Usage: X402_PRIVATE_KEY=0x... node x402-pay.mjs <url> [<json-body>]
//   - with a body: POST <url>, content-type application/json; without: GET <url>
//   - prints ONE JSON line on stdout:
//       {status, body, paymentResponse, paymentRequired}
//     body: parsed JSON if the final response body is JSON, else text ("" if empty)
//     paymentResponse: decoded PAYMENT-RESPONSE (or X-PAYMENT-RESPONSE) header of the final
//       response, else null
//     paymentRequired: decoded PAYMENT-REQUIRED header of the final response, else null
//   - exit 0 whenever an HTTP response was obtained (whatever its status); non-zero on an
//     exception (message on stderr), e.g. no acceptable requirement, malformed 402, network error.
// Optional env:
//   X402_SPEND_CONTROLS  unset/"off": client.setSpendControls(false) (needed for a local test
//                        token: the library only pays its built-in "default assets" and caps
//                        them at $1 otherwise); "default": keep the library default;
//                        any JSON: passed to setSpendControls as is.
//   X402_METHOD          override the HTTP method (default POST with body, GET without)
//   X402_TIMEOUT_MS      overall timeout (default 120000)
//   X402_DEBUG=1         log each outgoing request (and its decoded payment header) to stderr
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { decodePaymentRequiredHeader, decodePaymentSignatureHeader } from "@x402/core/http";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

async function main() {
  const [url, bodyArg] = process.argv.slice(2);
  if (!url) throw new Error("usage: node x402-pay.mjs <url> [<json-body>]");
  const pk = process.env.X402_PRIVATE_KEY;
  if (!pk || !/^0x[0-9a-fA-F]{64}$/.test(pk)) throw new Error("X402_PRIVATE_KEY must be 0x + 64 hex digits");

  const account = privateKeyToAccount(pk);
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(account));
  const sc = process.env.X402_SPEND_CONTROLS;
  if (sc === undefined || sc === "" || sc === "off") client.setSpendControls(false);
  else if (sc !== "default") client.setSpendControls(JSON.parse(sc));

  const debug = process.env.X402_DEBUG === "1";
  const innerFetch = async (input, init) => {
    if (debug) {
      // the wrapper passes a Request object; read it without consuming its body
      const isReq = input instanceof Request;
      const headers = new Headers(isReq ? input.headers : init?.headers);
      const method = isReq ? input.method : init?.method || "GET";
      const sigHeader = headers.get("PAYMENT-SIGNATURE") ?? headers.get("X-PAYMENT");
      console.error(`x402-pay: ${method} ${isReq ? input.url : String(input)}` + (sigHeader ? ` payment=${JSON.stringify(decodePaymentSignatureHeader(sigHeader))}` : ""));
    }
    return fetch(input, init);
  };
  const fetchWithPayment = wrapFetchWithPayment(innerFetch, client);

  const init = { method: process.env.X402_METHOD || (bodyArg !== undefined ? "POST" : "GET") };
  if (bodyArg !== undefined) {
    JSON.parse(bodyArg); // must be valid JSON
    init.body = bodyArg;
    init.headers = { "content-type": "application/json" };
  }
  init.signal = AbortSignal.timeout(Number(process.env.X402_TIMEOUT_MS || 120000));

  const res = await fetchWithPayment(url, init);

  const text = await res.text();
  let body = text;
  try {
    if (text !== "") body = JSON.parse(text);
  } catch {}
  const decode = (fn, raw) => {
    if (raw == null) return null;
    try {
      return fn(raw);
    } catch (e) {
      return { undecodable: raw, error: String(e?.message || e) };
    }
  };
  const payRespHeader = res.headers.get("PAYMENT-RESPONSE") ?? res.headers.get("X-PAYMENT-RESPONSE");
  const out = {
    status: res.status,
    body,
    paymentResponse: decode(decodePaymentResponseHeader, payRespHeader),
    paymentRequired: decode(decodePaymentRequiredHeader, res.headers.get("PAYMENT-REQUIRED")),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`x402-pay: ${e?.stack || e}`);
    process.exit(1);
  },
);
