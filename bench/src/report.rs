//! The self-contained HTML report each bench writes beside its JSON: the
//! numbers as tables and as bar charts (SVG, drawn with plotters), so a run
//! can be read in a browser without anything else. Each page leaves its
//! title and text lines (the headline ratios among them) in a
//! `NAME.summary.json` beside it, and [`write_index`] gathers those into
//! one `index.html` linking every page.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use plotters::prelude::*;

/// One chart: a bar per label, all in one unit.
pub struct Bars {
    pub title: String,
    pub unit: &'static str,
    pub bars: Vec<(String, f64)>,
}

const WIDTH: u32 = 900;
const ROW: u32 = 22;

/// A horizontal bar chart as an SVG document.
pub fn svg(chart: &Bars) -> anyhow::Result<String> {
    let mut out = String::new();
    let height = 80 + ROW * chart.bars.len() as u32;
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let max = chart
            .bars
            .iter()
            .map(|(_, v)| *v)
            .fold(0.0_f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let n = chart.bars.len();
        let labels: Vec<String> = chart.bars.iter().map(|(l, _)| l.clone()).collect();
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(330)
            .build_cartesian_2d(0.0..max * 1.1, (0..n).into_segmented())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plot.configure_mesh()
            .disable_y_mesh()
            .x_desc(chart.unit)
            .y_labels(n)
            .y_label_formatter(&|segment| match segment {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plot.draw_series(
            Histogram::horizontal(&plot)
                .style(BLUE.mix(0.6).filled())
                .margin(4)
                .data(chart.bars.iter().enumerate().map(|(i, (_, v))| (i, *v))),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}

/// The charts of a netd-against-a-baseline comparison: throughput, latency,
/// and the per-packet program costs (ns) measured beside it.
pub fn setup_charts(
    what: &str,
    setups: &[&crate::Setup],
    program_ns: &[(String, f64)],
) -> Vec<Bars> {
    let per = |f: fn(&crate::Setup) -> f64| -> Vec<(String, f64)> {
        setups.iter().map(|s| (s.name.to_string(), f(s))).collect()
    };
    vec![
        Bars {
            title: format!("{what}: TCP throughput (iperf3)"),
            unit: "Gbit/s",
            bars: per(|s| s.throughput_gbit_s),
        },
        Bars {
            title: format!("{what}: 1-byte request/response, mean"),
            unit: "µs",
            bars: per(|s| s.rr_mean_us),
        },
        Bars {
            title: format!("{what}: 1-byte request/response, p99"),
            unit: "µs",
            bars: per(|s| s.rr_p99_us),
        },
        Bars {
            title: format!("{what}: program cost per packet"),
            unit: "ns",
            bars: program_ns.to_vec(),
        },
    ]
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `path`: a title, the text lines, then each chart with its numbers.
pub fn write_html(
    path: &Path,
    title: &str,
    lines: &[String],
    charts: &[Bars],
) -> anyhow::Result<()> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    for line in lines {
        let _ = write!(html, "<p>{}</p>", escape(line));
    }
    for chart in charts {
        let _ = write!(html, "<h2>{}</h2>", escape(&chart.title));
        html.push_str(&svg(chart)?);
        let _ = write!(
            html,
            "<table><tr><th>what</th><th>{}</th></tr>",
            escape(chart.unit)
        );
        for (label, value) in &chart.bars {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{value:.2}</td></tr>",
                escape(label)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    let page = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let summary = Summary {
        title: title.to_string(),
        page,
        lines: lines.to_vec(),
    };
    let summary_path = path.with_extension("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    Ok(())
}

/// What a bench's page says at its top, for the index.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub title: String,
    /// The page's file name, beside the summary.
    pub page: String,
    pub lines: Vec<String>,
}

/// `dir/index.html`: a section per `*.summary.json` in `dir` (by name),
/// its title linking its page, then its lines. Returns the benches listed.
pub fn write_index(dir: &Path) -> anyhow::Result<usize> {
    let mut summaries = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let is_summary = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".summary.json"));
        if !is_summary {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let summary: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench summary", path.display()))?;
        summaries.push((path, summary));
    }
    summaries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>netd benchmarks</title>\
         <style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}</style>\
         </head><body><h1>netd benchmarks</h1><p>Every bench of the last <code>cargo xtask \
         bench</code> in this directory; each page has its charts and tables, its JSON lies \
         beside it.</p>"
    );
    for (_, s) in &summaries {
        let _ = write!(
            html,
            "<h2><a href=\"{}\">{}</a></h2><ul>",
            escape(&s.page),
            escape(&s.title)
        );
        for line in &s.lines {
            let _ = write!(html, "<li>{}</li>", escape(line));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>\n");
    let index = dir.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("writing {}", index.display()))?;
    println!("index: {}", index.display());
    Ok(summaries.len())
}

/// netd's ratios to `baseline` in one line: throughput, and RR mean and
/// p99 (below 1 is faster).
pub fn comparison_line(baseline: &crate::Setup, netd: &crate::Setup) -> String {
    format!(
        "netd / {}: TCP throughput {:.2}x, RR mean {:.2}x, RR p99 {:.2}x ({:.2} against {:.2} Gbit/s, p99 {:.0} against {:.0} µs).",
        baseline.name,
        netd.throughput_gbit_s / baseline.throughput_gbit_s,
        netd.rr_mean_us / baseline.rr_mean_us,
        netd.rr_p99_us / baseline.rr_p99_us,
        netd.throughput_gbit_s,
        baseline.throughput_gbit_s,
        netd.rr_p99_us,
        baseline.rr_p99_us,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chart_is_an_svg_with_a_bar_per_value_and_the_page_holds_it() {
        let chart = super::Bars {
            title: "ns per packet".into(),
            unit: "ns",
            bars: vec![("no-op".into(), 26.0), ("netd <uplink>".into(), 38.0)],
        };
        let svg = super::svg(&chart).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        assert!(svg.matches("<rect").count() >= 2, "{svg}");
        let dir = tempfile::tempdir().expect("dir");
        let page = dir.path().join("r.html");
        super::write_html(&page, "bench", &["one run".into()], &[chart]).expect("html");
        let html = std::fs::read_to_string(page).expect("read");
        assert!(html.contains("<svg") && html.contains("netd &lt;uplink&gt;"));
    }

    #[test]
    fn the_index_links_every_page_with_its_lines_and_nothing_else() {
        let dir = tempfile::tempdir().expect("dir");
        for (name, line) in [("b", "netd / bridge 1.10x"), ("a", "LB 4.9x <no-op>")] {
            let page = dir.path().join(format!("{name}.html"));
            super::write_html(&page, &format!("bench {name}"), &[line.into()], &[]).expect("html");
        }
        std::fs::write(dir.path().join("a.json"), "{}").expect("a bench's JSON");
        assert_eq!(super::write_index(dir.path()).expect("index"), 2);
        let index = std::fs::read_to_string(dir.path().join("index.html")).expect("read");
        let (a, b) = (
            index
                .find("<a href=\"a.html\">bench a</a>")
                .expect("a linked"),
            index
                .find("<a href=\"b.html\">bench b</a>")
                .expect("b linked"),
        );
        assert!(a < b, "in name order");
        assert!(index.contains("LB 4.9x &lt;no-op&gt;") && index.contains("netd / bridge 1.10x"));
    }
}
