// The OpenAI SDK for JavaScript (npm `openai`), unchanged, against a Responses
// server: its stream helpers (which accumulate the events into a Response and
// refuse ones that do not fit), parse with a zod format, and the rest of
// client.responses and client.conversations. BASE_URL and AGENTS_JS_DIR (where
// the pinned packages are installed) come from the environment. Prints one JSON object.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(join(process.env.AGENTS_JS_DIR, 'package.json'));
const OpenAI = require('openai').default;
const { zodTextFormat } = require('openai/helpers/zod');
const { z } = require('zod');

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: 'x', maxRetries: 0 });
const weather = {
  type: 'function', name: 'get_weather', description: 'Weather for a city.', strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
const out = {};

const calls = client.responses.stream({
  model: 'demo', input: 'In Paris: call get_weather and get_time.', tools: [weather, { ...weather, name: 'get_time' }],
});
const argumentDeltas = {};
calls.on('response.function_call_arguments.delta', (e) => {
  argumentDeltas[e.item_id] = (argumentDeltas[e.item_id] ?? '') + e.delta;
});
const called = await calls.finalResponse();
out.calls = called.output.map((item) => [item.type, item.name, item.arguments, argumentDeltas[item.id]]);

const text = client.responses.stream({ model: 'demo', input: 'Say hello.' });
let deltas = '';
text.on('response.output_text.delta', (e) => { deltas += e.delta; });
const said = await text.finalResponse();
out.text = [deltas, said.output_text];

const Person = z.object({ name: z.string(), age: z.number() });
const parsed = await client.responses.parse({
  model: 'demo', input: 'Make up a person.', text: { format: zodTextFormat(Person, 'person') },
});
out.parsed = parsed.output_parsed;

const created = await client.responses.create({ model: 'demo', input: 'hi' });
out.retrieved = (await client.responses.retrieve(created.id)).output_text === created.output_text;
out.inputItems = (await client.responses.inputItems.list(created.id)).data.map((item) => item.type);
out.deleted = (await client.responses.delete(created.id)) === undefined ? 'no body' : 'body';
out.background = (await client.responses.create({ model: 'demo', input: 'hi', background: true })).status;
out.inputTokens = (await client.responses.inputTokens.count({ model: 'demo', input: 'hello there' })).input_tokens;
const compacted = await client.responses.compact({
  model: 'demo', input: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }],
});
out.compacted = compacted.output.map((item) => item.type);
const conversation = await client.conversations.create({ items: [{ type: 'message', role: 'user', content: 'hi' }] });
await client.responses.create({ model: 'demo', input: 'more', conversation: conversation.id });
const listed = await client.conversations.items.list(conversation.id, { order: 'asc' });
out.conversation = listed.data.map((item) => [item.role, item.content[0].text]);
console.log(JSON.stringify(out));
