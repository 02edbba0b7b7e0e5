// A per-day line chart drawn by uPlot, which is loaded (with its CSS) only when a chart is first
// shown, so it is not part of the initial JavaScript. The chart takes its container's width
// (a ResizeObserver) and the theme's colours (CSS variables, redrawn when the theme changes);
// the caption says in words what it shows, for people who cannot see the canvas.
import { useEffect, useRef, useState } from "preact/hooks";
import type uPlot from "uplot";

export interface Series {
  label: string;
  /** A CSS variable holding the line's colour, e.g. `--accent`. */
  color: string;
  values: number[];
}

let loading: Promise<typeof uPlot> | null = null;
function loadUPlot(): Promise<typeof uPlot> {
  loading ??= import("../lib/uplot").then((m) => m.default);
  return loading;
}

const HEIGHT = 220;
/** Tick steps for counts: no half sessions on the axis. */
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000];

export function Chart({
  title,
  caption,
  days,
  series,
  format,
  whole = false,
  testId,
}: {
  title: string;
  /** The chart in words. */
  caption: string;
  /** `YYYY-MM-DD` (UTC), one per value. */
  days: string[];
  series: Series[];
  /** How a value is written on the axis and in the legend. */
  format: (value: number) => string;
  /** The values are counts: ticks at whole numbers only. */
  whole?: boolean;
  testId: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    let plot: uPlot | null = null;
    let gone = false;
    let cleanup = () => {};
    const dark = matchMedia("(prefers-color-scheme: dark)");
    const draw = (U: typeof uPlot) => {
      plot?.destroy();
      const css = getComputedStyle(el);
      const v = (name: string) => css.getPropertyValue(name).trim();
      const axis = { stroke: v("--muted"), grid: { stroke: v("--line"), width: 1 }, ticks: { stroke: v("--line"), width: 1 } };
      const x = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
      plot = new U(
        {
          width: Math.max(200, el.clientWidth),
          height: HEIGHT,
          tzDate: (ts) => U.tzDate(new Date(ts * 1000), "Etc/UTC"),
          scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
          axes: [
            { ...axis },
            { ...axis, size: 64, values: (_u, ticks) => ticks.map(format), ...(whole ? { incrs: WHOLE } : {}) },
          ],
          series: [
            { label: "Day", value: (_u, ts) => (ts == null ? "" : new Date(ts * 1000).toISOString().slice(0, 10)) },
            ...series.map((s) => ({
              label: s.label,
              stroke: v(s.color),
              width: 2,
              points: { show: days.length <= 31 },
              value: (_u: uPlot, n: number | null) => (n == null ? "" : format(n)),
            })),
          ],
        },
        [x, ...series.map((s) => s.values)],
        el,
      );
    };
    loadUPlot().then(
      (U) => {
        if (gone) return;
        draw(U);
        const resize = new ResizeObserver(() => plot?.setSize({ width: Math.max(200, el.clientWidth), height: HEIGHT }));
        resize.observe(el);
        const theme = () => draw(U);
        dark.addEventListener("change", theme);
        cleanup = () => {
          resize.disconnect();
          dark.removeEventListener("change", theme);
        };
      },
      () => setError("The chart could not be loaded: reload the page to try again."),
    );
    return () => {
      gone = true;
      cleanup();
      plot?.destroy();
    };
  }, [days, series, format, whole]);
  return (
    <figure class="chart panel" data-testid={testId}>
      <h2>{title}</h2>
      <div ref={box} class="chart-box" role="img" aria-label={title} aria-describedby={`${testId}-caption`} />
      {error && <p class="error" role="alert">{error}</p>}
      <figcaption id={`${testId}-caption`} class="muted small">{caption}</figcaption>
    </figure>
  );
}
