// The Actions screen: the list by category, a form generated from the chosen action's input
// schema, its examples, the flow context, Run (or a batch) and the answer.

import { call, manifest } from './api.js';
import { fill, h } from './dom.js';
import { buildForm, FormError, Unrepresentable } from './forms.js';
import { answerView, errorCard } from './results.js';

const CATEGORY_ORDER = ['read', 'write', 'sql', 'metadata'];
const CATEGORY_TITLE = { read: 'Read', write: 'Write', sql: 'SQL', metadata: 'Metadata' };
const EMPTY_CONTEXT = '{\n  "trigger": {},\n  "steps": {}\n}';
const TABLES_LIST = 'table-names';

export function actionsScreen(root, app) {
  let listing = [];
  let current = null; // the manifest shown
  let single = null; // the form of one run
  let items = []; // batch: [{el, form}]
  let batch = false;

  const nav = h('nav', { class: 'side action-list', 'aria-label': 'Actions' });
  const picker = h('select', { id: 'action-select', 'aria-label': 'Action' });
  const title = h('h2', { id: 'action-title' });
  const badges = h('span', { class: 'badges' });
  const description = h('p', { class: 'description' });
  const examples = h('div', { class: 'examples', id: 'examples' });
  const modeSingle = h('input', { type: 'radio', name: 'run-mode', id: 'mode-single', value: 'single', checked: true });
  const modeBatch = h('input', { type: 'radio', name: 'run-mode', id: 'mode-batch', value: 'batch' });
  const batchMode = h('select', { id: 'batch-mode', 'aria-label': 'Batch mode', hidden: true },
    h('option', { value: 'independent' }, 'independent: each item on its own'),
    h('option', { value: 'transaction' }, 'transaction: all or nothing'),
    h('option', { value: 'single' }, 'single: one statement for all'));
  const formHost = h('div', { id: 'action-form' });
  const context = h('textarea', { id: 'context', class: 'mono', rows: 5, spellcheck: 'false', 'aria-describedby': 'context-help' });
  const contextHelp = h('p', { class: 'help', id: 'context-help' });
  const problem = h('p', { class: 'field-error', id: 'form-problem', role: 'alert', hidden: true });
  const runButton = h('button', { type: 'submit', class: 'primary', id: 'run' }, 'Run');
  const result = h('section', { class: 'result', id: 'result', 'aria-live': 'polite', 'aria-label': 'Result' },
    h('p', { class: 'note' }, 'Run the action to see its output here.'));
  const tables = h('datalist', { id: TABLES_LIST });

  const main = h('form', { class: 'action-main', novalidate: true, 'aria-labelledby': 'action-title' },
    h('label', { class: 'narrow-only picker' }, h('span', { class: 'label' }, 'Action'), picker),
    h('header', { class: 'action-head' }, title, badges),
    description,
    examples,
    h('fieldset', { class: 'run-mode' }, h('legend', { class: 'visually-hidden' }, 'Run once or as a batch'),
      h('label', {}, modeSingle, ' Run once'), h('label', {}, modeBatch, ' Batch of items'), batchMode),
    formHost,
    h('details', { class: 'context', open: true },
      h('summary', {}, 'Context (trigger, steps)'),
      h('label', { class: 'visually-hidden', for: 'context' }, 'Context JSON'),
      context, contextHelp),
    problem,
    h('div', { class: 'button-bar' }, runButton, h('span', { class: 'note' }, 'Ctrl+Enter runs from any field')),
    tables);
  fill(root, nav, main, result);

  context.value = EMPTY_CONTEXT;
  main.hidden = true; // until an action is chosen
  main.addEventListener('submit', (event) => { event.preventDefault(); run(); });
  main.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) { event.preventDefault(); run(); }
  });
  picker.addEventListener('change', () => app.go('actions', picker.value));
  for (const radio of [modeSingle, modeBatch]) radio.addEventListener('change', () => setBatch(modeBatch.checked));

  function say(text) {
    problem.textContent = text || '';
    problem.hidden = !text;
  }

  function grouped() {
    const groups = new Map();
    for (const action of listing) {
      if (!groups.has(action.category)) groups.set(action.category, []);
      groups.get(action.category).push(action);
    }
    const order = (c) => (CATEGORY_ORDER.includes(c) ? CATEGORY_ORDER.indexOf(c) : 99);
    return [...groups.entries()].sort((a, b) => order(a[0]) - order(b[0]));
  }

  function renderList() {
    const groups = grouped();
    fill(nav, h('h2', {}, 'Actions'), groups.map(([category, actions]) => h('section', { class: 'category' },
      h('h3', {}, CATEGORY_TITLE[category] || category),
      h('ul', {}, actions.map((a) => h('li', {},
        h('a', { href: `#/actions/${a.id}`, dataset: { action: a.id }, title: a.description || a.title },
          a.title, a.readOnly ? h('span', { class: 'ro', title: 'read-only' }, ' ·ro') : null)))))));
    fill(picker, groups.map(([category, actions]) => h('optgroup', { label: CATEGORY_TITLE[category] || category },
      actions.map((a) => h('option', { value: a.id }, a.title)))));
  }

  /** run_transaction: each step is an action chosen from the list, with that action's own form. */
  function custom(schema, ctx) {
    if (!current || current.id !== 'run_transaction' || !/^steps\.\d+$/.test(ctx.path)) return null;
    return stepWidget(ctx);
  }

  function stepWidget(ctx) {
    const idInput = h('input', { type: 'text', class: 'mono', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. insert_order',
      'aria-label': `${ctx.label}: id (later steps read {{ steps.ID.… }})`, dataset: { path: `${ctx.path}.id` } });
    const choose = h('select', { id: ctx.id, 'aria-label': `${ctx.label}: action`, dataset: { path: `${ctx.path}.action` } },
      h('option', { value: '' }, 'choose an action…'),
      listing.filter((a) => a.id !== 'run_transaction').map((a) => h('option', { value: a.id }, a.title)));
    const inputs = h('div', { class: 'step-inputs' });
    let form = null;
    let pending;
    let token = 0;
    const render = async (actionId, value) => {
      token += 1;
      const mine = token;
      pending = value;
      form = null;
      fill(inputs);
      if (!actionId) return;
      const described = await manifest(actionId);
      if (mine !== token) return;
      form = buildForm(described.input, { tables: TABLES_LIST });
      try { form.set(value || {}); pending = undefined; } catch (exc) { if (!(exc instanceof Unrepresentable)) throw exc; }
      fill(inputs, form.el);
    };
    choose.addEventListener('change', () => render(choose.value));
    return {
      el: h('div', { class: 'tx-step' },
        h('div', { class: 'step-head' },
          h('label', {}, h('span', { class: 'label' }, 'Step id'), idInput),
          h('label', {}, h('span', { class: 'label' }, 'Action'), choose)),
        inputs),
      get() {
        const out = {};
        if (idInput.value.trim()) out.id = idInput.value.trim();
        if (choose.value) out.action = choose.value;
        const given = pending !== undefined ? pending : (form ? form.get() : undefined);
        if (given && Object.keys(given).length) out.inputs = given;
        return out;
      },
      set(value) {
        const step = value || {};
        if (typeof step !== 'object' || Array.isArray(step)) throw new Unrepresentable();
        if (Object.keys(step).some((k) => !['id', 'action', 'inputs'].includes(k))) throw new Unrepresentable();
        if (step.action && !listing.some((a) => a.id === step.action)) throw new Unrepresentable();
        idInput.value = step.id || '';
        choose.value = step.action || '';
        render(step.action, step.inputs);
      },
    };
  }

  function newForm(value) {
    const form = buildForm(current.input, { custom, tables: TABLES_LIST });
    if (value) form.set(value);
    return form;
  }

  function batchItem(value) {
    const form = newForm(value);
    const remove = h('button', { type: 'button', class: 'remove' }, '×');
    const legend = h('legend', {});
    const el = h('fieldset', { class: 'batch-item' }, legend, h('div', { class: 'item-tools' }, remove), form.el);
    const item = { el, form, legend, remove };
    remove.addEventListener('click', () => {
      if (items.length === 1) return;
      items.splice(items.indexOf(item), 1);
      el.remove();
      numberItems();
    });
    return item;
  }

  function numberItems() {
    items.forEach((item, i) => {
      item.legend.textContent = `Item ${i + 1}`;
      item.el.dataset.index = String(i);
      item.remove.setAttribute('aria-label', `Remove item ${i + 1}`);
      item.remove.disabled = items.length === 1;
    });
  }

  function safeGet(form) {
    try { return form.get(); } catch { return undefined; }
  }

  function renderForm() {
    if (!batch) {
      fill(formHost, single.el);
      return;
    }
    const add = h('button', { type: 'button', class: 'add', id: 'add-item' }, '+ Add item (a copy of the last)');
    add.addEventListener('click', () => {
      const item = batchItem(safeGet(items[items.length - 1].form));
      items.push(item);
      add.before(item.el);
      numberItems();
      const first = item.el.querySelector('input, textarea, select');
      if (first) first.focus();
    });
    fill(formHost, items.map((i) => i.el), add);
    numberItems();
  }

  function setBatch(on) {
    if (on === batch) return;
    batch = on;
    modeBatch.checked = on;
    modeSingle.checked = !on;
    batchMode.hidden = !on;
    if (on) {
      items = [batchItem(safeGet(single))];
    } else {
      single = newForm(items.length ? safeGet(items[0].form) : undefined);
      items = [];
    }
    renderForm();
  }

  async function select(actionId) {
    const known = listing.find((a) => a.id === actionId) || listing.find((a) => a.id === 'query_rows') || listing[0];
    if (!known) return;
    for (const link of nav.querySelectorAll('a[data-action]')) {
      if (link.dataset.action === known.id) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    picker.value = known.id;
    if (current && current.id === known.id) return;
    current = await manifest(known.id);
    main.hidden = false;
    title.textContent = current.title;
    fill(badges,
      h('span', { class: 'badge cat' }, CATEGORY_TITLE[current.category] || current.category),
      current.readOnly ? h('span', { class: 'badge ro' }, 'read-only') : h('span', { class: 'badge rw' }, 'writes'));
    description.textContent = current.description || '';
    const list = current.examples || [];
    fill(examples, list.length ? [h('span', { class: 'label' }, 'Examples'),
      list.map((example, i) => h('button', { type: 'button', class: 'example', dataset: { example: String(i) },
        onclick: () => useExample(example) }, example.title || `Example ${i + 1}`))] : null);
    batch = false;
    modeSingle.checked = true;
    batchMode.hidden = true;
    items = [];
    single = newForm();
    renderForm();
    context.value = EMPTY_CONTEXT;
    const variables = (current.templateVariables || []).map((v) => `{{ ${v} }}`).join(', ');
    contextHelp.textContent = `The flow's data that {{ templates }} read${variables ? ` (${variables})` : ''}: ` +
      'the trigger payload and earlier steps\' outputs, e.g. {"trigger": {"email": "a@b.c"}}.';
    say('');
    fill(result, h('p', { class: 'note' }, 'Run the action to see its output here.'));
  }

  function useExample(example) {
    setBatch(false);
    single = newForm();
    single.set(example.input || {});
    renderForm();
    context.value = example.context ? JSON.stringify(example.context, null, 2) : EMPTY_CONTEXT;
    say('');
    runButton.focus();
  }

  function readContext() {
    const text = context.value.trim();
    if (!text) return undefined;
    let value;
    try { value = JSON.parse(text); } catch (exc) { throw new FormError('context', `not valid JSON (${exc.message})`); }
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new FormError('context', 'must be a JSON object');
    return value;
  }

  async function run() {
    if (!current) return;
    const connectionId = app.connection();
    if (!connectionId) {
      say('Choose a connection at the top of the page first, or save one under Connections.');
      return;
    }
    let body;
    let path;
    try {
      const flow = readContext();
      if (batch) {
        path = `v1/actions/${current.id}:batch`;
        body = { connectionId, mode: batchMode.value, items: items.map((item) => ({ inputs: item.form.get() })) };
      } else {
        path = `v1/actions/${current.id}:run`;
        body = { connectionId, inputs: single.get() };
      }
      if (flow) body.context = flow;
    } catch (exc) {
      if (exc instanceof FormError) { say(exc.message); return; }
      throw exc;
    }
    say('');
    runButton.disabled = true;
    fill(result, h('p', { class: 'note' }, `Running ${current.title}…`));
    const answer = await call('POST', path, body);
    runButton.disabled = false;
    fill(result, answerView(answer));
  }

  async function loadTables(connectionId) {
    fill(tables);
    if (!connectionId) return;
    const answer = await call('POST', 'v1/actions/list_tables:run', { connectionId, inputs: {} });
    if (answer.ok && Array.isArray(answer.data.tables)) {
      fill(tables, answer.data.tables.map((t) => h('option', { value: t.name })));
    }
  }

  async function init() {
    const answer = await call('GET', 'v1/actions');
    if (!answer.ok) {
      fill(result, errorCard(answer.data.error));
      return;
    }
    listing = answer.data;
    renderList();
  }

  return { init, select, loadTables };
}
