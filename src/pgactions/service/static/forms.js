// Forms generated from JSON Schema (an action's input schema, the connection profile schema).
//
// Every widget is {el, get(), set(value), tools?, composite?}: get() returns the value to send, or
// undefined when the field is left empty (the service then applies its default); it throws a
// FormError for a value that cannot be sent. set(value) throws Unrepresentable when the value does
// not fit the structured editor (e.g. a where group); the field then switches to its JSON editor.
// `{{ template }}` text is accepted in every field: typed fields (numbers, booleans, enums) take it
// through their text input or their {{ }} toggle.

import { h, uid } from './dom.js';

export class FormError extends Error {
  constructor(path, message) {
    super(`${path || 'input'}: ${message}`);
    this.path = path;
  }
}

export class Unrepresentable extends Error {}

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const hasTemplate = (text) => typeof text === 'string' && text.includes('{{');

function typesOf(schema) {
  if (Array.isArray(schema.type)) return schema.type;
  return schema.type ? [schema.type] : [];
}

function changed(el) {
  el.dispatchEvent(new Event('input', { bubbles: true }));
}

/** The form for an object schema; opts: {groups?: [{title, fields, open?}], custom?(schema, ctx), tables?}. */
export function buildForm(schema, opts = {}) {
  const form = objectFields(schema, opts, '', true);
  return {
    el: form.el,
    widgets: form.widgets,
    get: () => form.get() || {},
    set: (value) => form.set(value || {}),
  };
}

function objectFields(schema, opts, path, root = false) {
  const required = new Set(schema.required || []);
  const widgets = new Map();
  const fields = new Map();
  for (const [name, sub] of Object.entries(schema.properties || {})) {
    if (!root && (name === 'and' || name === 'or')) continue; // condition groups: edited as JSON
    const made = field(name, sub, opts, path ? `${path}.${name}` : name, required.has(name));
    widgets.set(name, made);
    fields.set(name, made.el);
  }
  let el;
  if (root && opts.groups) {
    const placed = new Set();
    const sections = opts.groups.map((group) => {
      const members = group.fields === '*' ? [...fields.keys()].filter((n) => !placed.has(n))
        : group.fields.filter((n) => fields.has(n));
      members.forEach((n) => placed.add(n));
      if (!members.length) return null;
      const body = h('div', { class: 'fields' }, members.map((n) => fields.get(n)));
      if (group.collapsed) {
        return h('details', { class: 'group', dataset: { group: group.title } }, h('summary', {}, group.title), body);
      }
      return h('fieldset', { class: 'group', dataset: { group: group.title } }, h('legend', {}, group.title), body);
    });
    el = h('div', { class: 'form' }, sections);
  } else {
    el = h('div', { class: root ? 'form fields' : 'fields' }, [...fields.values()]);
  }
  return {
    el,
    widgets,
    get() {
      const out = {};
      for (const [name, widget] of widgets) {
        const value = widget.get();
        if (value !== undefined) out[name] = value;
      }
      return Object.keys(out).length ? out : undefined;
    },
    set(value) {
      if (value === undefined || value === null) value = {};
      if (typeof value !== 'object' || Array.isArray(value)) throw new Unrepresentable();
      for (const name of Object.keys(value)) if (!widgets.has(name)) throw new Unrepresentable();
      for (const [name, widget] of widgets) widget.set(value[name]);
    },
  };
}

function field(name, schema, opts, path, required) {
  const id = uid('f');
  const label = schema.title || name;
  const ctx = { name, path, opts, id, label, required };
  const widget = control(schema, ctx);
  const helpId = schema.description ? `${id}-help` : null;
  const mark = required ? h('span', { class: 'req', title: 'required' }, ' *') : null;
  const head = widget.composite
    ? h('span', { class: 'label', id: `${id}-label` }, label, mark)
    : h('label', { class: 'label', for: id }, label, mark);
  const el = h('div', { class: ['field', widget.composite && 'composite', widget.wide && 'wide'], dataset: { path } },
    h('div', { class: 'field-head' }, head, h('span', { class: 'tools' }, widget.tools || [])),
    widget.el,
    schema.description ? h('p', { class: 'help', id: helpId }, schema.description) : null);
  if (widget.composite) {
    widget.el.setAttribute('role', 'group');
    widget.el.setAttribute('aria-labelledby', `${id}-label`);
  }
  const input = widget.el.querySelector(`#${id}`) || (widget.el.id === id ? widget.el : null);
  if (input && helpId) input.setAttribute('aria-describedby', helpId);
  return { el, get: () => widget.get(), set: (v) => widget.set(v), widget };
}

