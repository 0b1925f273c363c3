/** A small SVG line chart of one series over time (no chart library: a few dozen points). */
export default function LineChart({ points, label, unit }: { points: { t: number; v: number | null }[]; label: string; unit: string }) {
  const W = 600;
  const H = 160;
  const P = 30;
  const valid = points.filter((p): p is { t: number; v: number } => p.v !== null);
  if (valid.length < 2) return <p className="muted">{label}: not enough samples yet.</p>;
  const t0 = valid[0].t;
  const t1 = valid[valid.length - 1].t;
  const max = Math.max(1, ...valid.map((p) => p.v));
  const x = (t: number) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v: number) => H - P - (v / max) * (H - 2 * P);
  const d = valid.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${label}, up to ${Math.round(max)} ${unit}`}>
        <line x1={P} y1={H - P} x2={W - P} y2={H - P} className="axis" />
        <line x1={P} y1={P} x2={P} y2={H - P} className="axis" />
        <text x={P - 4} y={P + 4} textAnchor="end" className="axis-label">
          {Math.round(max)}
        </text>
        <text x={P - 4} y={H - P} textAnchor="end" className="axis-label">
          0
        </text>
        <path d={d} className="line" />
      </svg>
      <figcaption>
        {label} ({unit})
      </figcaption>
    </figure>
  );
}
