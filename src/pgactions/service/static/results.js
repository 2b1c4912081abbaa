// What an answer looks like: rows as a table (and the raw JSON), or the error card.

import { h, prettyJson } from './dom.js';

const MAX_ROWS_SHOWN = 500;

/** The error card: code, message, cause, what to try, whether retrying may help, and the details. */
export function errorCard(error, extra = {}) {
  const known = new Set(['code', 'message', 'cause', 'fix', 'retryable', 'detail']);
  const details = Object.entries(error).filter(([k, v]) => !known.has(k) && v !== null && v !== undefined);
  return h('section', { class: 'error-card', role: 'alert', dataset: { code: error.code || '' } },
    h('header', {},
      h('span', { class: 'code mono' }, error.code || 'ERROR'),
      extra.step ? h('span', { class: 'badge failed' }, `failed at ${extra.step}`) : null,
      h('span', { class: ['badge', error.retryable ? 'retry' : 'noretry'] },
        error.retryable ? 'retryable: trying again may work' : 'not retryable: change something first')),
    h('p', { class: 'message' }, error.message || ''),
    error.cause ? h('p', { class: 'cause' }, h('strong', {}, 'Cause: '), error.cause) : null,
    error.fix && error.fix.length
      ? h('div', { class: 'fix' }, h('strong', {}, 'How to fix'), h('ol', {}, error.fix.map((f) => h('li', {}, f))))
      : null,
    error.detail ? h('p', { class: 'detail mono' }, error.detail) : null,
    details.length
      ? h('dl', { class: 'facts' }, details.flatMap(([k, v]) => [h('dt', {}, k),
        h('dd', { class: 'mono' }, typeof v === 'object' ? JSON.stringify(v) : String(v))]))
      : null);
}

function cellText(value) {
  if (value === null) return h('span', { class: 'null' }, 'null');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A table of row objects (columns in first-seen order). */
export function rowsTable(rows, caption) {
  const columns = [];
  const seen = new Set();
  for (const row of rows.slice(0, MAX_ROWS_SHOWN)) {
    for (const key of Object.keys(row && typeof row === 'object' ? row : { value: row })) {
      if (!seen.has(key)) { seen.add(key); columns.push(key); }
    }
  }
  const shown = rows.slice(0, MAX_ROWS_SHOWN);
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption || 'rows' },
    h('table', { class: 'rows-table' },
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, shown.map((row) => h('tr', {}, columns.map((c) => {
        const value = row && typeof row === 'object' ? row[c] : row;
        return h('td', { class: typeof value === 'number' ? 'num' : null }, value === undefined ? '' : cellText(value));
      }))))),
    rows.length > MAX_ROWS_SHOWN ? h('p', { class: 'note' }, `First ${MAX_ROWS_SHOWN} of ${rows.length} rows shown; the JSON has them all.`) : null);
}

/** The rows of an output: rows[], a single row, the first list of objects, else the output itself;
 * key is the output's field shown (null when the table is the output's own plain values). */
function tableOf(output) {
  if (Array.isArray(output.rows)) return { rows: output.rows, caption: null, key: 'rows' };
  if (output.row && typeof output.row === 'object') return { rows: [output.row], caption: 'row', key: 'row' };
  for (const [key, value] of Object.entries(output)) {
    if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === 'object' && !Array.isArray(v))) {
      return { rows: value, caption: key, key };
    }
  }
  const scalars = Object.fromEntries(Object.entries(output).filter(([, v]) => v === null || typeof v !== 'object'));
  return { rows: Object.keys(scalars).length ? [scalars] : [], caption: null, key: null };
}

/** The output's other plain values beside its table (a function's definition, a table's kind …);
 * the row count and the inserted id are in the answer's line already. */
function factsOf(output, shown) {
  const skip = new Set(['rowCount', 'insertedId', shown]);
  const facts = Object.entries(output).filter(([k, v]) => !skip.has(k) && (v === null || typeof v !== 'object'));
  if (!facts.length) return null;
  return h('dl', { class: 'facts output-facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k),
    h('dd', { class: ['mono', typeof v === 'string' && v.includes('\n') && 'multiline'], dataset: { fact: k } },
      v === null ? h('span', { class: 'null' }, 'null') : String(v))]));
}

