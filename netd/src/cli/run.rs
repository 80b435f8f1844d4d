//! `netd run`: the daemon, with its settings from flags over a config
//! file over the defaults; and `netd teardown`.

use std::path::PathBuf;

use clap::Args;
use netd::{
    config::{RunConfig, Settings, DEFAULT_SOCKET},
    run,
};

#[derive(Args)]
pub(super) struct RunArgs {
    /// TOML file with the same settings as the flags (uplinks, pin-path,
    /// metrics-addr, state-dir, socket, ..., and [conntrack]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

pub(super) fn start(socket: PathBuf, args: RunArgs) -> anyhow::Result<()> {
    let file = match args.config {
        Some(path) => Settings::load(&path)?,
        None => Settings::default(),
    };
    let mut flags = args.settings;
    // The global --socket counts only when given.
    flags.socket = (socket.as_path() != std::path::Path::new(DEFAULT_SOCKET)).then_some(socket);
    let config = RunConfig::resolve(flags.over(file))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run::run(config))
}