function control(schema, ctx) {
  const custom = ctx.opts.custom && ctx.opts.custom(schema, ctx);
  if (custom) return custom;
  const types = typesOf(schema);
  if (schema.enum) return templatable(enumSelect(schema, ctx), ctx);
  if (types.length === 1) {
    switch (types[0]) {
      case 'boolean': return templatable(checkbox(schema, ctx), ctx);
      case 'integer':
      case 'number': return numberInput(schema, ctx, types[0] === 'integer');
      case 'string': return stringInput(schema, ctx);
      case 'array': return withJson(arrayEditor(schema, ctx), ctx);
      case 'object': return withJson(schema.properties ? nested(schema, ctx) : keyValue(schema, ctx), ctx);
      default: break;
    }
  }
  if (!types.length) return valueCell(ctx);
  return jsonEditor(ctx);
}

// ---- scalars ---------------------------------------------------------------------------------

function enumSelect(schema, ctx) {
  const fallback = schema.default !== undefined ? `(default: ${schema.default})` : '(not set)';
  const select = h('select', { id: ctx.id, dataset: { path: ctx.path } },
    h('option', { value: '' }, fallback),
    schema.enum.map((v) => h('option', { value: JSON.stringify(v) }, String(v))));
  return {
    el: select,
    get: () => (select.value === '' ? undefined : JSON.parse(select.value)),
    set(value) {
      if (value === undefined || value === null) { select.value = ''; return; }
      const wanted = JSON.stringify(value);
      if (![...select.options].some((o) => o.value === wanted)) throw new Unrepresentable();
      select.value = wanted;
    },
  };
}

function checkbox(schema, ctx) {
  const box = h('input', { type: 'checkbox', id: ctx.id, dataset: { path: ctx.path } });
  const unset = schema.default === false || (schema.default === undefined && !ctx.required);
  return {
    el: h('span', { class: 'check' }, box,
      h('span', { class: 'check-note' }, schema.default !== undefined ? `default: ${schema.default}` : '')),
    input: box,
    get: () => (box.checked ? true : (unset ? undefined : false)),
    set(value) {
      if (value !== undefined && value !== null && typeof value !== 'boolean') throw new Unrepresentable();
      box.checked = value === true;
    },
  };
}

/** A {{ }} toggle beside a typed control: the field then takes template text. */
function templatable(widget, ctx) {
  const text = h('input', { type: 'text', class: 'template-input mono', placeholder: '{{ trigger.value }}',
    'aria-label': `${ctx.label} as a {{ template }}`, dataset: { path: `${ctx.path}:template` }, hidden: true });
  const toggle = h('button', { type: 'button', class: 'tool', 'aria-pressed': 'false',
    title: `Fill ${ctx.label} from a {{ template }}`, 'aria-label': `${ctx.label}: use a {{ template }}` }, '{{ }}');
  let on = false;
  const body = h('span', { class: 'tpl-wrap' }, widget.el, text);
  const mode = (value) => {
    on = value;
    toggle.setAttribute('aria-pressed', String(on));
    widget.el.hidden = on;
    text.hidden = !on;
  };
  toggle.addEventListener('click', () => {
    mode(!on);
    (on ? text : (widget.input || widget.el)).focus();
    changed(body);
  });
  return {
    el: body,
    tools: [toggle],
    get: () => (on ? (text.value === '' ? undefined : text.value) : widget.get()),
    set(value) {
      if (hasTemplate(value)) { mode(true); text.value = value; } else { mode(false); text.value = ''; widget.set(value); }
    },
  };
}

function numberInput(schema, ctx, integer) {
  const input = h('input', { type: 'text', id: ctx.id, inputmode: integer ? 'numeric' : 'decimal',
    autocomplete: 'off', dataset: { path: ctx.path },
    placeholder: schema.default !== undefined ? `default: ${schema.default}` : (integer ? 'a whole number' : 'a number') });
  return {
    el: input,
    get() {
      const text = input.value.trim();
      if (text === '') return undefined;
      if (hasTemplate(text)) return text;
      if (!NUMBER.test(text)) throw new FormError(ctx.path, `${ctx.label}: "${text}" is not a number`);
      const value = Number(text);
      if (integer && !Number.isInteger(value)) throw new FormError(ctx.path, `${ctx.label} must be a whole number`);
      return value;
    },
    set(value) {
      if (value !== undefined && value !== null && typeof value !== 'number' && typeof value !== 'string') {
        throw new Unrepresentable();
      }
      input.value = value === undefined || value === null ? '' : String(value);
    },
  };
}

