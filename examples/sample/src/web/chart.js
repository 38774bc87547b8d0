// SPDX-License-Identifier: MIT
// Copyright (c) 2023-2024 The Tidepool Authors

// Dashboard widget: fetches the latest summary and draws the level as a sparkline.

const REFRESH_MS = 5 * 60 * 1000;

export async function fetchSummary(station, { baseUrl = '/api' } = {}) {
  const res = await fetch(`${baseUrl}/stations/${encodeURIComponent(station)}/summary`);
  if (!res.ok) {
    throw new Error(`summary for ${station}: HTTP ${res.status}`);
  }
  return res.json();
}

export function sparkline(canvas, levels) {
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (levels.length < 2) return;
  const lo = Math.min(...levels);
  const hi = Math.max(...levels);
  const span = hi - lo || 1;
  ctx.beginPath();
  levels.forEach((v, i) => {
    const x = (i / (levels.length - 1)) * width;
    const y = height - ((v - lo) / span) * height;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

export function mount(el, station) {
  const canvas = el.querySelector('canvas');
  const label = el.querySelector('.level');
  async function refresh() {
    try {
      const summary = await fetchSummary(station);
      label.textContent = `${summary.latest_cm.toFixed(1)} cm`;
      sparkline(canvas, summary.levels);
    } catch (err) {
      // FIXME: show the error in the widget instead of only logging it.
      console.error(err);
    }
  }
  refresh();
  return setInterval(refresh, REFRESH_MS);
}
