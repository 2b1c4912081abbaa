// The Connections screen: a form generated from the connection profile schema (/openapi.json,
// components.schemas.ConnectionProfile), saved connections, and Test connection's layered report.

import { answerError, call } from './api.js';
import { fill, h, uid } from './dom.js';
import { buildForm, FormError } from './forms.js';
import { errorCard } from './results.js';

const MASK = '********';
const GROUPS = [
  { title: 'Server', fields: ['url', 'host', 'port', 'database', 'username', 'password', 'schema'] },
  { title: 'SSL', fields: ['sslMode', 'sslRootCert'] },
  { title: 'Client certificate', fields: ['sslCert', 'sslKey', 'sslPassword'], collapsed: true },
  { title: 'Pooling and limits', fields: ['pgbouncer', 'maxConnections', 'idleTimeout', 'connectTimeout', 'statementTimeout', 'applicationName'], collapsed: true },
  { title: 'More libpq options', fields: '*', collapsed: true },
];
const PEM_FIELDS = new Set(['sslRootCert', 'sslCert', 'sslKey']);
const STEP_ICON = { ok: '✓', failed: '✗', skipped: '–' };

/** CA / certificate / key: pasted PEM or a file read in the browser (a caller's profile may not name server files). */
function pemField(schema, ctx) {
  if (!PEM_FIELDS.has(ctx.name)) return null;
  const kind = ctx.name === 'sslKey' ? 'PRIVATE KEY' : 'CERTIFICATE';
  const area = h('textarea', { id: ctx.id, class: 'mono pem', rows: 2, spellcheck: 'false', dataset: { path: ctx.path },
    placeholder: `-----BEGIN ${kind}-----  (paste the PEM, or load the file)` });
  const file = h('input', { type: 'file', accept: '.pem,.crt,.cer,.key,text/plain', hidden: true, tabindex: '-1' });
  const load = h('button', { type: 'button', class: 'tool', 'aria-label': `${ctx.label}: load from a file` }, 'Load file…');
  load.addEventListener('click', () => file.click());
  file.addEventListener('change', async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    area.value = (await chosen.text()).trim();
    area.dispatchEvent(new Event('input', { bubbles: true }));
    file.value = '';
  });
  return {
    el: h('span', { class: 'pem-wrap' }, area, file),
    tools: [load],
    get: () => (area.value.trim() === '' ? undefined : area.value.trim()),
    set: (value) => { area.value = value ?? ''; },
  };
}

