// Asks the gateway the same deterministic questions twice with the official Node SDKs
// (the second answer comes from the exact cache); prints one JSON object: for each
// question what the cache said each time, and what the SDK parsed each time.
// Usage: node drive_levers.mjs <gateway base url> <rcv key, default policy> <rcv key, policy all>
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const [base, openaiKey, claudeKey] = process.argv.slice(2);
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: openaiKey, maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: claudeKey, maxRetries: 0 });
const headers = { "x-mock-input-tokens": "21", "x-mock-output-tokens": "8" };
const ask = (content) => [{ role: "user", content }];

// Each question twice; `parse` turns what the SDK returned into plain data.
async function twice(request, parse) {
  const runs = [];
  for (let i = 0; i < 2; i += 1) {
    const { data, response } = await request().withResponse();
    runs.push({ cache: response.headers.get("x-recovea-cache"), parsed: await parse(data) });
  }
  return runs;
}

async function collect(stream) {
  const events = [];
  for await (const event of stream) events.push(event);
  return events;
}

const same = (value) => value;

const chat = await twice(
  () => openai.chat.completions.create(
    { model: "gpt-4o-mini", temperature: 0, messages: ask("node-levers-chat") },
    { headers },
  ),
  same,
);
const chatStream = await twice(
  () => openai.chat.completions.create(
    { model: "gpt-4o-mini", temperature: 0, stream: true, messages: ask("node-levers-stream") },
    { headers },
  ),
  collect,
);
const message = await twice(
  () => anthropic.messages.create(
    { model: "claude-sonnet-5-5", max_tokens: 64, messages: ask("node-levers-message") },
    { headers },
  ),
  same,
);
const messageStream = await twice(
  () => anthropic.messages.create(
    { model: "claude-sonnet-5-5", max_tokens: 64, stream: true, messages: ask("node-levers-events") },
    { headers },
  ),
  collect,
);

console.log(JSON.stringify({ chat, chatStream, message, messageStream }));
