// One run of the OpenAI Agents SDK for JavaScript (@openai/agents) against a
// Responses server, unchanged: node agents.mjs MODE, with BASE_URL, MODEL,
// TOOL (get_weather or get_time), PROMPT and AGENTS_JS_DIR (where the pinned
// packages are installed) in the environment. Prints one JSON object.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(join(process.env.AGENTS_JS_DIR, 'package.json'));
const agents = require('@openai/agents');
const OpenAI = require('openai').default;
const { z } = require('zod');
// Node.js 22 has a global WebSocket; on 20 the SDK's WebSocket transport needs one given.
if (!globalThis.WebSocket) globalThis.WebSocket = require('ws').WebSocket;

agents.setTracingDisabled(true);
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: 'x', maxRetries: 0 });
agents.setDefaultOpenAIClient(client);
const model = process.env.MODEL;
const calls = [];
const tools = {
  get_weather: agents.tool({
    name: 'get_weather', description: 'Weather for a city.', parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => { calls.push(city); return `sunny in ${city}`; },
  }),
  get_time: agents.tool({
    name: 'get_time', description: 'Current time in a zone.', parameters: z.object({ tz: z.string() }),
    execute: async ({ tz }) => { calls.push(tz); return `12:00 in ${tz}`; },
  }),
};
const withTool = new agents.Agent({ name: 'helper', instructions: 'Use the tools.', model, tools: [tools[process.env.TOOL]] });
const plain = new agents.Agent({ name: 'helper', instructions: 'Be brief.', model });
const prompt = process.env.PROMPT;
const mode = process.argv[2];
const out = { mode, calls };

if (mode === 'run' || mode === 'websocket') {
  if (mode === 'websocket') agents.setOpenAIResponsesTransport('websocket');
  out.final = (await agents.run(withTool, prompt)).finalOutput;
} else if (mode === 'stream') {
  const result = await agents.run(withTool, prompt, { stream: true });
  out.kinds = [];
  for await (const event of result) if (event.type === 'run_item_stream_event') out.kinds.push(event.item.type);
  await result.completed;
  out.final = result.finalOutput;
} else if (mode === 'conversation' || mode === 'compaction') {
  const session = mode === 'conversation'
    ? new agents.OpenAIConversationsSession({ client })
    // Compacts after every turn; the SDK only compacts for OpenAI model names.
    : new agents.OpenAIResponsesCompactionSession({
        client, model: 'gpt-5.5', underlyingSession: new agents.MemorySession(), shouldTriggerCompaction: () => true,
      });
  out.finals = [];
  for (const text of ['My name is Ada.', 'What did I say?']) out.finals.push((await agents.run(plain, text, { session })).finalOutput);
  out.items = (await session.getItems()).map((item) => [item.type, item.role ?? null]);
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify(out));
process.exit(0); // the WebSocket transport keeps its socket open for the next run
