//! Baselines and helper programs for the shs benchmark suite (`scripts/bench`).
//!
//! Nothing here is part of shs itself. The binaries are what shs is measured against, side by
//! side in one run:
//!
//! - `bench-echo`: a bare actix-web server whose `POST /run/echo` answers the request body as
//!   JSON in-process. It is the ceiling for anything served through actix-web, run with the
//!   same worker count as `shs serve`.
//! - `bench-spawn`: an actix-web server whose `POST /run/cat` spawns a one-shot `cat` per
//!   request, writes the body to its stdin and answers its stdout. It is the ceiling for mode
//!   exec.
//! - `bench-echo-fn`: an shs function (mode rpc) written directly against `shs-protocol` that
//!   answers each `invoke` with its `input`, unchanged. With `--publish TYPE` it also publishes
//!   an event of that type, and waits for its answer, during each invoke.
//!
//! The library part holds what the two servers share.

use std::net::SocketAddr;

use clap::Parser;

/// The command line of the baseline servers.
#[derive(Debug, Parser)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// actix-web worker threads (`shs serve --workers`; default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
}

impl ServerArgs {
    /// The worker count to use: the flag, or the number of CPUs, as `shs serve` does.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }
}
