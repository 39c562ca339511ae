//! echo: answers each invoke with its input, unchanged, through the raw path (no parsing,
//! no allocation per request). The Rust echo function of the benchmarks. It declares
//! `"concurrency": 16` in its answer to `initialize`, so it needs no `function.toml`.
//!
//! Build: `cargo build --release -p shs-sdk --example echo`, then
//! `mkdir -p functions/echo-rs && cp target/release/examples/echo functions/echo-rs/main`.

fn main() -> std::io::Result<()> {
    shs_sdk::Function::new()
        .on_invoke_raw(|input, _ctx| Ok(input.into()))
        // One thread, but the handler never waits: 16 requests may queue in the pipe, and
        // are answered in order, several per write.
        .concurrency(16)
        .run()
}
