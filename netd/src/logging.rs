//! Logs go through `tracing`. The programs log nothing: a per-packet log
//! line costs verifier stack the programs do not have and ring space at
//! line rate; what a packet met is counted per drop reason instead.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Sets up the subscriber: `RUST_LOG` if set, else `level`.
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