export function connectionsScreen(root, app) {
  let form = null;
  let loadedId = null; // the saved connection the form shows, if any
  let dirty = false;
  const idInput = h('input', { type: 'text', id: 'conn-id', required: true, autocomplete: 'off', spellcheck: 'false',
    pattern: '[A-Za-z0-9._\\-]+', placeholder: 'e.g. shop-prod', 'aria-describedby': 'conn-id-help' });
  const formHost = h('div', { class: 'conn-form' });
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const report = h('div', { class: 'report', id: 'test-report' });
  const savedList = h('ul', { class: 'saved-list', id: 'saved-connections' });
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'conn-save' }, 'Save');
  const testButton = h('button', { type: 'button', id: 'conn-test' }, 'Test connection');
  const deleteButton = h('button', { type: 'button', class: 'danger', id: 'conn-delete', disabled: true }, 'Delete');
  const say = (text, kind = '') => { status.textContent = text; status.dataset.kind = kind; };

  const editor = h('form', { class: 'conn-editor', novalidate: true, 'aria-labelledby': 'conn-title' },
    h('h2', { id: 'conn-title' }, 'Connection'),
    h('div', { class: 'field' },
      h('div', { class: 'field-head' }, h('label', { class: 'label', for: 'conn-id' }, 'Name', h('span', { class: 'req' }, ' *'))),
      idInput,
      h('p', { class: 'help', id: 'conn-id-help' }, 'Flows refer to the saved connection by this name (connectionId). Secrets are stored encrypted and shown as ******** afterwards; leave them so to keep them.')),
    formHost,
    h('div', { class: 'button-bar' }, saveButton, testButton, deleteButton));

  fill(root,
    h('aside', { class: 'side', 'aria-labelledby': 'saved-title' },
      h('h2', { id: 'saved-title' }, 'Saved connections'),
      savedList,
      h('button', { type: 'button', id: 'conn-new', onclick: () => { startNew(); idInput.focus(); } }, '+ New connection')),
    editor,
    h('section', { class: 'result', 'aria-label': 'Test connection', 'aria-live': 'polite' }, status, report));

  editor.addEventListener('input', () => { dirty = true; });
  editor.addEventListener('submit', (event) => { event.preventDefault(); save(); });
  testButton.addEventListener('click', () => test());
  deleteButton.addEventListener('click', () => remove());

  function profile() {
    const value = form.get();
    return value;
  }

  function startNew() {
    loadedId = null;
    idInput.value = '';
    form.set({});
    deleteButton.disabled = true;
    dirty = false;
    fill(report);
    say('');
    markCurrent();
  }

  async function open(id) {
    const answer = await call('GET', `v1/connections/${encodeURIComponent(id)}`);
    if (!answer.ok) { fill(report, errorCard(answer.data.error)); return; }
    loadedId = id;
    idInput.value = id;
    form.set(answer.data.connection);
    deleteButton.disabled = false;
    dirty = false;
    fill(report);
    say(`Loaded ${id}.`);
    markCurrent();
  }

  function markCurrent() {
    for (const li of savedList.children) {
      const button = li.querySelector('button.open');
      if (button) button.setAttribute('aria-current', String(li.dataset.id === loadedId));
    }
  }

  async function refresh() {
    const ids = await app.refreshConnections();
    fill(savedList, ids.length ? ids.map((id) => h('li', { dataset: { id } },
      h('button', { type: 'button', class: 'open', onclick: () => open(id) }, id),
      h('button', { type: 'button', class: 'use', 'aria-label': `Use ${id} for actions`,
        onclick: () => { app.useConnection(id); app.go('actions'); } }, 'Use'))) : h('li', { class: 'note' }, 'None yet.'));
    markCurrent();
  }

  function read() {
    const id = idInput.value.trim();
    try {
      return { id, connection: profile() };
    } catch (exc) {
      if (exc instanceof FormError) { say(exc.message, 'error'); return null; }
      throw exc;
    }
  }

  async function save() {
    const given = read();
    if (!given) return;
    if (!given.id) { say('Give the connection a name first.', 'error'); idInput.focus(); return; }
    saveButton.disabled = true;
    const answer = await call('PUT', `v1/connections/${encodeURIComponent(given.id)}`, given.connection);
    saveButton.disabled = false;
    if (!answer.ok) { say(`Not saved: ${answer.data.error.code}`, 'error'); fill(report, errorCard(answer.data.error)); return; }
    loadedId = given.id;
    form.set(answer.data.connection);
    dirty = false;
    deleteButton.disabled = false;
    fill(report);
    say(`Saved ${given.id}${answer.status === 201 ? ' (new)' : ''}.`, 'ok');
    await refresh();
    if (!app.connection()) app.useConnection(given.id);
  }

  async function remove() {
    if (!loadedId) return;
    const id = loadedId;
    const answer = await call('DELETE', `v1/connections/${encodeURIComponent(id)}`);
    if (!answer.ok && answer.status !== 404) { fill(report, errorCard(answer.data.error)); return; }
    if (app.connection() === id) app.useConnection(null);
    startNew();
    say(`Deleted ${id}.`, 'ok');
    await refresh();
  }

  async function test() {
    const given = read();
    if (!given) return;
    const masked = JSON.stringify(given.connection).includes(MASK);
    let body;
    let note = '';
    if (masked && loadedId) {
      body = { connectionId: loadedId };
      note = dirty ? `Tested the saved ${loadedId}: its secrets stay on the server. Save to test your changes.` : `Tested the saved ${loadedId}.`;
    } else {
      body = { connection: given.connection };
    }
    testButton.disabled = true;
    say('Testing…');
    fill(report);
    const answer = await call('POST', 'v1/connections:test', body);
    testButton.disabled = false;
    if (!answer.ok) { say(''); fill(report, errorCard(answer.data.error)); return; }
    const result = answer.data;
    say(`Tested in ${answer.ms.toFixed(0)} ms. ${note}`, result.ok ? 'ok' : 'error');
    fill(report, reportView(result));
  }

  async function init() {
    const answer = await call('GET', 'openapi.json');
    if (!answer.ok) throw answerError(answer);
    const schema = answer.data.components.schemas.ConnectionProfile;
    form = buildForm(schema, { groups: GROUPS, custom: pemField });
    fill(formHost, h('p', { class: 'help' }, schema.description), form.el);
    await refresh();
  }

  return { init, refresh, open };
}