const MAX_JSON_SHOWN = 2_000_000; // characters: a 10 MB answer would make the page crawl

function jsonBlock(text) {
  if (text.length > MAX_JSON_SHOWN) {
    return h('div', {}, h('p', { class: 'note' }, `The first ${MAX_JSON_SHOWN.toLocaleString()} of ${text.length.toLocaleString()} characters, as sent:`),
      h('pre', { class: 'json mono', tabindex: '0' }, text.slice(0, MAX_JSON_SHOWN)));
  }
  return h('pre', { class: 'json mono', tabindex: '0' }, prettyJson(text));
}

/** Table | JSON switch for one output. */
function outputView(output, text) {
  const { rows, caption, key } = tableOf(output);
  const table = h('div', { class: 'table-view' }, key === null ? null : factsOf(output, key),
    rows.length ? rowsTable(rows, caption) : h('p', { class: 'note' }, 'No rows.'));
  const json = jsonBlock(text);
  json.hidden = true;
  const tabs = [['Table', table], ['JSON', json]].map(([name, panel]) => {
    const button = h('button', { type: 'button', class: 'tab', 'aria-pressed': String(name === 'Table'), dataset: { view: name.toLowerCase() } }, name);
    button.addEventListener('click', () => {
      tabs.forEach((b) => b.setAttribute('aria-pressed', String(b === button)));
      table.hidden = name !== 'Table';
      json.hidden = name !== 'JSON';
    });
    return button;
  });
  return h('div', { class: 'output' }, h('div', { class: 'view-tabs', role: 'group', 'aria-label': 'Show the output as' }, tabs), table, json);
}

function meta(answer, extra) {
  const data = answer.data || {};
  const bits = [];
  bits.push(h('span', { class: ['badge', answer.ok && data.ok !== false ? 'ok' : 'failed'], dataset: { status: String(answer.status) } },
    answer.ok ? (data.ok === false ? 'some items failed' : 'OK') : (data.error && data.error.code) || `HTTP ${answer.status}`));
  if (typeof data.rowCount === 'number') bits.push(h('span', { class: 'stat', dataset: { stat: 'rowCount' } }, `${data.rowCount} row${data.rowCount === 1 ? '' : 's'}`));
  if (data.insertedId !== undefined && data.insertedId !== null) {
    bits.push(h('span', { class: 'stat', dataset: { stat: 'insertedId' } }, `insertedId ${JSON.stringify(data.insertedId)}`));
  }
  bits.push(h('span', { class: 'stat', dataset: { stat: 'ms' } }, `${answer.ms.toFixed(1)} ms`));
  bits.push(h('span', { class: 'stat dim' }, `HTTP ${answer.status}`));
  if (extra) bits.push(h('span', { class: 'stat dim' }, extra));
  return h('div', { class: 'meta' }, bits);
}

/** The answer of :run or :batch. */
export function answerView(answer) {
  const data = answer.data || {};
  if (data.error) return h('div', { class: 'answer', dataset: { state: 'error' } }, meta(answer), errorCard(data.error));
  if (Array.isArray(data.items) && data.mode) {
    return h('div', { class: 'answer', dataset: { state: data.ok ? 'ok' : 'partial' } },
      meta(answer, `${data.mode}: ${data.items.filter((i) => i.ok).length} succeeded, ${data.items.filter((i) => !i.ok).length} failed`),
      data.items.map((item, i) => h('section', { class: 'batch-result', dataset: { index: String(i) } },
        h('h4', {}, `Item ${i + 1}`, h('span', { class: ['badge', item.ok ? 'ok' : 'failed'] }, item.ok ? 'OK' : item.error.code)),
        item.ok ? outputView(item.output || {}, JSON.stringify(item.output ?? null)) : errorCard(item.error))),
      h('details', { class: 'raw' }, h('summary', {}, 'Raw JSON'), jsonBlock(answer.text)));
  }
  return h('div', { class: 'answer', dataset: { state: 'ok' } }, meta(answer), outputView(data, answer.text));
}
