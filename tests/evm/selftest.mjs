// Self-test of the EVM test assets: starts anvil (from node_modules) on a free port, deploys
// contracts/TestUSDC.json, and exercises EIP-3009 transferWithAuthorization as an x402
// facilitator would. Exits non-zero on any failure. Usage: cd tests/evm && node selftest.mjs
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createPublicClient, createWalletClient, http, parseSignature, keccak256, toHex, getAddress } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";
import { x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { startAnvil, DEV_KEYS } from "./anvil.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const artifact = JSON.parse(readFileSync(join(here, "contracts", "TestUSDC.json"), "utf8"));
const { abi, bytecode } = artifact;

let passed = 0;
let failed = 0;
function check(cond, what) {
  if (cond) {
    passed++;
    console.log(`ok   - ${what}`);
  } else {
    failed++;
    console.log(`FAIL - ${what}`);
  }
}
async function expectRevert(promise, reasonPart, what) {
  try {
    await promise;
    check(false, `${what} (did not revert)`);
  } catch (e) {
    const msg = String(e?.shortMessage || "") + "\n" + String(e?.message || e);
    const ok = msg.includes(reasonPart);
    if (!ok) console.log(msg.split("\n").slice(0, 6).join("\n"));
    check(ok, `${what} reverts with "${reasonPart}"`);
  }
}

const TYPES = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
};
const randomNonce = () => toHex(crypto.getRandomValues(new Uint8Array(32)));

