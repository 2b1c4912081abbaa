// The service's JSON API, the API key (kept in this tab's sessionStorage, never in the URL) and
// the 401 → ask-for-a-key loop.

import { parseExact } from './dom.js';

const KEY_ITEM = 'pgactions.apiKey';
let keyPrompt = null;

/** fn(error) → Promise<string|null>: asks the user for a key after a 401. */
export function onKeyNeeded(fn) {
  keyPrompt = fn;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
  document.dispatchEvent(new CustomEvent('pga:key'));
}

/**
 * One request; resolves to {status, ok, ms, data, text, requestId}. Never throws: a network
 * failure is an answer with status 0 and an error object like the service's own.
 */
export async function call(method, path, body) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: 'application/json' };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const started = performance.now();
    let response;
    try {
      response = await fetch(new URL(path, document.baseURI), {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit', cache: 'no-store',
      });
    } catch (exc) {
      return {
        status: 0, ok: false, ms: performance.now() - started, text: '', requestId: null,
        data: { error: { code: 'SERVICE_UNREACHABLE', message: 'The pgactions service did not answer.',
          cause: String(exc), fix: ['Check that pgactions serve is still running, then try again.'],
          retryable: true } },
      };
    }
    const text = await response.text();
    const ms = performance.now() - started;
    let data = null;
    try {
      data = text ? parseExact(text) : null;
    } catch {
      data = { error: { code: 'BAD_RESPONSE', message: `The service answered ${response.status} with no JSON.`,
        cause: text.slice(0, 200), fix: [], retryable: false } };
    }
    if (response.status === 401 && keyPrompt && attempt < 3) {
      const given = await keyPrompt(data && data.error);
      if (given) {
        setApiKey(given);
        continue;
      }
    }
    return { status: response.status, ok: response.ok, ms, data, text,
      requestId: response.headers.get('x-request-id') };
  }
}

const manifests = new Map();

/** GET /v1/actions/{id}, cached for the page's life. */
export async function manifest(id) {
  if (!manifests.has(id)) {
    const answer = await call('GET', `v1/actions/${encodeURIComponent(id)}`);
    if (!answer.ok) throw answerError(answer);
    manifests.set(id, answer.data);
  }
  return manifests.get(id);
}

/** An Error carrying the service's error object. */
export function answerError(answer) {
  const error = new Error((answer.data && answer.data.error && answer.data.error.message) || `HTTP ${answer.status}`);
  error.payload = (answer.data && answer.data.error) || { code: `HTTP_${answer.status}`, message: error.message };
  return error;
}
