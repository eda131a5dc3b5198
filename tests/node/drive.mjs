// Drives the gateway with the official Node SDKs; prints one JSON object of results.
// Usage: node drive.mjs <gateway base url>
import OpenAI, { toFile } from "openai";
import Anthropic from "@anthropic-ai/sdk";

const base = process.argv[2];
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-node-test-0000000000", maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: "sk-ant-node-test-000000", maxRetries: 0 });
const headers = { "x-mock-input-tokens": "21", "x-mock-output-tokens": "8" };

const { data: chat, response: chatResponse } = await openai.chat.completions
  .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "node-chat" }] }, { headers })
  .withResponse();

const stream = await openai.chat.completions.create(
  { model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "node-stream" }] },
  { headers },
);
let streamed = "";
let usageChunks = 0;
for await (const chunk of stream) {
  if (chunk.usage) usageChunks += 1;
  streamed += chunk.choices[0]?.delta?.content ?? "";
}

const messageStream = anthropic.messages.stream(
  { model: "claude-sonnet-5-5", max_tokens: 64, messages: [{ role: "user", content: "node-msg" }] },
  { headers },
);
const message = await messageStream.finalMessage();

// /v1/models exists on both providers: anthropic-version makes this one Anthropic's.
const anthropicModels = await anthropic.models.list();
const anthropicModelTypes = [...new Set(anthropicModels.data.map((m) => m.type))];

// A multipart upload through fetch's own body streaming.
const uploadBytes = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
const uploaded = await openai.files.create({
  file: await toFile(uploadBytes, "node.jsonl"),
  purpose: "batch",
});

let errorStatus = null;
try {
  await new OpenAI({ baseURL: `${base}/v1`, apiKey: "rcv_live_unknownkey000000", maxRetries: 0 })
    .models.list();
} catch (err) {
  errorStatus = err.status;
}

console.log(JSON.stringify({
  chat: chat.choices[0].message.content,
  chatRequestId: chatResponse.headers.get("x-request-id"),
  streamed,
  usageChunks,
  message: message.content[0].text,
  messageOutputTokens: message.usage.output_tokens,
  errorStatus,
  anthropicModelTypes,
  uploadedBytes: uploaded.bytes,
}));
