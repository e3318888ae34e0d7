//! `GET /`: the status page, rendered here as one HTML document with inline CSS and an SVG
//! chart (no script, no build step); it reloads itself every 5 s.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;

use super::Shared;
use super::api::{ThreadStatus, daemon_status};

pub(super) async fn status_page(State(shared): State<Arc<Shared>>) -> Html<String> {
    Html(render(&daemon_status(&shared).pipelines))
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f7f9}\
h1{font-size:20px;margin:0 0 16px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;\
padding:16px;margin-bottom:16px}h2{font-size:16px;margin:0 0 8px}table{border-collapse:collapse;margin:8px 0}\
td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #eef0f2}th{color:#5b6776;font-weight:600}\
td:first-child,th:first-child{text-align:left}.ok{color:#0a7a32}.bad{color:#b3261e}.muted{color:#5b6776}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#e8eef6;margin-left:6px}\
svg{background:#fbfcfd;border:1px solid #eef0f2}";

/// The whole page.
pub fn render(threads: &[ThreadStatus]) -> String {
    let mut html = String::with_capacity(8 * 1024);
    html.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta http-equiv=\"refresh\" content=\"5\"><title>Flumen</title>");
    html.push_str("<link rel=\"icon\" href=\"data:,\">");
    html.push_str(&format!("<style>{STYLE}</style></head><body>"));
    html.push_str(&format!(
        "<h1>Flumen <span class=\"muted\">{} pipeline thread(s)</span></h1>",
        threads.len()
    ));
    for t in threads {
        thread_section(&mut html, t);
    }
    html.push_str(
        "<p class=\"muted\">Figures as JSON: <a href=\"/api/v1/status\">/api/v1/status</a>; \
        for Prometheus: <a href=\"/metrics\">/metrics</a>; probes: <a href=\"/livez\">/livez</a>, \
        <a href=\"/readyz\">/readyz</a>.</p></body></html>",
    );
    html
}

fn thread_section(html: &mut String, t: &ThreadStatus) {
    let s = &t.status;
    html.push_str(&format!("<section id=\"pipeline-{name}-{thread}\"><h2>{name}<span class=\"muted\"> thread {thread}</span>\
         <span class=\"badge\">{phase}</span></h2>",
        name = escape(&t.pipeline),
        thread = t.thread,
        phase = escape(&t.phase),
    ));
    for (label, v) in [("live", &t.live), ("ready", &t.ready)] {
        let (class, text) = if v.ok {
            ("ok", "yes".to_string())
        } else {
            ("bad", format!("no: {}", v.reason.as_deref().unwrap_or("")))
        };
        html.push_str(&format!(
            "<div>{label}: <span class=\"{class}\">{}</span></div>",
            escape(&text)
        ));
    }
    html.push_str(&format!(
        "<div>records committed: <b class=\"records\">{}</b> · restarts: {}</div>",
        s.records_committed, s.restarts
    ));
    if let Some(e) = &s.last_error {
        html.push_str(&format!(
            "<div class=\"bad\">last error: {}</div>",
            escape(e)
        ));
    }
    chart(html, &s.throughput);
    partitions(html, &s.partitions);
    checkpoints(html, &s.checkpoints);
    html.push_str("</section>");
}

/// Records per second over the last minutes, as a line.
fn chart(html: &mut String, rates: &[(f64, f64)]) {
    const W: f64 = 600.0;
    const H: f64 = 80.0;
    let peak = rates.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let last = rates.last().map_or(0.0, |(_, r)| *r);
    html.push_str(&format!(
        "<div>throughput: <b>{last:.0}</b> records/s now, peak {peak:.0} (last {} min)</div>",
        (rates.len() * 5).div_ceil(60).max(1)
    ));
    html.push_str(&format!(
        "<svg width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"records per second\">"
    ));
    if rates.len() >= 2 {
        let (t0, t1) = (rates[0].0, rates[rates.len() - 1].0);
        let span = (t1 - t0).max(1.0);
        let top = peak.max(1.0);
        let points: Vec<String> = rates
            .iter()
            .map(|(t, r)| {
                let x = (t - t0) / span * (W - 4.0) + 2.0;
                let y = H - 2.0 - r / top * (H - 4.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        html.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#2f6fde\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        ));
    } else {
        html.push_str(
            "<text x=\"8\" y=\"44\" fill=\"#5b6776\">collecting samples (one every 5 s)</text>",
        );
    }
    html.push_str("</svg>");
}

fn partitions(html: &mut String, parts: &[serde_json::Value]) {
    html.push_str(
        "<table class=\"partitions\"><tr><th>partition</th><th>role</th><th>position</th>\
        <th>committed</th><th>lag</th><th>state</th><th>keys</th></tr>",
    );
    for p in parts {
        let text = |k: &str| match &p[k] {
            serde_json::Value::Null => "–".to_string(),
            serde_json::Value::String(s) => escape(s),
            v => v.to_string(),
        };
        let state = p["state_bytes"]
            .as_u64()
            .map_or_else(|| "–".to_string(), human_bytes);
        html.push_str(&format!("<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"lag\">{}</td><td>{state}</td><td>{}</td></tr>",
            text("topic"),
            text("partition"),
            text("role"),
            text("position"),
            text("committed"),
            text("lag"),
            text("state_keys"),
        ));
    }
    html.push_str("</table>");
}

fn checkpoints(html: &mut String, list: &[serde_json::Value]) {
    if list.is_empty() {
        html.push_str(
            "<div class=\"muted\">no checkpoint committed since the daemon started</div>",
        );
        return;
    }
    let now = crate::metrics::health::unix_seconds();
    html.push_str(
        "<table class=\"checkpoints\"><tr><th>checkpoint</th><th>committed</th>\
        <th>took</th><th>size</th></tr>",
    );
    for c in list {
        let ago = now - c["committed_unix"].as_f64().unwrap_or(now);
        html.push_str(&format!(
            "<tr><td>{}</td><td>{:.0} s ago</td><td>{:.0} ms</td><td>{}</td></tr>",
            c["id"],
            ago.max(0.0),
            c["duration_ms"].as_f64().unwrap_or(0.0),
            human_bytes(c["size_bytes"].as_u64().unwrap_or(0))
        ));
    }
    html.push_str("</table>");
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Text made safe inside HTML elements and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_sizes_read_as_people_read_them() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
