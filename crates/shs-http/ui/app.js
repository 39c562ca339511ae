// The dashboard: a router over the URL's hash (#/functions, #/functions/NAME,
// #/events, #/events/ID, #/dead-letters, #/topology), so that every page has a link that survives a reload. Each
// page module exports mount(main, params, ctx) and returns what stops it; a page follows live
// updates through ctx.follow, which keeps one stream open at a time.

import { apiKey, follow } from './api.js';
import { h, fill } from './dom.js';
import * as functions from './functions.js';
import * as fn from './function.js';
import * as deadLetters from './dead-letters.js';
import * as events from './events.js';
import * as event from './event.js';
import * as topology from './topology.js';

const ROUTES = [
  { pattern: /^\/functions\/?$/, nav: 'functions', page: functions },
  { pattern: /^\/functions\/([^/?]+)$/, nav: 'functions', page: fn },
  { pattern: /^\/dead-letters\/?$/, nav: 'dead-letters', page: deadLetters },
  { pattern: /^\/topology\/?$/, nav: 'topology', page: topology },
  { pattern: /^\/events\/?$/, nav: 'events', page: events },
  { pattern: /^\/events\/([^/?]+)$/, nav: 'events', page: event },
];

const main = document.getElementById('main');
const live = document.getElementById('live');
let stopPage = null;
let stopStream = null;

function setLive(state, message) {
  live.hidden = state === 'idle';
  live.dataset.state = state;
  live.textContent = message ? `${state}: ${message}` : state;
}

/** The route of the hash: its path, parameters and query. */
function parse(hash) {
  const text = hash.replace(/^#/, '') || '/functions';
  const [path, search = ''] = text.split('?');
  return { path, query: new URLSearchParams(search) };
}

function route() {
  const { path, query } = parse(location.hash);
  if (!location.hash) {
    history.replaceState(null, '', '#/functions');
  }
  if (stopPage) stopPage();
  if (stopStream) stopStream();
  stopPage = stopStream = null;
  setLive('idle');
  const match = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (match && a.dataset.nav === match.r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!match) {
    document.title = 'Not found · shs';
    fill(main, h('h1', {}, 'No such page'), h('p', {}, 'Nothing lives at ', h('code', {}, path), '. ',
      h('a', { href: '#/functions' }, 'See the functions.')));
    return;
  }
  const params = match.m.slice(1).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const ctx = {
    query,
    title(text) {
      document.title = `${text} · shs`;
    },
    /** Follows `topics` live; the page gets each event, and each status change. */
    follow(topics, onEvent, onStatus = () => {}) {
      if (stopStream) stopStream();
      stopStream = follow(topics, {
        onEvent,
        onStatus(state, message, status) {
          setLive(state, message);
          onStatus(state, message, status);
        },
      });
    },
  };
  fill(main);
  stopPage = match.r.page.mount(main, params, ctx) || null;
  main.focus({ preventScroll: true });
}

// Light and dark: the system's preference, unless the toggle chose.
const themeButton = document.getElementById('theme');
function effectiveTheme() {
  return localStorage.getItem('shs.theme')
    || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
}
function applyTheme() {
  const theme = effectiveTheme();
  document.documentElement.dataset.theme = theme;
  themeButton.textContent = theme === 'dark' ? 'Light theme' : 'Dark theme';
  themeButton.setAttribute('aria-pressed', String(theme === 'dark'));
}
themeButton.addEventListener('click', () => {
  localStorage.setItem('shs.theme', effectiveTheme() === 'dark' ? 'light' : 'dark');
  applyTheme();
});
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', applyTheme);
applyTheme();

// The key of this tab, if any, can be forgotten.
const forget = document.getElementById('forget-key');
function showForget() {
  forget.hidden = !apiKey.get();
}
forget.addEventListener('click', () => {
  apiKey.clear();
  route();
});
document.addEventListener('shs:key', showForget);
showForget();

// Keys: "/" to the page's filter, "g f" functions, "g e" events, "g d" dead letters, "g t"
// topology.
let pendingG = false;
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target instanceof HTMLElement && target.closest('input, textarea, select, dialog')) return;
  if (event.key === '/') {
    const filter = main.querySelector('[data-filter]');
    if (filter) {
      event.preventDefault();
      filter.focus();
    }
  } else if (pendingG && event.key === 'f') {
    location.hash = '#/functions';
  } else if (pendingG && event.key === 'e') {
    location.hash = '#/events';
  } else if (pendingG && event.key === 't') {
    location.hash = '#/topology';
  } else if (pendingG && event.key === 'd') {
    location.hash = '#/dead-letters';
  }
  pendingG = event.key === 'g';
});

window.addEventListener('hashchange', route);
route();
