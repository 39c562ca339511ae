//! echo: answers each invoke with its input, unchanged, through the raw path (no parsing,
//! no allocation per request). The Rust echo function of the benchmarks.
//!
//! Build: `cargo build --release -p shs-sdk --example echo`, then
//! `mkdir -p functions/echo-rs && cp target/release/examples/echo functions/echo-rs/main`.

fn main() -> std::io::Result<()> {
    shs_sdk::Function::new()
        .on_invoke_raw(|input, _ctx| Ok(input.into()))
        .run()
}
