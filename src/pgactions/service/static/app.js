// The playground: routes (#/actions/<id>, #/connections), the connection in use, the API key dialog.

import { apiKey, call, onKeyNeeded, setApiKey } from './api.js';
import { actionsScreen } from './actions.js';
import { connectionsScreen } from './connections.js';
import { fill, h } from './dom.js';

const CONNECTION_ITEM = 'pgactions.connection';
const connectionSelect = document.getElementById('connection-select');
const keyButton = document.getElementById('key-button');
const keyDialog = document.getElementById('key-dialog');
const keyInput = document.getElementById('api-key');
const keyReason = document.getElementById('key-reason');
const screens = {
  actions: document.getElementById('screen-actions'),
  connections: document.getElementById('screen-connections'),
};
let lastAction = 'query_rows';
let prompting = null;

const app = {
  connection: () => sessionStorage.getItem(CONNECTION_ITEM),
  useConnection(id) {
    if (id) sessionStorage.setItem(CONNECTION_ITEM, id);
    else sessionStorage.removeItem(CONNECTION_ITEM);
    connectionSelect.value = id || '';
    actions.loadTables(id);
  },
  async refreshConnections() {
    const answer = await call('GET', 'v1/connections');
    const ids = answer.ok && Array.isArray(answer.data) ? answer.data.map((c) => c.id) : [];
    fill(connectionSelect, h('option', { value: '' }, ids.length ? '(choose one)' : '(none saved)'),
      ids.map((id) => h('option', { value: id }, id)));
    const chosen = app.connection();
    app.useConnection(chosen && ids.includes(chosen) ? chosen : (ids.length === 1 ? ids[0] : null));
    return ids;
  },
  go(screen, actionId) {
    const target = screen === 'connections' ? '#/connections' : `#/actions/${actionId || lastAction}`;
    if (location.hash === target) route();
    else location.hash = target;
  },
};

const actions = actionsScreen(screens.actions, app);
const connections = connectionsScreen(screens.connections, app);

/** Ask for an API key (one dialog at a time); resolves to the key, or null when cancelled. */
let declined = false; // Cancel: stop asking until the API key button is used

function askForKey(error, asked = false) {
  if (prompting) return prompting;
  if (declined && !asked) return Promise.resolve(null);
  keyReason.textContent = error && error.message ? error.message : 'This service needs an API key.';
  keyInput.value = '';
  prompting = new Promise((resolve) => {
    keyDialog.addEventListener('close', () => {
      prompting = null;
      const key = keyDialog.returnValue === 'ok' && keyInput.value.trim() ? keyInput.value.trim() : null;
      declined = !key;
      resolve(key);
    }, { once: true });
  });
  keyDialog.returnValue = ''; // Escape closes without setting it
  keyDialog.showModal();
  keyInput.focus();
  return prompting;
}

function showKeyState() {
  keyButton.textContent = apiKey() ? 'API key ✓' : 'API key';
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const screen = parts[0] === 'connections' ? 'connections' : 'actions';
  for (const [name, el] of Object.entries(screens)) el.hidden = name !== screen;
  for (const tab of document.querySelectorAll('[data-tab]')) {
    if (tab.dataset.tab === screen) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  if (screen === 'actions') {
    lastAction = parts[1] || lastAction;
    document.querySelector('[data-tab="actions"]').setAttribute('href', `#/actions/${lastAction}`);
    return actions.select(lastAction);
  }
  return undefined;
}

async function start() {
  onKeyNeeded(askForKey);
  showKeyState();
  document.addEventListener('pga:key', showKeyState);
  keyButton.addEventListener('click', async () => {
    const key = await askForKey({ message: 'Enter the API key to use (pgactions keys create prints one).' }, true);
    if (key) { setApiKey(key); await load(); }
  });
  document.getElementById('key-forget').addEventListener('click', () => {
    setApiKey(null);
    keyDialog.close('cancel');
  });
  connectionSelect.addEventListener('change', () => app.useConnection(connectionSelect.value || null));
  window.addEventListener('hashchange', route);
  await load();
}

async function load() {
  await app.refreshConnections();
  await Promise.all([actions.init(), connections.init()]);
  await route();
  document.body.dataset.ready = 'true';
}

start().catch((exc) => {
  document.body.dataset.ready = 'error';
  fill(document.getElementById('fatal'), `The playground could not start: ${exc.message}`);
  document.getElementById('fatal').hidden = false;
});
