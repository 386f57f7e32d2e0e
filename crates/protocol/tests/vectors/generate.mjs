// Independent known-answer vector generator for the External Agent API signing contract.
//
// Regenerate everything (from this folder, crates/protocol/tests/vectors/):
//     npm ci && node generate.mjs
// It runs `python3 canonical.py` (Python canonical-JSON cases), adds JS canonical cases,
// signed-message vectors for every action and raw personal_sign vectors (viem), checks
// them, and writes vectors.json (deterministic: ASCII-only, fixed key order).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { concat, hashMessage, keccak256, recoverMessageAddress, stringToBytes, toHex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

const dir = fileURLToPath(new URL('.', import.meta.url));
const py = JSON.parse(execFileSync('python3', ['canonical.py'], { cwd: dir, encoding: 'utf8' }));
const viemVersion = JSON.parse(readFileSync(new URL('node_modules/viem/package.json', import.meta.url))).version;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sha256 = (text) => createHash('sha256').update(text, 'utf8').digest('hex');

// Canonical JSON as a JS client writes it: keys sorted by the default .sort()
// (UTF-16 code unit order), leaves and keys written by JSON.stringify, no whitespace.
function canon(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
}

// Cross-check the JS canonicalizer against Python wherever both must agree
// (no floats, no integers beyond 2^53, no astral-vs-high-BMP key mix).
for (const c of py.canonical) {
  if (['floats', 'integers', 'astral_vs_high_bmp_keys'].includes(c.name)) continue;
  check(canon(JSON.parse(c.utf8)) === c.utf8, `JS canon == Python utf8 for ${c.name}`);
  check(JSON.stringify(JSON.parse(c.ascii)) === JSON.stringify(JSON.parse(c.utf8)), `ascii/utf8 same value ${c.name}`);
}

// ---- JS canonical cases ----
const JS_CASES = [
  ['js_non_ascii', { name: 'café', city: '東京', emoji: '😀', ls: 'a\u2028b', del: 'x\u007fy', ctl: 'a\n\t\u0001b', q: 'say "hi" \\ /' }],
  ['js_astral_vs_high_bmp_keys', { '😀': 'astral', '｡': 'high-bmp', a: 'ascii' }],
  ['js_numbers', { big: 1e21, micro: 0.000001, tiny: 1e-7, neg_zero: -0, one: 1.0, tenth: 0.1, max_safe: 9007199254740991, e16: 1e16 }],
  ['js_nested_and_numeric_keys', { z: { b: [{ y: 1, x: 2 }], a: null }, 10: 'ten', 9: 'nine', a: [true, false, '', {}, []] }],
];
const canonicalJs = JS_CASES.map(([name, obj]) => {
  const js = canon(obj);
  return { name, body: JSON.stringify(obj), js, js_sha256: sha256(js) };
});

// ---- signed-message vectors ----
const KEYS = {
  a: '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318',
  b: '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  c: '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
};

// action -> [route template, path param giving the product line (null: "-"), payload rule]
const pick = (names) => (f) => Object.fromEntries(names.filter((n) => n in f).map((n) => [n, f[n]]));
const TABLE = {
  balance: ['/api/external/credits/balance', null, () => null],
  invoke: ['/api/external/tools/{productId}/invoke', 'productId', (f) => f.parameters ?? {}],
  tool_action_invoke: ['/api/external/tools/{productSlug}/actions/{actionSlug}/invoke', undefined, (f) => f.parameters ?? {}],
  workflow_fetch: ['/api/external/workflows/{workflowId}/fetch', 'workflowId', () => null],
  workflow_start: ['/api/external/workflows/{workflowId}/start', 'workflowId', pick(['instance_id'])],
  workflow_active: ['/api/external/workflows/active', null, (f) => ('instance_id' in f ? pick(['instance_id'])(f) : null)],
  workflow_end: ['/api/external/workflows/{workflowId}/end', 'workflowId', pick(['workflow_session_id'])],
  job_list: ['/api/external/jobs/list', null, pick(['limit', 'skip'])],
  job_reserve: ['/api/external/jobs/{jobId}/reserve', 'jobId', () => ({})],
  job_complete: ['/api/external/jobs/{jobId}/complete', 'jobId', (f) => f], // body minus envelope
  job_status: ['/api/external/jobs/{jobId}/status', 'jobId', () => ({})],
};