/** SQL: a monospace editor with the $n placeholders it uses shown below it. */
function sqlEditor(ctx) {
  const area = h('textarea', { id: ctx.id, class: 'mono sql', rows: 5, spellcheck: 'false', autocomplete: 'off',
    autocapitalize: 'off', dataset: { path: ctx.path }, placeholder: 'SELECT … WHERE id = $1' });
  const hint = h('p', { class: 'sql-hint', 'aria-live': 'polite' });
  const update = () => {
    const found = new Set();
    const code = area.value.replace(/'(?:[^']|'')*'/g, "''").replace(/--[^\n]*/g, '');
    for (const m of code.matchAll(/\$(\d+)/g)) found.add(Number(m[1]));
    const numbers = [...found].sort((a, b) => a - b);
    const templates = hasTemplate(area.value) ? ' Each {{ template }} in the SQL is bound as a parameter too, never pasted in.' : '';
    hint.textContent = numbers.length
      ? `Uses ${numbers.map((n) => `$${n}`).join(', ')}: Parameters ${numbers.map((n) => `#${n}`).join(', ')} below, in order.${templates}`
      : `Values go in Parameters as $1, $2 …, never into the SQL text.${templates}`;
    area.dataset.placeholders = String(numbers.length ? numbers[numbers.length - 1] : 0);
  };
  area.addEventListener('input', update);
  update();
  return {
    el: h('div', { class: 'sql-wrap' }, area, hint),
    get: () => (area.value === '' ? undefined : area.value),
    set(value) {
      if (value !== undefined && value !== null && typeof value !== 'string') throw new Unrepresentable();
      area.value = value ?? '';
      update();
    },
  };
}

function stringInput(schema, ctx) {
  if (schema['x-widget'] === 'sql') return sqlEditor(ctx);
  let input;
  if (schema['x-multiline']) {
    input = h('textarea', { id: ctx.id, class: 'mono', rows: 4, spellcheck: 'false', dataset: { path: ctx.path } });
  } else {
    const secret = schema['x-secret'] || schema.writeOnly;
    input = h('input', { type: secret ? 'password' : 'text', id: ctx.id, dataset: { path: ctx.path },
      autocomplete: secret ? 'new-password' : 'off', spellcheck: 'false',
      placeholder: schema.default !== undefined ? `default: ${schema.default}` : '' });
    if (schema['x-options'] === 'tables' && ctx.opts.tables) input.setAttribute('list', ctx.opts.tables);
  }
  return {
    el: input,
    get: () => (input.value === '' ? undefined : input.value),
    set(value) {
      if (value !== undefined && value !== null && typeof value !== 'string') throw new Unrepresentable();
      input.value = value ?? '';
    },
  };
}

/** A value of any JSON type: the text and a type picker (text, number, true/false, null, JSON). */
export function valueCell(ctx, extra = {}) {
  const input = h('input', { type: 'text', id: ctx.id, class: 'value-input', autocomplete: 'off', spellcheck: 'false',
    dataset: { path: ctx.path }, 'aria-label': extra.ariaLabel || null, placeholder: extra.placeholder || 'value or {{ template }}' });
  const kind = h('select', { class: 'value-kind', 'aria-label': `${extra.ariaLabel || ctx.label} type`,
    dataset: { path: `${ctx.path}:type` } },
  ['text', 'number', 'boolean', 'null', 'json'].map((k) => h('option', { value: k }, k === 'json' ? 'JSON' : k)));
  kind.addEventListener('change', () => { input.disabled = kind.value === 'null'; });
  return {
    el: h('span', { class: 'value-cell' }, input, kind),
    wide: true,
    get() {
      const text = input.value;
      switch (kind.value) {
        case 'null': return null;
        case 'number':
          if (hasTemplate(text)) return text;
          if (!NUMBER.test(text.trim())) throw new FormError(ctx.path, `"${text}" is not a number`);
          return Number(text.trim());
        case 'boolean':
          if (hasTemplate(text)) return text;
          if (!['true', 'false'].includes(text.trim())) throw new FormError(ctx.path, `"${text}" is not true or false`);
          return text.trim() === 'true';
        case 'json':
          try { return JSON.parse(text); } catch { throw new FormError(ctx.path, `"${text}" is not valid JSON`); }
        default:
          return text === '' ? undefined : text;
      }
    },
    set(value) {
      let k = 'text';
      let text = '';
      if (value === null) k = 'null';
      else if (typeof value === 'number') { k = 'number'; text = String(value); } else if (typeof value === 'boolean') { k = 'boolean'; text = String(value); } else if (typeof value === 'string') text = value;
      else if (value !== undefined) { k = 'json'; text = JSON.stringify(value); }
      kind.value = k;
      input.value = text;
      input.disabled = k === 'null';
    },
  };
}

