// Talking to the server: every call carries the API key of this tab (if the server wants
// one); a 401 asks for the key again. Live updates come over one server-sent-events route,
// read with fetch() (EventSource cannot send the key in a header) and parsed here.

const KEY = 'shs.apiKey';

export const apiKey = {
  get() {
    try {
      return sessionStorage.getItem(KEY) || '';
    } catch {
      return '';
    }
  },
  set(value) {
    sessionStorage.setItem(KEY, value);
    document.dispatchEvent(new CustomEvent('shs:key'));
  },
  clear() {
    sessionStorage.removeItem(KEY);
    document.dispatchEvent(new CustomEvent('shs:key'));
  },
};

/** An answer that is not a success: its status and the server's message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let asking = null;

/** Shows the key dialog (once, however many calls wait for it); resolves with the new key. */
export function askForKey(message) {
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  document.getElementById('key-message').textContent = message;
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('cancel', keep);
      apiKey.set(key);
      input.value = '';
      dialog.close();
      asking = null;
      resolve(key);
    };
    // Nothing works without a key: Escape does not close the dialog.
    const keep = (event) => event.preventDefault();
    form.addEventListener('submit', submit);
    dialog.addEventListener('cancel', keep);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return asking;
}

/** fetch() with the key; on 401 asks for a key and tries again. */
export async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = apiKey.get();
    if (key) headers.set('X-API-Key', key);
    const response = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'same-origin', redirect: 'manual' });
    if (response.status !== 401) return response;
    await askForKey(key
      ? 'The server refused this key (401 Unauthorized). Check it and try again.'
      : 'This server needs an API key (401 Unauthorized).');
  }
}

/** A JSON call: the answer's body, or an ApiError with the server's message. */
export async function json(path, init) {
  const response = await api(path, init);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error?.message || `${response.status} ${response.statusText}`, body);
  }
  return body;
}

/** Parses server-sent events from chunks of text; calls onEvent({event, data, id}). */
export function sseParser(onEvent) {
  let buffer = '';
  let event = { event: 'message', data: [], id: '' };
  const line = (text) => {
    if (text === '') {
      if (event.data.length) onEvent({ event: event.event, data: event.data.join('\n'), id: event.id });
      event = { event: 'message', data: [], id: event.id };
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event.event = value;
    else if (field === 'data') event.data.push(value);
    else if (field === 'id') event.id = value;
  };
  return {
    push(chunk) {
      buffer += chunk;
      const parts = buffer.split(/\r\n|\r|\n/);
      buffer = parts.pop();
      for (const part of parts) line(part);
    },
  };
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Follows `GET /stream` on `topics` until the returned function is called: onEvent gets each
 * event, onStatus('live' | 'connecting' | 'reconnecting' | 'error', message, status). It
 * reconnects by itself, waiting longer after each failure (up to 10 s).
 */
export function follow(topics, { tail = 200, onEvent, onStatus = () => {} }) {
  const control = new AbortController();
  const query = `topics=${encodeURIComponent(topics.join(','))}&tail=${tail}`;
  (async () => {
    let delay = 1000;
    while (!control.signal.aborted) {
      try {
        onStatus('connecting');
        const response = await api(`/stream?${query}`, { signal: control.signal, headers: { Accept: 'text/event-stream' } });
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          onStatus('error', body?.error?.message || `${response.status} ${response.statusText}`, response.status);
        } else {
          onStatus('live');
          delay = 1000;
          let bye = false;
          const parser = sseParser((event) => {
            if (event.event === 'bye') bye = true;
            onEvent(event);
          });
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parser.push(value);
          }
          onStatus('reconnecting', bye ? 'the server is shutting down' : 'the stream ended');
        }
      } catch (error) {
        if (control.signal.aborted) return;
        onStatus('reconnecting', String(error?.message || error));
      }
      await sleep(delay, control.signal);
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => control.abort();
}