// [name, action, key, path_params, body fields (besides the envelope), options]
// options.checksum: send the EIP-55 wallet in the body; options.python: a Python client
// sends `parameters` = that canonical.py case (body json.dumps, payload hashed ASCII-escaped).
const MESSAGES = [
  ['balance', 'balance', 'a', {}, {}],
  ['invoke', 'invoke', 'a', { productId: 'prod_weather_01' }, { parameters: { city: 'Berlin', units: 'metric', days: 3 } }],
  ['invoke_no_parameters', 'invoke', 'b', { productId: 'prod_ping' }, {}],
  ['invoke_non_ascii_parameters', 'invoke', 'b', { productId: 'prod_translate' },
    { parameters: { text: 'Résumé für 東京 😀', target: 'ja', 'é': true, e: false, note: 'line1\nline2 "q" \u2028' } }],
  ['invoke_python_client_ascii_escaped', 'invoke', 'c', { productId: 'prod_search' }, {}, { python: 'tool_parameters' }],
  ['tool_action_invoke', 'tool_action_invoke', 'a', { productSlug: 'web-search', actionSlug: 'query' },
    { parameters: { q: 'rust eip-191', max_results: 10, filters: { lang: 'en', safe: true } } }],
  ['tool_action_invoke_no_parameters', 'tool_action_invoke', 'c', { productSlug: 'clock', actionSlug: 'now' }, {}],
  ['workflow_fetch', 'workflow_fetch', 'a', { workflowId: 'wf_4f2a9c' }, {}],
  ['workflow_start', 'workflow_start', 'b', { workflowId: 'wf_4f2a9c' }, { instance_id: 'inst_0001' }],
  ['workflow_active_with_instance_id', 'workflow_active', 'b', {}, { instance_id: 'inst_0001' }],
  ['workflow_active_without_instance_id', 'workflow_active', 'b', {}, {}],
  ['workflow_end', 'workflow_end', 'b', { workflowId: 'wf_4f2a9c' }, { workflow_session_id: 'wfs_77e1b0' }],
  ['job_list', 'job_list', 'c', {}, { limit: 20, skip: 0 }],
  ['job_list_limit_only', 'job_list', 'c', {}, { limit: 5 }],
  ['job_reserve', 'job_reserve', 'a', { jobId: 'job_123' }, {}],
  ['job_complete_social_share', 'job_complete', 'a', { jobId: 'job_123' },
    { reservation_id: 'res_9b8a', proof_text: 'Shared the launch post ✓', social_posts: [{ platform: 'x', url: 'https://x.com/agentpmt/status/1234567890' }] }],
  ['job_complete_workflow', 'job_complete', 'c', { jobId: 'job_456' },
    { reservation_id: 'res_00c1', proof_text: 'Workflow finished', workflow_id: 'wf_4f2a9c' }],
  ['job_status', 'job_status', 'a', { jobId: 'job_123' }, {}],
  ['job_status_checksummed_wallet', 'job_status', 'b', { jobId: 'job_789' }, {}, { checksum: true }],
];

const fill = (tpl, params) => tpl.replace(/\{(\w+)\}/g, (_, k) => {
  check(k in params, `path param ${k}`);
  return params[k];
});

const messages = [];
for (const [i, [name, action, key, pathParams, fields, opts = {}]] of MESSAGES.entries()) {
  const [route, productParam, payloadRule] = TABLE[action];
  const account = privateKeyToAccount(KEYS[key]);
  const address = account.address.toLowerCase();
  const bodyWallet = opts.checksum ? account.address : address;
  const nonce = `sn_${(0x5eed0000 + i * 7919).toString(16)}`;
  const requestId = `req-${String(i + 1).padStart(4, '0')}`;

  let payloadCanonical;
  let pyCase;
  if (opts.python) {
    pyCase = py.canonical.find((c) => c.name === opts.python);
    payloadCanonical = pyCase.ascii;
  } else {
    const payload = payloadRule(fields);
    payloadCanonical = payload === null ? null : canon(payload);
  }
  const payloadHash = payloadCanonical === null ? '' : sha256(payloadCanonical);

  const scope = action === 'tool_action_invoke'
    ? ['method:POST', `path:${fill('/external/tools/{productSlug}/actions/{actionSlug}/invoke', pathParams)}`]
    : [`action:${action}`, `product:${productParam ? fill(`{${productParam}}`, pathParams) : '-'}`];
  const message = ['agentpmt-external', `wallet:${address}`, `session:${nonce}`, `request:${requestId}`, ...scope,
    `payload:${payloadHash}`].join('\n');

  const signature = await account.signMessage({ message });
  const recovered = (await recoverMessageAddress({ message, signature })).toLowerCase();

  const env = { wallet_address: bodyWallet, session_nonce: nonce, request_id: requestId };
  const body = pyCase
    // exactly what Python's json.dumps({...env, "parameters": obj, "signature": sig}) writes
    ? `{${Object.entries(env).map(([k, v]) => `"${k}": "${v}"`).join(', ')}, "parameters": ${pyCase.body}, "signature": "${signature}"}`
    : JSON.stringify({ ...env, ...fields, signature });

  messages.push({
    name, action,
    http_method: 'POST', http_path: fill(route, pathParams), path_params: pathParams,
    body, payload_canonical: payloadCanonical, payload_hash: payloadHash, message,
    eip191_hash: hashMessage(message), private_key: KEYS[key], signature, address, recovered_address: recovered,
  });
}