function jsonEditor(ctx) {
  const area = h('textarea', { id: ctx.id, class: 'mono', rows: 3, spellcheck: 'false', dataset: { path: ctx.path },
    placeholder: 'JSON, e.g. {"name": "value"} or ["a", 1]' });
  return {
    el: area,
    get() {
      const text = area.value.trim();
      if (!text) return undefined;
      try { return JSON.parse(text); } catch {
        if (hasTemplate(text)) return text;
        throw new FormError(ctx.path, `${ctx.label} is not valid JSON`);
      }
    },
    set(value) { area.value = value === undefined ? '' : JSON.stringify(value, null, 2); },
  };
}

// ---- arrays and objects ------------------------------------------------------------------------

/** A structured editor with a JSON switch (for values it cannot show, and for pasting). */
function withJson(widget, ctx) {
  const area = h('textarea', { class: 'mono json-input', rows: 6, spellcheck: 'false', hidden: true,
    'aria-label': `${ctx.label} as JSON`, dataset: { path: `${ctx.path}:json` } });
  const note = h('p', { class: 'field-error', role: 'status', hidden: true });
  const toggle = h('button', { type: 'button', class: 'tool', 'aria-pressed': 'false',
    title: `Edit ${ctx.label} as JSON`, 'aria-label': `${ctx.label}: edit as JSON` }, 'JSON');
  let json = false;
  const mode = (on) => {
    json = on;
    toggle.setAttribute('aria-pressed', String(on));
    widget.el.hidden = on;
    area.hidden = !on;
    note.hidden = true;
  };
  const say = (text) => { note.textContent = text; note.hidden = false; };
  toggle.addEventListener('click', () => {
    if (!json) {
      let value;
      try { value = widget.get(); } catch { value = undefined; }
      area.value = value === undefined ? '' : JSON.stringify(value, null, 2);
      mode(true);
      area.focus();
      return;
    }
    let value;
    try { value = area.value.trim() ? JSON.parse(area.value) : undefined; } catch { say('This is not valid JSON yet.'); return; }
    try { widget.set(value); mode(false); } catch (exc) {
      if (!(exc instanceof Unrepresentable)) throw exc;
      say('This value can only be edited as JSON (e.g. an and/or group).');
    }
  });
  return {
    el: h('div', { class: 'json-wrap' }, widget.el, area, note),
    composite: true,
    tools: [...(widget.tools || []), toggle],
    get() {
      if (!json) return widget.get();
      const text = area.value.trim();
      if (!text) return undefined;
      try { return JSON.parse(text); } catch { throw new FormError(ctx.path, `${ctx.label} is not valid JSON`); }
    },
    set(value) {
      try {
        widget.set(value);
        mode(false);
      } catch (exc) {
        if (!(exc instanceof Unrepresentable)) throw exc;
        area.value = JSON.stringify(value, null, 2);
        mode(true);
      }
    },
  };
}

function nested(schema, ctx) {
  const inner = objectFields(schema, ctx.opts, ctx.path);
  return { el: h('div', { class: 'nested' }, inner.el), get: () => inner.get(), set: (v) => inner.set(v) };
}

function singular(ctx) {
  const words = { parameters: 'parameter', where: 'condition', orderBy: 'sort', rows: 'row', steps: 'step',
    select: 'column', conflictColumns: 'column', updateColumns: 'column', argumentTypes: 'type', kinds: 'kind' };
  return words[ctx.name] || 'item';
}

/** The editor of one array item, by the items schema. */
function itemWidget(items, ctx) {
  const custom = ctx.opts.custom && ctx.opts.custom(items, ctx);
  if (custom) return custom;
  const types = typesOf(items);
  if (items.enum) return enumSelect(items, ctx);
  if (types[0] === 'object' && items.properties) {
    const inner = objectFields(items, ctx.opts, ctx.path);
    const compact = Object.keys(items.properties).filter((n) => n !== 'and' && n !== 'or').length <= 3;
    return { el: h('div', { class: ['item-object', compact && 'compact'] }, inner.el), get: () => inner.get(), set: (v) => inner.set(v) };
  }
  if (types[0] === 'object') return keyValue(items, ctx);
  if (types[0] === 'string') return stringInput(items, ctx);
  if (types[0] === 'integer' || types[0] === 'number') return numberInput(items, ctx, types[0] === 'integer');
  return valueCell(ctx, { ariaLabel: ctx.label });
}

