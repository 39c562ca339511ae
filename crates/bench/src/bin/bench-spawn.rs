//! The exec-mode baseline: `POST /run/cat` spawns a one-shot `cat` per request, writes the body
//! to its stdin, closes it, and answers what `cat` wrote to stdout.

use std::process::Stdio;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use shs_bench::ServerArgs;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

async fn cat(body: web::Bytes) -> HttpResponse {
    match run_cat(&body).await {
        Ok(output) => HttpResponse::Ok()
            .content_type("application/json")
            .body(output),
        Err(e) => HttpResponse::InternalServerError().body(format!("cat failed: {e}")),
    }
}

async fn run_cat(input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    // Write and read at once, so that a body larger than the pipe buffer cannot deadlock.
    let write = async move {
        stdin.write_all(input).await?;
        stdin.shutdown().await
    };
    let (written, output) = tokio::join!(write, child.wait_with_output());
    written?;
    let output = output?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(std::io::Error::other(format!(
            "exited with {}",
            output.status
        )))
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse();
    let workers = args.workers();
    eprintln!(
        "bench-spawn: listening on http://{} with {workers} workers",
        args.listen
    );
    HttpServer::new(|| App::new().route("/run/cat", web::post().to(cat)))
        .workers(workers)
        .bind(args.listen)?
        .run()
        .await
}
