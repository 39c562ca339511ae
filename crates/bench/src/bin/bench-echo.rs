//! The raw actix-web baseline: `POST /run/echo` answers the request body, checked to be JSON,
//! in-process.

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use serde_json::value::RawValue;
use shs_bench::ServerArgs;

async fn echo(body: web::Bytes) -> HttpResponse {
    // Parse the body as shs does (it must be JSON), then send it back as it came.
    match serde_json::from_slice::<&RawValue>(&body) {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = ServerArgs::parse();
    let workers = args.workers();
    eprintln!(
        "bench-echo: listening on http://{} with {workers} workers",
        args.listen
    );
    HttpServer::new(|| App::new().route("/run/echo", web::post().to(echo)))
        .workers(workers)
        .bind(args.listen)?
        .run()
        .await
}