function arrayEditor(schema, ctx) {
  const items = schema.items || {};
  const params = ctx.name === 'parameters';
  const rows = [];
  const list = h('ol', { class: 'rows' });
  const noun = singular(ctx);
  const add = h('button', { type: 'button', class: 'add', dataset: { add: ctx.path } }, `+ Add ${noun}`);
  const el = h('div', { class: 'array', dataset: { array: ctx.path } }, list, add);
  const renumber = () => rows.forEach((row, i) => {
    row.marker.textContent = params ? `$${i + 1}` : `${i + 1}`;
    row.remove.setAttribute('aria-label', `Remove ${noun} ${params ? `$${i + 1}` : i + 1}`);
  });
  const push = (value) => {
    const index = rows.length;
    const itemCtx = { ...ctx, id: uid('f'), path: `${ctx.path}.${index}`, label: `${ctx.label} ${index + 1}` };
    const widget = itemWidget(items, itemCtx);
    const marker = h('span', { class: 'row-marker mono' });
    const remove = h('button', { type: 'button', class: 'remove' }, '×');
    const li = h('li', { class: 'row' }, marker, widget.el, remove);
    const row = { li, widget, marker, remove };
    remove.addEventListener('click', () => {
      rows.splice(rows.indexOf(row), 1);
      li.remove();
      renumber();
      changed(el);
      add.focus();
    });
    rows.push(row);
    list.append(li);
    if (value !== undefined) widget.set(value);
    renumber();
    return row;
  };
  add.addEventListener('click', () => {
    const row = push();
    const first = row.li.querySelector('input, select, textarea');
    if (first) first.focus();
    changed(el);
  });
  const scalar = !(typesOf(items)[0] === 'object');
  return {
    el,
    composite: true,
    get() {
      if (!rows.length) return undefined;
      return rows.map((row) => {
        const value = row.widget.get();
        return value === undefined ? (scalar ? '' : {}) : value;
      });
    },
    set(value) {
      if (value !== undefined && value !== null && !Array.isArray(value)) throw new Unrepresentable();
      rows.splice(0).forEach((row) => row.li.remove());
      (value || []).forEach((item) => push(item));
    },
  };
}

/** An object of free keys (columns, set, key …): key/value rows. */
function keyValue(schema, ctx) {
  const rows = [];
  const list = h('ol', { class: 'rows kv' });
  const columns = ['columns', 'set', 'key'].includes(ctx.name) || ctx.name === 'rows';
  const noun = columns ? 'column' : (ctx.name === 'extraOptions' ? 'option' : 'field');
  const add = h('button', { type: 'button', class: 'add', dataset: { add: ctx.path } }, `+ Add ${noun}`);
  const el = h('div', { class: 'keyvalue', dataset: { object: ctx.path } }, list, add);
  const push = (key, value) => {
    const index = rows.length;
    const keyInput = h('input', { type: 'text', class: 'kv-key mono', autocomplete: 'off', spellcheck: 'false',
      placeholder: noun, 'aria-label': `${ctx.label}: ${noun} name ${index + 1}`, dataset: { path: `${ctx.path}.${index}:key` } });
    const cell = valueCell({ ...ctx, id: uid('f'), path: `${ctx.path}.${index}` },
      { ariaLabel: `${ctx.label}: value ${index + 1}` });
    const remove = h('button', { type: 'button', class: 'remove', 'aria-label': `Remove ${noun} ${index + 1}` }, '×');
    const li = h('li', { class: 'row kv-row' }, keyInput, cell.el, remove);
    const row = { li, keyInput, cell };
    remove.addEventListener('click', () => {
      rows.splice(rows.indexOf(row), 1);
      li.remove();
      changed(el);
      add.focus();
    });
    rows.push(row);
    list.append(li);
    keyInput.value = key ?? '';
    if (value !== undefined) cell.set(value);
    return row;
  };
  add.addEventListener('click', () => { push().keyInput.focus(); changed(el); });
  return {
    el,
    composite: true,
    get() {
      const out = {};
      for (const row of rows) {
        const key = row.keyInput.value.trim();
        const value = row.cell.get();
        if (!key) {
          if (value === undefined) continue;
          throw new FormError(ctx.path, `${ctx.label}: a value has no ${noun} name`);
        }
        if (Object.hasOwn(out, key)) throw new FormError(ctx.path, `${ctx.label}: ${key} is given twice`);
        out[key] = value === undefined ? '' : value;
      }
      return Object.keys(out).length ? out : undefined;
    },
    set(value) {
      if (value !== undefined && value !== null && (typeof value !== 'object' || Array.isArray(value))) throw new Unrepresentable();
      rows.splice(0).forEach((row) => row.li.remove());
      for (const [key, item] of Object.entries(value || {})) push(key, item);
    },
  };
}
