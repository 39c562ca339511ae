//! Logging set-up: one place, for both formats.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Logs to stderr at `info` (or what `RUST_LOG` says), as human-readable lines or JSON.
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("shs: cannot set up logging: {e}");
    }
}
