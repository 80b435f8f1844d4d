//! netd in the bench: the world of sandboxes, its services made with
//! `netd service create --file`, and what it costs.

use super::*;

/// The client and backends, each serving TCP on `TARGET`: read one byte,
/// answer one byte, close.
pub(super) struct World {
    pub(super) client: NetNs,
    pub(super) backends: Vec<NetNs>,
    pub(super) stop: Arc<AtomicBool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(120));
    }
}

pub(super) fn world() -> World {
    let stop = Arc::new(AtomicBool::new(false));
    let backends: Vec<NetNs> = (0..BACKENDS).map(|_| NetNs::new("bsB")).collect();
    World {
        client: NetNs::new("bsC"),
        backends,
        stop,
    }
}

/// Each backend serving on `TARGET`.
pub(super) fn serve(w: &World) {
    for ns in &w.backends {
        serve_bytes(ns, TARGET, w.stop.clone());
    }
}

/// The median connection rate to `vip`'s service port over `args.rounds`.
pub(super) fn median_rate(w: &World, vip: &str, args: &Args) -> anyhow::Result<f64> {
    connections::median_rate(
        &w.client,
        format!("{vip}:{PORT}").parse()?,
        args.seconds,
        args.threads,
        args.rounds,
    )
}

pub(super) fn service_specs(range: std::ops::Range<usize>) -> serde_json::Value {
    serde_json::Value::Array(
        range
            .map(|i| {
                serde_json::json!({
                    "name": format!("s{i}"),
                    "network": "bench",
                    "ports": [format!("{PORT}:{TARGET}/tcp")],
                    "selector": "app=bench",
                })
            })
            .collect(),
    )
}

pub(super) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

pub(super) fn bench_netd(args: &Args, services: usize) -> anyhow::Result<Point> {
    let w = world();
    let host = NetNs::new("bsH");
    let pins = TempPins::new();
    let mut netd = Netd::start(&host, pins.layout.root(), netd_tests::free_port(), &[]);
    netd.wait_ready(&host);
    netd.ok(&["network", "create", "bench", "--subnet", "10.60.0.0/16"]);
    netd.endpoint("client", "bench", &w.client, &[]);
    for (i, ns) in w.backends.iter().enumerate() {
        netd.endpoint(&format!("b{i}"), "bench", ns, &["--label", "app=bench"]);
    }
    serve(&w);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), service_specs(0..services).to_string())?;
    let path = file.path().to_str().context("path")?.to_string();
    let (out, took) = timed(|| netd.cli(&["service", "create", "--file", &path]));
    if !out.0 {
        bail!("netd batch of {services}: {}", out.2);
    }
    let measured_name = format!("s{}", measured(services));
    let inspect: serde_json::Value =
        serde_json::from_str(&netd.ok(&["service", "inspect", &measured_name]))?;
    let vip = inspect["vip"].as_str().context("VIP")?.to_string();
    let rate = median_rate(&w, &vip, args)?;
    let last = format!("s{}", services - 1);
    let (_, change) = timed(|| netd.ok(&["service", "update", &last, "--weight", "b3=2"]));
    let rss = netd.pid().and_then(netd_bench::rss_mib);
    let _ = netd.stop();
    Ok(Point {
        system: System::Netd,
        services,
        connections_per_sec: rate,
        program_secs: took.as_secs_f64(),
        change_ms: change.as_secs_f64() * 1e3,
        rss_mib: rss,
    })
}
