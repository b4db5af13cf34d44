// Small inline-SVG charts drawn here (no chart library). Each has a text alternative.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) if (c) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

function frame(width, height, label) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" });
}

// The top of the axis: four equal steps of 1, 2, 2.5 or 5 × 10^n (whole steps for counts).
function niceMax(value, whole = false) {
  const raw = Math.max(value, whole ? 4 : 1e-9) / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const steps = whole && power < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  for (const step of steps) if (step * power >= raw) return 4 * Math.max(whole ? 1 : 0, step * power);
  return 40 * power;
}

function axis(root, { left, top, width, height, max, format }) {
  for (let i = 0; i <= 4; i += 1) {
    const y = top + height - (height * i) / 4;
    root.append(svg("line", { x1: left, x2: left + width, y1: y, y2: y, stroke: "#e3e8ee" }));
    root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6776" }, format((max * i) / 4)));
  }
}

// Stacked bars per slot. series: [{key, label, color}]; slots: [{label, ...values}].
export function stackedBars(slots, series, { label, format = (v) => String(Math.round(v)) } = {}) {
  const width = 480;
  const height = 220;
  const [left, top, bottom] = [44, 10, 28];
  const plotW = width - left - 8;
  const plotH = height - top - bottom;
  const max = niceMax(Math.max(0, ...slots.map((s) => series.reduce((sum, x) => sum + (s[x.key] || 0), 0))), true);
  const root = frame(width, height, label);
  axis(root, { left, top, width: plotW, height: plotH, max, format });
  const band = plotW / Math.max(1, slots.length);
  slots.forEach((slot, i) => {
    let y = top + plotH;
    const x = left + i * band + band * 0.15;
    for (const s of series) {
      const value = slot[s.key] || 0;
      if (!value) continue;
      const h = (plotH * value) / max;
      y -= h;
      root.append(svg("rect", { x, y, width: band * 0.7, height: h, fill: s.color, rx: 2 }, svg("title", {}, `${slot.label}: ${value} ${s.label}`)));
    }
    const every = Math.ceil(slots.length / 8);
    if (i % every === 0) {
      root.append(svg("text", { x: x + band * 0.35, y: height - 8, "text-anchor": "middle", "font-size": 11, fill: "#5b6776" }, slot.label));
    }
  });
  return root;
}

// A filled line over slots: [{label, value}].
export function areaLine(slots, { label, color = "#1f5fbf", format = (v) => String(Math.round(v)) } = {}) {
  const width = 480;
  const height = 220;
  const [left, top, bottom] = [60, 10, 28];
  const plotW = width - left - 8;
  const plotH = height - top - bottom;
  const max = niceMax(Math.max(0, ...slots.map((s) => s.value)));
  const root = frame(width, height, label);
  axis(root, { left, top, width: plotW, height: plotH, max, format });
  const step = plotW / Math.max(1, slots.length - 1);
  const points = slots.map((s, i) => [left + i * step, top + plotH - (plotH * s.value) / max]);
  if (points.length) {
    const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    root.append(svg("path", { d: `${line} L${points[points.length - 1][0].toFixed(1)},${top + plotH} L${left},${top + plotH} Z`, fill: color, "fill-opacity": 0.15 }));
    root.append(svg("path", { d: line, fill: "none", stroke: color, "stroke-width": 2 }));
    points.forEach(([x, y], i) => {
      root.append(svg("circle", { cx: x, cy: y, r: 3, fill: color }, svg("title", {}, `${slots[i].label}: ${format(slots[i].value)}`)));
    });
  }
  const every = Math.ceil(slots.length / 8);
  slots.forEach((s, i) => {
    if (i % every === 0) root.append(svg("text", { x: left + i * step, y: height - 8, "text-anchor": "middle", "font-size": 11, fill: "#5b6776" }, s.label));
  });
  return root;
}

// A donut of parts: [{label, value, color}], the total in the middle.
export function donut(parts, { label, centre } = {}) {
  const size = 220;
  const r = 80;
  const c = size / 2;
  const total = parts.reduce((sum, p) => sum + p.value, 0);
  const root = frame(size, size, label);
  root.setAttribute("class", "donut");
  root.append(svg("circle", { cx: c, cy: c, r, fill: "none", stroke: "#e3e8ee", "stroke-width": 28 }));
  let angle = -Math.PI / 2;
  for (const p of parts) {
    if (!total || !p.value) continue;
    const sweep = (2 * Math.PI * p.value) / total;
    const end = angle + Math.min(sweep, 2 * Math.PI - 1e-4);
    const [x1, y1, x2, y2] = [c + r * Math.cos(angle), c + r * Math.sin(angle), c + r * Math.cos(end), c + r * Math.sin(end)];
    const large = end - angle > Math.PI ? 1 : 0;
    root.append(svg("path", { d: `M${x1},${y1} A${r},${r} 0 ${large} 1 ${x2},${y2}`, fill: "none", stroke: p.color, "stroke-width": 28 }, svg("title", {}, `${p.label}: ${p.value}`)));
    angle = end;
  }
  root.append(svg("text", { x: c, y: c + 8, "text-anchor": "middle", "font-size": 26, "font-weight": 700, fill: "#17202b" }, centre ?? String(total)));
  return root;
}

export function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    swatch.append(svgSwatch(s.color));
    item.append(swatch, s.label);
    box.append(item);
  }
  return box;
}

function svgSwatch(color) {
  const root = svg("svg", { viewBox: "0 0 10 10", width: 12, height: 12 });
  root.append(svg("rect", { width: 10, height: 10, rx: 2, fill: color }));
  return root;
}
