// A tiny x402 v2 resource server mock (no chain, no verification) used to observe what the
// official client (x402-pay.mjs) sends. Run standalone: node mock-402-server.mjs [port]
// (prints "mock-402-server listening on http://127.0.0.1:PORT"), or import startMockServer().
//
// Routes (any method):
//   /paid        402 + PAYMENT-REQUIRED header (+ same JSON body); a request carrying
//                PAYMENT-SIGNATURE / X-PAYMENT / PAYMENT is answered 200 + PAYMENT-RESPONSE
//                with a JSON body echoing what arrived.
//   /body-only   402 with the PaymentRequired JSON in the body only, no header.
//   /always-402  402 + PAYMENT-REQUIRED every time; a paid retry also gets a failure
//                PAYMENT-RESPONSE {success:false,...} and PAYMENT-REQUIRED with `error`.
//   /multi       like /paid but `accepts` holds several entries (solana, then Base USDC,
//                then the local chain, then another local entry).
//   /__log       GET: JSON array of every request seen so far (method, path, headers, body,
//                decoded payment header).
import http from "node:http";
import { fileURLToPath } from "node:url";

export const ASSET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"; // TestUSDC at deployer nonce 0 on anvil
export const PAY_TO = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"; // anvil dev account 3

const b64 = (obj) => Buffer.from(JSON.stringify(obj), "utf8").toString("base64");
const unb64 = (s) => JSON.parse(Buffer.from(s, "base64").toString("utf8"));

export function localRequirement(overrides = {}) {
  return {
    scheme: "exact",
    network: "eip155:31337",
    amount: "5000000",
    asset: ASSET,
    payTo: PAY_TO,
    maxTimeoutSeconds: 300,
    extra: { name: "USD Coin", version: "2" },
    ...overrides,
  };
}

function paymentRequired(url, accepts, error) {
  const pr = {
    x402Version: 2,
    resource: { url, description: "Buy 5 credits", mimeType: "application/json" },
    accepts,
  };
  if (error) pr.error = error;
  return pr;
}

export function startMockServer(port = 0) {
  const log = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const u = new URL(req.url, `http://${req.headers.host}`);
      const url = u.href;
      if (u.pathname === "/__log") {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify(log));
      }
      const headerName = ["payment-signature", "x-payment", "payment"].find((h) => req.headers[h] !== undefined);
      let decoded = null;
      let decodeError = null;
      if (headerName) {
        try {
          decoded = unb64(req.headers[headerName]);
        } catch (e) {
          decodeError = String(e);
        }
      }
      log.push({ method: req.method, path: u.pathname, headers: req.headers, body, paymentHeaderName: headerName ?? null, payment: decoded, decodeError });

      let accepts = [localRequirement()];
      if (u.pathname === "/multi") {
        accepts = [
          { scheme: "exact", network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", amount: "5000000",
            asset: "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", payTo: "11111111111111111111111111111111",
            maxTimeoutSeconds: 300, extra: { feePayer: "11111111111111111111111111111111" } },
          { scheme: "exact", network: "eip155:8453", amount: "5000000", asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            payTo: PAY_TO, maxTimeoutSeconds: 120, extra: { name: "USD Coin", version: "2" } },
          localRequirement(),
          localRequirement({ amount: "1000000" }),
        ];
      }
      const pr = paymentRequired(url, accepts);
      const send402 = (withHeader, extraHeaders = {}, error) => {
        const p = error ? { ...pr, error } : pr;
        const h = { "content-type": "application/json", "cache-control": "no-store", ...extraHeaders };
        if (withHeader) h["PAYMENT-REQUIRED"] = b64(p);
        res.writeHead(402, h);
        res.end(JSON.stringify(p));
      };

      if (u.pathname === "/body-only") return send402(false);
      if (!headerName) return send402(true);
      if (u.pathname === "/always-402") {
        return send402(true, {
          "PAYMENT-RESPONSE": b64({ success: false, errorReason: "insufficient_funds", transaction: "", network: "eip155:31337", payer: decoded?.payload?.authorization?.from }),
        }, "insufficient_funds");
      }
      const settle = { success: true, transaction: "0x" + "ab".repeat(32), network: decoded?.accepted?.network ?? "eip155:31337", payer: decoded?.payload?.authorization?.from };
      res.writeHead(200, { "content-type": "application/json", "PAYMENT-RESPONSE": b64(settle) });
      res.end(JSON.stringify({ ok: true, paymentHeaderName: headerName, method: req.method, receivedBody: body, payment: decoded }));
    });
  });
  return new Promise((resolve) => {
    server.listen(port, "127.0.0.1", () => {
      const p = server.address().port;
      resolve({ url: `http://127.0.0.1:${p}`, port: p, log, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const m = await startMockServer(Number(process.argv[2] || 0));
  console.log(`mock-402-server listening on ${m.url}`);
}
