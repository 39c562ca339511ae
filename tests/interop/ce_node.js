// Publishes CloudEvents to shs with the official CloudEvents SDK for JavaScript (`cloudevents`
// on npm), each event twice: in binary mode, then in structured mode, as the SDK writes them.
//
//   node ce_node.js http://127.0.0.1:PORT
//
// Prints one JSON line per request ({case, mode, id, status, answer}) and exits 1 if any answer
// is not 200. tests/e2e/interop.rs runs it and checks what the subscribers received.
'use strict';
const { CloudEvent, HTTP, emitterFor, httpTransport, Mode } = require('cloudevents');

const TIME = '2026-03-04T05:06:07.123Z';

function event(name, data, attributes = {}) {
  return new CloudEvent({
    type: `interop.node.${name}`,
    source: '/interop/node',
    id: `node-${name}`,
    time: TIME,
    ...attributes,
    ...(data === undefined ? {} : { data }),
  });
}

// [case, event]: every kind of data, every optional attribute, extensions.
const CASES = [
  ['json', event('json', { order: 42, items: ['a', 'b'], note: 'caf\u00e9' }, {
    datacontenttype: 'application/json',
    subject: 'order/42',
    dataschema: 'https://example.com/order.json',
    tenant: 'acme',
    priority: 7,
    urgent: true,
  })],
  ['json-default', event('json-default', { n: 1 })],
  ['text', event('text', 'hello, w\u00f6rld\nsecond line', { datacontenttype: 'text/plain' })],
  ['bytes', event('bytes', Uint8Array.from([0, 255, 16, 98, 105, 110, 128]), {
    datacontenttype: 'application/octet-stream',
  })],
  ['png', event('png', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]), {
    datacontenttype: 'image/png',
  })],
  ['empty', event('empty', undefined, { datacontenttype: 'text/plain' })],
];

async function send(url, message) {
  const response = await fetch(`${url}/events`, {
    method: 'POST',
    headers: message.headers,
    body: message.body === undefined ? undefined : message.body,
  });
  const text = await response.text();
  let answer = null;
  try { answer = JSON.parse(text); } catch { answer = text; }
  return { status: response.status, answer };
}

async function main() {
  const url = process.argv[2].replace(/\/$/, '');
  let failed = false;
  for (const [name, ce] of CASES) {
    for (const [mode, message] of [['binary', HTTP.binary(ce)], ['structured', HTTP.structured(ce)]]) {
      const { status, answer } = await send(url, message);
      failed ||= status !== 200;
      console.log(JSON.stringify({ case: name, mode, id: ce.id, status, answer }));
    }
  }
  // The SDK's own HTTP emitter, in both modes.
  const emitted = event('emitter', { via: 'emitter' }, { subject: 'emitted' });
  for (const mode of [Mode.BINARY, Mode.STRUCTURED]) {
    const emit = emitterFor(httpTransport(`${url}/events`), { mode });
    let status = 200;
    let answer = null;
    try {
      answer = await emit(emitted);
    } catch (error) {
      status = error.status ?? error.statusCode ?? 0;
      answer = String(error);
    }
    failed ||= status !== 200;
    console.log(JSON.stringify({ case: 'emitter', mode, id: emitted.id, status, answer }));
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
