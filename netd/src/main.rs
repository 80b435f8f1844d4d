use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use netd::{
    config::{FileConfig, Overrides, RunConfig, DEFAULT_PIN_PATH},
    dataplane::PinLayout,
    logging, run,
};
use tracing::level_filters::LevelFilter;

/// Container networking with an eBPF datapath.
#[derive(Parser)]
#[command(name = "netd", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info")]
    log_level: LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the datapath, attach it and serve metrics until SIGINT/SIGTERM.
    Run {
        /// Interface to the underlay that gets the XDP program (repeatable).
        /// None: netd serves this host only.
        #[arg(long = "uplink", value_name = "IFACE")]
        uplinks: Vec<String>,
        /// TOML file with the same settings (uplinks, pin-path, metrics-addr).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// bpffs directory for netd's pinned maps, programs and links
        /// [default: /sys/fs/bpf/netd].
        #[arg(long, value_name = "DIR")]
        pin_path: Option<PathBuf>,
        /// Where to serve Prometheus metrics [default: 127.0.0.1:9964].
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Detach netd's programs everywhere and remove its pins (netd must be stopped).
    Teardown {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    let result = match cli.command {
        Command::Run {
            uplinks,
            config,
            pin_path,
            metrics_addr,
        } => start(cli.log_level, uplinks, config, pin_path, metrics_addr),
        Command::Teardown { pin_path } => run::teardown(&PinLayout::new(pin_path)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(
    log_level: LevelFilter,
    uplinks: Vec<String>,
    config: Option<PathBuf>,
    pin_path: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let file = match config {
        Some(path) => FileConfig::load(&path)?,
        None => FileConfig::default(),
    };
    let config = RunConfig::resolve(
        file,
        Overrides {
            uplinks,
            pin_path,
            metrics_addr,
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run::run(config, log_level))
}
