// The official `openai` npm package against `ledger serve` (tests/test_proxy_node.py):
// one plain call and one streamed call; prints what the SDK saw as one JSON line.
// Usage: PROXY_BASE_URL=http://127.0.0.1:8787/v1 LEDGER_KEY=lk_... node proxy_client.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.PROXY_BASE_URL, apiKey: process.env.LEDGER_KEY,
                            maxRetries: 0 });
const messages = [{ role: "user", content: "hello there" }];

const plain = await client.chat.completions.create({ model: "kimi-k2.5", messages });
let streamed = "";
let streamUsage = null;
const stream = await client.chat.completions.create({
  model: "kimi-k2.5", messages, max_tokens: 7, stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) streamed += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) streamUsage = chunk.usage;
}
let refused = null;
try {
  await new OpenAI({ baseURL: process.env.PROXY_BASE_URL, apiKey: "lk_wrong", maxRetries: 0 })
    .chat.completions.create({ model: "kimi-k2.5", messages });
} catch (err) {
  refused = err.status;
}
console.log(JSON.stringify({ plain: plain.usage, text: plain.choices[0].message.content, streamed,
                             streamUsage, refused }));
