// Building the page. Every piece of text, whoever wrote it (a function's name, a log line, a
// payload, an error), goes in as a text node: nothing here ever parses a string as HTML.

const SVG = 'http://www.w3.org/2000/svg';

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) {
      if (typeof value !== 'function') throw new Error(`handler ${name} must be a function`);
      el.addEventListener(name.slice(2), value);
    } else if (name === 'style' || name === 'srcdoc') {
      throw new Error(`attribute ${name} is not allowed`);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value') {
      el.value = value;
    } else if (name === 'checked' || name === 'disabled' || name === 'hidden') {
      el[name] = Boolean(value);
    } else if (name === 'href' && !/^(#|\/|https?:)/.test(String(value))) {
      throw new Error('only local or http links');
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('a', {href: '#/x'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element, likewise. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttributes(el, attrs);
  appendAll(el, children);
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

/** A link to a page of the dashboard. */
export function link(path, text, attrs = {}) {
  return h('a', { ...attrs, href: '#' + path }, text);
}

export function functionPath(name) {
  return '/functions/' + encodeURIComponent(name);
}

/** A duration in ms, readably. */
export function ms(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return `${Math.round(value * 1000)} µs`;
  if (value < 1000) return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
}

/** A count. */
export function count(value) {
  if (value === null || value === undefined) return '–';
  return Number(value).toLocaleString('en');
}

/** Seconds, as "3 h 5 min" or "12 s". */
export function ago(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A state badge: ready, starting, idle, backing off, failed. */
export function stateBadge(state) {
  return h('span', { class: `state state-${state}`, dataset: { field: 'state' } },
    String(state).replace('_', ' '));
}

/** JSON, indented, or the text as it is when it is not JSON. */
export function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Keeps focus on the element with the same data-focus key across a re-render. */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focus : null;
  render();
  if (key) {
    const again = [...container.querySelectorAll('[data-focus]')].find((e) => e.dataset.focus === key);
    if (again) again.focus();
  }
}
