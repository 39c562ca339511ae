//! The `shs` command: a self-hosted serverless framework.
//!
//! - `shs serve` runs the supervisor and its HTTP API on a folder of functions.
//! - `shs new NAME --lang python|node|rust|sh [--dir functions]` writes a new function from a
//!   template (on the language's SDK, with a unit test where the language has a convention for
//!   one), ready to deploy: a running server picks it up from its functions folder.
//! - `shs invoke NAME [JSON | @FILE | -]`, `shs publish TYPE [JSON] [--async]`, `shs list`,
//!   `shs subscriptions` and `shs logs NAME [-f] [--tail N]` talk to a running server over its
//!   HTTP API: `--url` (env `SHS_URL`, default `http://127.0.0.1:8080`) says where, and
//!   `--api-key` (env `SHS_API_KEY`) is sent as `Authorization: Bearer KEY`. They exit with
//!   status 1 and say what went wrong and what to do (the server is not running, it wants an
//!   API key, no such function, the input is not JSON) on any error, and 0 on success.
//!
//! This binary only parses the command line and wires things together: the bus (`shs-bus`),
//! the supervisor (`shs-supervisor`) and the HTTP server (`shs-http`) for `serve`
//! (`serve.rs`), the templates for `new` (`new.rs`), and an HTTP client for the rest
//! (`client.rs`).

mod cli;
mod client;
mod logging;
mod new;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let done = match cli::Cli::parse().command {
        cli::Command::Serve(args) => return serve_command(*args),
        cli::Command::New(args) => new::run(&args),
        cli::Command::Invoke(args) => client::invoke(&args),
        cli::Command::Invocations(args) => client::invocations(&args),
        cli::Command::Publish(args) => client::publish(&args),
        cli::Command::List(args) => client::list(&args),
        cli::Command::Subscriptions(args) => client::subscriptions(&args),
        cli::Command::Logs(args) => client::logs(&args),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_command(args: cli::ServeArgs) -> ExitCode {
    logging::init(args.log_format);
    match serve::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("shs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
