// Small DOM helpers: elements are built with h(), never from HTML strings, so no value from the
// service or the user is ever parsed as markup.

let sequence = 0;

/** A page-unique id with a readable prefix. */
export function uid(prefix) {
  sequence += 1;
  return `${prefix}-${sequence}`;
}

/**
 * h('button', {class: 'primary', type: 'button', onclick: fn, dataset: {x: 1}}, 'Run')
 * Attributes that are false, null or undefined are left out; true sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value') el.value = value;
    else if (name === 'checked' || name === 'selected') el[name] = Boolean(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function show(el, visible) {
  el.hidden = !visible;
}

/** JSON text re-indented without parsing its numbers (integers of any size stay exact). */
export function prettyJson(text) {
  let out = '';
  let indent = 0;
  let inString = false;
  const pad = () => '\n' + '  '.repeat(indent);
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === '\\') { out += text[i + 1] ?? ''; i += 1; } else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') { inString = true; out += c; } else if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      let j = i + 1;
      while (text[j] === ' ' || text[j] === '\n') j += 1;
      if (text[j] === close) { out += c + close; i = j; continue; }
      indent += 1; out += c + pad();
    } else if (c === '}' || c === ']') { indent -= 1; out += pad() + c; } else if (c === ',') out += ',' + pad();
    else if (c === ':') out += ': ';
    else if (c !== ' ' && c !== '\n' && c !== '\t' && c !== '\r') out += c;
  }
  return out;
}

/** JSON.parse that keeps integers too large for a double as their digits (a string). */
export function parseExact(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && Number.isInteger(value) && context?.source) {
      return context.source;
    }
    return value;
  });
}
