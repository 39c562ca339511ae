//! End-to-end tests: the real `shs` binary, real function processes (Python, Node, sh) over
//! real pipes, real HTTP. Each test starts its own server on a free port over its own temporary
//! functions folder, so tests run in parallel; the harness stops every server and checks that
//! no process is left behind.
//!
//! Fixture functions live in `tests/fixtures/`, each with a comment saying what it does.

#![allow(unreachable_pub)] // helper items are shared between test modules

mod harness;

mod affinity;
mod bus_semantics;
mod cgi;
mod cli;
mod cli_client;
mod declared;
mod deploy;
mod durable;
mod events;
mod examples;
mod exec;
mod faults;
mod hostile;
mod http;
mod interop;
mod invocations;
mod load;
mod nats;
mod openapi;
mod ops;
mod prewarm;
mod protocol;
mod run;
mod scale;
mod schedules;
mod sdk;
mod secrets;
mod stream;
mod triggers;
mod ui;
mod webhooks;
