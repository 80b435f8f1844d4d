//! Logs go through `tracing`; the programs' aya-log lines join them.

use std::io::IsTerminal;

use aya::Ebpf;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{level_filters::LevelFilter, warn};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Sets up the subscriber: `RUST_LOG` if set, else `level`. Also catches
/// `log` records (aya-log emits those) through tracing-log.
pub fn init(level: LevelFilter) {
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let _ = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

/// An error with its causes, for log fields: "outer: cause: root cause".
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// aya-log's level for the programs (0 = off, 1 = error .. 5 = trace).
pub fn bpf_log_level(level: LevelFilter) -> u8 {
    match level.into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(tracing::Level::TRACE) => 5,
    }
}

/// Starts forwarding the programs' log lines; the task lives as long as
/// the runtime. Without the logs map (no log statements), nothing to do.
pub fn forward_bpf_logs(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            warn!(error = %chain(&e), "BPF log lines will not be shown");
            return;
        }
    };
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring buffer's descriptor and keeps it
        // open, unchanged, for as long as the AsyncFd owns the logger.
        let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
        let mut logger = match registered {
            Ok(logger) => logger,
            Err(e) => {
                warn!(error = %e, "cannot poll the BPF log ring");
                return;
            }
        };
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_levels_follow_tracing_levels() {
        assert_eq!(bpf_log_level(LevelFilter::OFF), 0);
        assert_eq!(bpf_log_level(LevelFilter::WARN), 2);
        assert_eq!(bpf_log_level(LevelFilter::TRACE), 5);
    }
}