function factsList(pairs) {
  const shown = pairs.filter(([, v]) => v !== null && v !== undefined && v !== '');
  return h('dl', { class: 'facts' }, shown.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** The layered report of POST /v1/connections:test. */
export function reportView(result) {
  const steps = h('ol', { class: 'steps', 'aria-label': 'Connection steps' }, (result.steps || []).map((step) => {
    const state = step.skipped ? 'skipped' : (step.ok ? 'ok' : 'failed');
    return h('li', { class: 'step', dataset: { step: step.name, state } },
      h('span', { class: 'icon', 'aria-hidden': 'true' }, STEP_ICON[state]),
      h('span', { class: 'name' }, step.name),
      h('span', { class: 'ms' }, typeof step.ms === 'number' ? `${step.ms.toFixed(1)} ms` : ''),
      h('span', { class: 'detail' }, step.skipped && step.ok ? `skipped: ${step.detail || ''}` : (step.detail || (state === 'failed' ? 'failed' : ''))),
      h('span', { class: 'visually-hidden' }, ` (${state})`));
  }));
  const parts = [h('h3', {}, result.ok ? 'Connection works' : `Failed at ${result.failedStep}`), steps];
  if (result.ok) {
    const ssl = result.ssl || {};
    const cert = ssl.certificate;
    const privileges = result.privileges || {};
    parts.push(factsList([
      ['Server', result.serverVersion],
      ['User', `${result.user}${result.superuser ? ' (superuser)' : ''}`],
      ['Database', `${result.database}${result.standby ? ' (standby: read-only)' : ''}`],
      ['TLS', ssl.inUse ? `${ssl.protocol}, ${ssl.cipher}${ssl.verified ? ', certificate verified' : ', certificate not verified'}` : 'not in use'],
      ['Certificate', cert ? `${cert.subject}, issued by ${cert.issuer}, valid until ${String(cert.notAfter).slice(0, 10)} (${cert.daysLeft} days)` : null],
      ['Connections', result.connections ? `${result.connectionsAvailable} free of ${result.connections.max}` : null],
      ['Privileges', privileges.exists
        ? `schema ${privileges.schema}: ${privileges.usage ? 'usage' : 'no usage'}${privileges.create ? ', create' : ''}; ${privileges.tables} tables (select ${privileges.select}, insert ${privileges.insert}, update ${privileges.update}, delete ${privileges.delete})`
        : `schema ${privileges.schema} does not exist`],
    ]));
    if (result.warnings && result.warnings.length) {
      parts.push(h('div', { class: 'warnings' }, h('h4', {}, `Warnings (${result.warnings.length})`),
        h('ul', {}, result.warnings.map((w) => h('li', {}, w)))));
    }
  } else if (result.error) {
    parts.push(errorCard(result.error, { step: result.failedStep }));
  }
  return h('section', { class: ['test-report', result.ok ? 'ok' : 'failed'], id: uid('report'), dataset: { ok: String(result.ok) } }, parts);
}
