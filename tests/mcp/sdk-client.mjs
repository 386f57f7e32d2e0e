// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk, streamable HTTP
// transport: Accept headers, session handling, notifications/initialized), for the Rust
// tests.
//
// Usage: MCP_BEARER=<token> node sdk-client.mjs <mcp-url> <tool> <json-arguments>
//   connects with the bearer, pages through tools/list, pings, calls <tool> and the stub's
//   failing tool; then connects without a bearer and calls <tool> unpaid (the x402
//   challenge). Prints ONE JSON line: {server, protocolVersion, names, pages, result,
//   failed, challenge}. Exit non-zero on an exception (message on stderr).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

async function connect(url, bearer) {
  const headers = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "agentpmt-test", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

async function main() {
  const [url, tool, argsJson] = process.argv.slice(2);
  if (!url || !tool) throw new Error("usage: node sdk-client.mjs <mcp-url> <tool> <json-arguments>");
  const args = JSON.parse(argsJson || "{}");
  const { client, transport } = await connect(url, process.env.MCP_BEARER);
  const names = [];
  let cursor;
  let pages = 0;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    names.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
    pages += 1;
  } while (cursor && pages < 1000);
  await client.ping();
  const result = await client.callTool({ name: tool, arguments: args });
  const failed = await client.callTool({ name: "stub__fail", arguments: args });
  const out = {
    server: client.getServerVersion(),
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    names,
    pages,
    result,
    failed,
  };
  await client.close();

  const anonymous = await connect(url, null);
  out.challenge = await anonymous.client.callTool({ name: tool, arguments: args });
  await anonymous.client.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`sdk-client: ${e?.stack || e}`);
    process.exit(1);
  },
);
