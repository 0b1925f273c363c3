//! The report's charts: small self-contained SVG line charts of a run's timeline (sessions,
//! latency percentiles, loss, CPU), written next to the JSON report. No plotting library: a
//! few polylines, axes and a legend.

use std::fmt::Write as _;

use crate::scenario::Point;

const W: f64 = 720.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 4] = ["#7c3aed", "#db2777", "#0891b2", "#65a30d"];

/// One line: a name and (t, value) points (gaps where the value is missing).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, Option<f64>)>,
}

/// An SVG line chart titled `title`, y in `unit`, x in seconds.
pub fn line_chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v));
    let y_max = nice_ceiling(values.fold(0.0f64, f64::max));
    let t_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(t, _)| *t))
        .fold(1.0f64, f64::max);
    let x = |t: f64| LEFT + t / t_max * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_max * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>
"##,
        escape(title)
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    for i in 0..=5 {
        let t = t_max * i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0} s</text>"##,
            x(t),
            H - BOTTOM + 16.0,
            t
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle" fill="#555">{}</text>"##,
        H / 2.0,
        H / 2.0,
        escape(unit)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // A gap in the data breaks the line.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (t, v) in &s.points {
            match v {
                Some(v) => segments.last_mut().unwrap().push((x(*t), y(*v))),
                None if !segments.last().unwrap().is_empty() => segments.push(Vec::new()),
                None => {}
            }
        }
        for seg in segments.iter().filter(|s| !s.is_empty()) {
            let pts: Vec<String> = seg.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
                pts.join(" ")
            );
        }
        let lx = LEFT + 10.0 + i as f64 * 150.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            H - 12.0,
            lx + 16.0,
            H - 7.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The four charts of a run: (file name, SVG).
pub fn timeline_charts(timeline: &[Point]) -> Vec<(&'static str, String)> {
    let series = |name, f: &dyn Fn(&Point) -> Option<f64>| Series {
        name,
        points: timeline.iter().map(|p| (p.t, f(p))).collect(),
    };
    vec![
        (
            "sessions.svg",
            line_chart(
                "Sessions",
                "sessions",
                &[
                    series("WebRTC viewers", &|p| Some(p.webrtc_connected as f64)),
                    series("HLS viewers", &|p| Some(p.hls_playing as f64)),
                    series("publishers", &|p| Some(p.publishers_up as f64)),
                ],
            ),
        ),
        (
            "latency.svg",
            line_chart(
                "Glass-to-glass latency (WebRTC)",
                "ms",
                &[
                    series("p50", &|p| p.latency_p50_ms),
                    series("p95", &|p| p.latency_p95_ms),
                    series("p99", &|p| p.latency_p99_ms),
                ],
            ),
        ),
        (
            "loss.svg",
            line_chart(
                "Video packet loss (WebRTC)",
                "%",
                &[series("loss", &|p| p.video_loss_pct)],
            ),
        ),
        (
            "cpu.svg",
            line_chart(
                "CPU (100 % = one core)",
                "%",
                &[
                    series("server", &|p| p.server_cpu_pct),
                    series("harness", &|p| p.harness_cpu_pct),
                ],
            ),
        ),
    ]
}

/// The next 1, 2 or 5 × 10^n at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * exp)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * exp)
}

fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_a_line_per_series() {
        let timeline: Vec<Point> = (0..10)
            .map(|i| Point {
                t: i as f64,
                webrtc_connected: i * 10,
                latency_p50_ms: (i > 2).then_some(30.0),
                ..Point::default()
            })
            .collect();
        let charts = timeline_charts(&timeline);
        assert_eq!(charts.len(), 4);
        let (name, sessions) = &charts[0];
        assert_eq!(*name, "sessions.svg");
        assert!(sessions.starts_with("<svg") && sessions.ends_with("</svg>\n"));
        assert_eq!(sessions.matches("<polyline").count(), 3);
        assert!(sessions.contains(">100<"), "y axis up to 90 rounds to 100");
        // Latency is missing for the first seconds: one line from t = 3.
        assert_eq!(charts[1].1.matches("<polyline").count(), 1);
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(4999.0), 5000.0);
    }
}