const started = Date.now();
const anvil = await startAnvil({ chainId: 31337 });
const killer = setTimeout(() => {
  console.error("selftest: timeout after 60 s");
  anvil.proc.kill("SIGKILL");
  process.exit(2);
}, 60000);
try {
  const chain = { ...foundry, id: anvil.chainId, rpcUrls: { default: { http: [anvil.url] } } };
  const transport = http(anvil.url);
  const pub = createPublicClient({ chain, transport });
  const [deployer, payer, facilitator, payTo] = DEV_KEYS.map((k) => privateKeyToAccount(k));
  const wallet = (account) => createWalletClient({ account, chain, transport });

  check((await pub.getChainId()) === 31337, `anvil up at ${anvil.url}, chain id 31337`);

  // deploy
  const deployHash = await wallet(deployer).deployContract({ abi, bytecode, args: ["USD Coin", "USDC", "2"] });
  const deployRcpt = await pub.waitForTransactionReceipt({ hash: deployHash });
  const token = deployRcpt.contractAddress;
  check(deployRcpt.status === "success" && !!token, `TestUSDC deployed at ${token}`);
  const read = (functionName, args = []) => pub.readContract({ address: token, abi, functionName, args });

  check((await read("name")) === "USD Coin" && (await read("symbol")) === "USDC" && Number(await read("decimals")) === 6 && (await read("version")) === "2", "name/symbol/decimals/version");
  check(
    (await read("TRANSFER_WITH_AUTHORIZATION_TYPEHASH")) ===
      keccak256(toHex("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")),
    "TRANSFER_WITH_AUTHORIZATION_TYPEHASH",
  );
  const domain = { name: "USD Coin", version: "2", chainId: 31337, verifyingContract: token };
  const { hashDomain } = await import("viem");
  const expectedSep = hashDomain({
    domain,
    types: { EIP712Domain: [
      { name: "name", type: "string" }, { name: "version", type: "string" },
      { name: "chainId", type: "uint256" }, { name: "verifyingContract", type: "address" }] },
  });
  check((await read("DOMAIN_SEPARATOR")) === expectedSep, "DOMAIN_SEPARATOR matches viem's EIP-712 domain hash");

  // mint 100 USDC to payer (owner only)
  await expectRevert(
    pub.simulateContract({ account: payer, address: token, abi, functionName: "mint", args: [payer.address, 1n] }),
    "Ownable: caller is not the owner",
    "mint by non-owner",
  );
  const mintHash = await wallet(deployer).writeContract({ address: token, abi, functionName: "mint", args: [payer.address, 100_000_000n] });
  await pub.waitForTransactionReceipt({ hash: mintHash });
  check((await read("balanceOf", [payer.address])) === 100_000_000n, "payer has 100 USDC");
  check((await read("totalSupply")) === 100_000_000n, "totalSupply 100 USDC");

  const block = await pub.getBlock();
  const now = Number(block.timestamp);
  const sign = (message) => wallet(payer).signTypedData({ domain, types: TYPES, primaryType: "TransferWithAuthorization", message });

  // 1. valid authorization, submitted by the facilitator (gas payer), v/r/s overload
  const auth = { from: payer.address, to: payTo.address, value: 5_000_000n, validAfter: 0n, validBefore: BigInt(now + 300), nonce: randomNonce() };
  const sig = await sign(auth);
  const { r, s, v, yParity } = parseSignature(sig);
  const vv = Number(v ?? BigInt(yParity + 27));
  check(vv === 27 || vv === 28, `viem signature v = ${vv}, length ${(sig.length - 2) / 2} bytes`);
  const args9 = [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, vv, r, s];
  const payerEthBefore = await pub.getBalance({ address: payer.address });
  const { request } = await pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization", args: args9 });
  const txHash = await wallet(facilitator).writeContract(request);
  const rcpt = await pub.waitForTransactionReceipt({ hash: txHash });
  check(rcpt.status === "success", `transferWithAuthorization (v,r,s) by facilitator succeeded: ${txHash}`);
  check(getAddress(rcpt.from) === facilitator.address, "tx sender is the facilitator");
  check((await read("balanceOf", [payer.address])) === 95_000_000n, "payer balance 95 USDC");
  check((await read("balanceOf", [payTo.address])) === 5_000_000n, "payTo balance 5 USDC");
  check((await pub.getBalance({ address: payer.address })) === payerEthBefore, "payer paid no gas");
  check((await read("authorizationState", [payer.address, auth.nonce])) === true, "authorizationState(from, nonce) == true");
  const used = rcpt.logs.filter((l) => l.address.toLowerCase() === token.toLowerCase());
  check(used.length === 2, "receipt has Transfer + AuthorizationUsed logs");

  // 2. replay reverts (simulation and on-chain with fixed gas)
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization", args: args9 }),
    "FiatTokenV2: authorization is used or canceled",
    "second submission (eth_call)",
  );
  const replayHash = await wallet(facilitator).writeContract({ address: token, abi, functionName: "transferWithAuthorization", args: args9, gas: 200_000n });
  const replayRcpt = await pub.waitForTransactionReceipt({ hash: replayHash });
  check(replayRcpt.status === "reverted", "second submission mined with status reverted");

  // 3. expired authorization reverts
  const expired = { ...auth, nonce: randomNonce(), validBefore: BigInt(now - 1) };
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [expired.from, expired.to, expired.value, expired.validAfter, expired.validBefore, expired.nonce, await sign(expired)] }),
    "FiatTokenV2: authorization is expired",
    "expired authorization",
  );
  // 4. not yet valid
  const future = { ...auth, nonce: randomNonce(), validAfter: BigInt(now + 3600), validBefore: BigInt(now + 7200) };
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [future.from, future.to, future.value, future.validAfter, future.validBefore, future.nonce, await sign(future)] }),
    "FiatTokenV2: authorization is not yet valid",
    "not-yet-valid authorization",
  );
  // 5. tampered value => recovered signer differs
  const good = { ...auth, nonce: randomNonce() };
  const goodSig = await sign(good);
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [good.from, good.to, 6_000_000n, good.validAfter, good.validBefore, good.nonce, goodSig] }),
    "FiatTokenV2: invalid signature",
    "tampered value",
  );
  // 6. high-s (malleated) signature rejected
  const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
  const p = parseSignature(goodSig);
  const highS = toHex(N - BigInt(p.s), { size: 32 });
  const flippedV = Number(p.v ?? BigInt(p.yParity + 27)) === 27 ? 28 : 27;
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [good.from, good.to, good.value, good.validAfter, good.validBefore, good.nonce, flippedV, p.r, highS] }),
    "ECDSA: invalid signature 's' value",
    "high-s signature",
  );
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [good.from, good.to, good.value, good.validAfter, good.validBefore, good.nonce, 1, p.r, p.s] }),
    "ECDSA: invalid signature 'v' value",
    "v = 1",
  );
  // 7. insufficient balance
  const big = { ...auth, nonce: randomNonce(), value: 1_000_000_000n };
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "transferWithAuthorization",
      args: [big.from, big.to, big.value, big.validAfter, big.validBefore, big.nonce, await sign(big)] }),
    "ERC20: transfer amount exceeds balance",
    "insufficient balance",
  );
  // 8. bytes-signature overload works for the untampered authorization
  const h2 = await wallet(facilitator).writeContract({ address: token, abi, functionName: "transferWithAuthorization",
    args: [good.from, good.to, good.value, good.validAfter, good.validBefore, good.nonce, goodSig] });
  check((await pub.waitForTransactionReceipt({ hash: h2 })).status === "success", "transferWithAuthorization (bytes signature) succeeded");
  check((await read("balanceOf", [payer.address])) === 90_000_000n && (await read("balanceOf", [payTo.address])) === 10_000_000n, "balances 90 / 10 USDC");
  // 9. receiveWithAuthorization requires caller == to
  await expectRevert(
    pub.simulateContract({ account: facilitator, address: token, abi, functionName: "receiveWithAuthorization",
      args: [good.from, good.to, good.value, good.validAfter, good.validBefore, randomNonce(), goodSig] }),
    "FiatTokenV2: caller must be the payee",
    "receiveWithAuthorization by non-payee",
  );
  // 10. interop: a payload made by the official x402 client (@x402/evm ExactEvmScheme) settles
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(payer)).setSpendControls(false);
  const pp = await client.createPaymentPayload({
    x402Version: 2,
    resource: { url: "http://127.0.0.1/credits", description: "credits", mimeType: "application/json" },
    accepts: [{ scheme: "exact", network: "eip155:31337", amount: "5000000", asset: token, payTo: payTo.address, maxTimeoutSeconds: 300, extra: { name: "USD Coin", version: "2" } }],
  });
  const pa = pp.payload.authorization;
  const h3 = await wallet(facilitator).writeContract({ address: token, abi, functionName: "transferWithAuthorization",
    args: [pa.from, pa.to, BigInt(pa.value), BigInt(pa.validAfter), BigInt(pa.validBefore), pa.nonce, pp.payload.signature] });
  check((await pub.waitForTransactionReceipt({ hash: h3 })).status === "success", "payload signed by @x402/evm ExactEvmScheme settles on TestUSDC");
  check((await read("balanceOf", [payTo.address])) === 15_000_000n, "payTo balance 15 USDC");
} catch (e) {
  failed++;
  console.log(`FAIL - exception: ${e?.stack || e}`);
} finally {
  clearTimeout(killer);
  await anvil.stop();
}
console.log(`selftest: ${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