// ---- raw personal_sign vectors ----
const TEXTS = [['a', '0x4243'], ['b', 'hello'], ['c', ''], ['a', 'café ✓ 😀'], ['b', 'line one\nline two\n\nline four']];
const personalSign = [];
for (const [key, text] of TEXTS) {
  const account = privateKeyToAccount(KEYS[key]);
  const signature = await account.signMessage({ message: text });
  const bytes = stringToBytes(text);
  const prefixed = concat([stringToBytes(`\x19Ethereum Signed Message:\n${bytes.length}`), bytes]);
  const eip191 = hashMessage(text);
  check(keccak256(prefixed) === eip191, `manual EIP-191 hash of ${JSON.stringify(text)}`);
  const address = account.address.toLowerCase();
  check((await recoverMessageAddress({ message: text, signature })).toLowerCase() === address, 'personal_sign recover');
  personalSign.push({ text, prefixed_message_hex: toHex(prefixed), eip191_hash: eip191, private_key: KEYS[key], signature, address });
}

// ---- checks ----
// The Python-client body is byte-identical to Python's own json.dumps of its parsed value.
for (const m of messages.filter((x) => x.name.includes('python'))) {
  const redump = execFileSync('python3', ['-c', 'import json,sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read())))'], { input: m.body, encoding: 'utf8' });
  check(redump === m.body, `python body round-trips: ${m.name}`);
}
const byName = Object.fromEntries(messages.map((m) => [m.name, m]));
for (const m of messages) {
  check(m.recovered_address === m.address, `recovered == address for ${m.name}`);
  check(!m.message.endsWith('\n') && m.message.split('\n').length === 7, `7 lines, no trailing newline: ${m.name}`);
  check(JSON.parse(m.body).signature === m.signature, `signature in body: ${m.name}`);
  check(Object.keys(JSON.parse(m.body)).at(-1) === 'signature', `signature last: ${m.name}`);
}
for (const a of Object.keys(TABLE)) check(messages.some((m) => m.action === a), `a vector for ${a}`);
check(byName.balance.message.endsWith('\npayload:'), 'balance ends with payload:');
check(byName.job_reserve.payload_hash === '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', 'sha256({})');
check(byName.job_status_checksummed_wallet.body.includes(privateKeyToAccount(KEYS.b).address), 'checksummed body wallet');
check(personalSign[0].prefixed_message_hex === '0x19457468657265756d205369676e6564204d6573736167653a0a36307834323433', '0x4243 is text');

const out = {
  generated_by: `generate.mjs with viem ${viemVersion} + canonical.py with Python ${py.python_version}`,
  canonical: py.canonical,
  canonical_js: canonicalJs,
  messages,
  personal_sign: personalSign,
};
// ASCII-only file: every non-ASCII code unit (and DEL) written as a \uXXXX escape.
const text = JSON.stringify(out, null, 2).replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
check(JSON.stringify(JSON.parse(text)) === JSON.stringify(out), 'escaped output round-trips');
writeFileSync(new URL('vectors.json', import.meta.url), `${text}\n`);
console.log(`wrote vectors.json: ${py.canonical.length} canonical, ${canonicalJs.length} canonical_js, ${messages.length} messages, ${personalSign.length} personal_sign`);
