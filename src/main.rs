//! The `shs` command: a self-hosted serverless framework.
//!
//! `shs serve` runs the supervisor and its HTTP API. This binary only parses the command line,
//! sets up logging and wires the crates together: the bus (`shs-bus`), the supervisor
//! (`shs-supervisor`) and the HTTP server (`shs-http`).

mod cli;
mod logging;
mod serve;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => {
            logging::init(args.log_format);
            match serve::run(args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("shs: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
