// Small SVG charts of a function's last 15 minutes: one bar or point per 10 s slot.

import { svg, h, ms } from './dom.js';

const W = 360;
const H = 120;
const PAD = { left: 44, right: 6, top: 8, bottom: 18 };

function niceMax(value) {
  if (!(value > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= value);
}

function frame(title, max, format, points, summary) {
  const inner = { w: W - PAD.left - PAD.right, h: H - PAD.top - PAD.bottom };
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `${title}: ${summary}` },
    svg('line', { x1: PAD.left, y1: PAD.top + inner.h, x2: W - PAD.right, y2: PAD.top + inner.h, class: 'axis' }),
    svg('line', { x1: PAD.left, y1: PAD.top, x2: W - PAD.right, y2: PAD.top, class: 'grid-line' }),
    svg('text', { x: PAD.left - 4, y: PAD.top + 4, class: 'tick', 'text-anchor': 'end' }, format(max)),
    svg('text', { x: PAD.left - 4, y: PAD.top + inner.h, class: 'tick', 'text-anchor': 'end' }, '0'),
    svg('text', { x: PAD.left, y: H - 4, class: 'tick' }, `−${Math.round(points.length * 10 / 60)} min`),
    svg('text', { x: W - PAD.right, y: H - 4, class: 'tick', 'text-anchor': 'end' }, 'now'));
  return { root, inner };
}

function when(point) {
  return new Date(point.time * 1000).toLocaleTimeString();
}

/** Bars of `value(point)` per slot. */
export function bars(title, points, value, className) {
  const values = points.map(value);
  const total = values.reduce((a, b) => a + b, 0);
  const max = niceMax(Math.max(...values, 0));
  const { root, inner } = frame(title, max, String, points, `${total} in the last 15 minutes`);
  const step = inner.w / Math.max(points.length, 1);
  points.forEach((point, i) => {
    const v = values[i];
    if (!v) return;
    const height = (v / max) * inner.h;
    root.append(svg('rect', {
      x: PAD.left + i * step + 0.5, y: PAD.top + inner.h - height,
      width: Math.max(step - 1, 1), height, class: className,
    }, svg('title', {}, `${when(point)}: ${v}`)));
  });
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, title, ' ', h('span', { class: 'muted' }, `(${total})`)), root);
}

/** Lines of p50 and p99 latency per slot (gaps where there was nothing). */
export function latency(title, points) {
  const all = points.flatMap((p) => [p.p50_ms, p.p99_ms]).filter((v) => v !== null && v !== undefined);
  const max = niceMax(Math.max(...all, 0));
  const { root, inner } = frame(title, max, ms, points, all.length ? `p99 up to ${ms(Math.max(...all))}` : 'no requests');
  const step = inner.w / Math.max(points.length, 1);
  for (const [key, className] of [['p50_ms', 'line-p50'], ['p99_ms', 'line-p99']]) {
    let d = '';
    let pen = false;
    points.forEach((point, i) => {
      const v = point[key];
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      const x = PAD.left + (i + 0.5) * step;
      const y = PAD.top + inner.h - (v / max) * inner.h;
      d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
      pen = true;
      root.append(svg('circle', { cx: x, cy: y, r: 1.6, class: className },
        svg('title', {}, `${when(point)}: ${key.replace('_ms', '')} ${ms(v)}`)));
    });
    if (d) root.append(svg('path', { d, class: className, fill: 'none' }));
  }
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, title, ' ', h('span', { class: 'legend-p50' }, 'p50'), ' ', h('span', { class: 'legend-p99' }, 'p99')), root);
}
