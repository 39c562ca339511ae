//! `/run/{name}` and `/run/{name}/{tail...}`, every method: invokes a function on the HTTP
//! request ([`shs_supervisor::HttpRequest`]: method, the path after the name, the raw query,
//! the headers less shs's API key, the raw body, the client's address) and answers its result:
//! JSON, the HTTP response of an `http_response` result ([`response`]), or a cgi function's
//! CGI response, streamed.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Map;
use shs_supervisor::{ErrorKind, HttpRequest as FunctionRequest, Output};

use crate::access::authorization_holds_key;
use crate::body::{read_body, request_meta};
use crate::functions::{FunctionName, invoke_error_response, status_of};
use crate::idempotency::{self, not_run};
use crate::{AppState, error_response, response};

/// `/run/{name}[/{tail}]`, any method: invokes the function on the request; once per
/// `Idempotency-Key` on POST and PATCH ([`crate::idempotency`]).
pub(crate) async fn run(
    FunctionName(name): FunctionName,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let keyed = matches!(req.method().as_str(), "POST" | "PATCH");
    let key = match keyed.then(|| idempotency::key_of(&req)) {
        Some(Err(response)) => return response,
        Some(Ok(key)) => key,
        None => None,
    };
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body.freeze(),
        Err(response) => return response,
    };
    let Some(key) = key else {
        return invoke(name, &req, body, &state).await;
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    // Asynchronous or not, and where its outcome goes, belong to the request too.
    let mode: &[u8] = if crate::events::wants_async(&req) {
        b"async"
    } else {
        b"sync"
    };
    let callback = req
        .headers()
        .get("x-callback-url")
        .map_or(&b""[..], |v| v.as_bytes());
    let fingerprint = idempotency::fingerprint(&[
        b"run",
        name.as_bytes(),
        req.method().as_str().as_bytes(),
        path.as_bytes(),
        mode,
        callback,
        &body,
    ]);
    let bus = state.supervisor.bus().clone();
    idempotency::once(
        &req,
        &bus,
        state.idempotency_ttl,
        key,
        fingerprint,
        invoke(name, &req, body, &state),
        |_| true,
    )
    .await
}

/// Invokes function `name` on the request with its body read.
async fn invoke(
    name: String,
    req: &HttpRequest,
    body: web::Bytes,
    state: &AppState,
) -> HttpResponse {
    let front = state.supervisor.http_front(&name);
    // A webhook's signature is checked over the raw body before anything else reads it.
    let webhook = match front.webhook {
        None => None,
        Some(key) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(message) = crate::webhook::verify(&key, req.headers(), &body, now) {
                metrics::counter!("shs_webhook_refusals_total", "function" => name.clone(), "kind" => key.kind.as_str())
                    .increment(1);
                tracing::info!(function = name, "webhook refused: {message}");
                let mut extra = Map::new();
                extra.insert("function".into(), serde_json::Value::String(name));
                return not_run(error_response(StatusCode::UNAUTHORIZED, message, extra));
            }
            Some(key.kind)
        }
    };
    let request = function_request(req, &name, body);
    let (request_id, trace) = request_meta(req);
    if crate::events::wants_async(req) {
        // The body is checked now (a 400 now, not a failed invocation later); a CGI script
        // takes any body.
        if !front.cgi
            && let Err(e) = request.clone().into_invoke()
        {
            return not_run(error_response(
                StatusCode::BAD_REQUEST,
                e.to_string(),
                Map::new(),
            ));
        }
        let accepted =
            crate::invocations::accept(state, &name, &request, req.headers(), trace, webhook).await;
        // Refused (not stored): a retry with the same key should be accepted.
        return if accepted.status().is_success() {
            accepted
        } else {
            not_run(accepted)
        };
    }
    // A CGI script gets the body as it came, whatever it is.
    let invoke = if front.cgi {
        request.into_raw_invoke()
    } else {
        match request.into_invoke() {
            Ok(invoke) => invoke,
            Err(e) => {
                return not_run(error_response(
                    StatusCode::BAD_REQUEST,
                    e.to_string(),
                    Map::new(),
                ));
            }
        }
    };
    let (tx, mut stream) = shs_supervisor::http_stream();
    let supervisor = state.supervisor.clone();
    let function = name.clone();
    let mut call = Box::pin(async move {
        supervisor
            .invoke_http_streaming(
                &function,
                invoke,
                &request_id,
                trace.as_deref(),
                webhook,
                tx,
            )
            .await
    });
    // The first `stream` notification starts a streamed answer; an answer before any ends it.
    let first = tokio::select! {
        biased;
        chunk = stream.recv() => chunk,
        result = &mut call => return answer(&name, result),
    };
    let Some(first) = first else {
        // The call ended (its stream with it) without a chunk.
        return answer(&name, call.await);
    };
    let head = match response::head_of(first.status.as_ref(), first.headers.as_ref()) {
        Ok(head) => head,
        // Dropping the stream cancels the call.
        Err(detail) => return response::malformed(&name, "stream", &detail),
    };
    let mut builder = head.builder();
    if !head.has_content_type() {
        builder.content_type(if first.binary {
            "application/octet-stream"
        } else {
            "text/plain; charset=utf-8"
        });
    }
    // The call goes on by itself; its answer ends the stream, a failure cuts it short.
    let (ended, outcome) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let result = call.await;
        if let Err(error) = &result {
            tracing::debug!(
                function = name,
                "a streamed invoke failed after its answer began: {error}"
            );
        }
        let _ = ended.send(result.map(drop).map_err(|e| e.to_string()));
    });
    builder.streaming(streamed_body(first.data, stream, outcome))
}

/// The body of a streamed answer: the chunks as they come (empty ones skipped), then the end;
/// an error (the connection is cut, so the client sees the answer is incomplete) when the
/// call failed. Dropped early (the client went away), the stream cancels the call.
fn streamed_body(
    first: web::Bytes,
    stream: shs_supervisor::HttpStream,
    outcome: tokio::sync::oneshot::Receiver<Result<(), String>>,
) -> impl futures::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures::stream::unfold(
        (Some(first), Some(stream), Some(outcome)),
        |(mut pending, mut stream, mut outcome)| async move {
            loop {
                if let Some(data) = pending.take().filter(|d| !d.is_empty()) {
                    return Some((Ok(data), (None, stream, outcome)));
                }
                if let Some(s) = stream.as_mut() {
                    match s.recv().await {
                        Some(chunk) => {
                            pending = Some(chunk.data);
                            continue;
                        }
                        None => drop(stream.take()),
                    }
                }
                let failed = match outcome.take()?.await {
                    Ok(Ok(())) => return None,
                    Ok(Err(error)) => error,
                    Err(_) => "the call was dropped".to_owned(),
                };
                let error =
                    std::io::Error::other(format!("the streamed answer broke off: {failed}"));
                return Some((Err(error.into()), (None, None, None)));
            }
        },
    )
}

/// The answer to a call that did not stream: the result as JSON, an `http_response`, an exec
/// function's output, or the error.
fn answer(name: &str, result: Result<Output, shs_supervisor::InvokeError>) -> HttpResponse {
    match result {
        Ok(Output::Json(result)) => {
            if response::looks_like_http_response(result.get()) {
                match response::http_response_of(result.get()) {
                    Ok(Some(answer)) => return answer,
                    Ok(None) => {}
                    Err(detail) => return response::malformed(name, "http_response", &detail),
                }
            }
            let text: Box<str> = result.into();
            HttpResponse::Ok()
                .content_type("application/json")
                .body(String::from(text))
        }
        Ok(Output::Raw(bytes)) => {
            let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
                "application/json"
            } else if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            HttpResponse::Ok().content_type(content_type).body(bytes)
        }
        Ok(Output::Cgi(response)) => cgi_answer(name, response),
        Err(error) => {
            tracing::debug!(function = name, status = %status_of(&error), "invoke failed: {error}");
            let response = invoke_error_response(&error);
            // The function was not found, or never got the request.
            match error.kind() {
                ErrorKind::NotFound | ErrorKind::Unavailable => not_run(response),
                _ => response,
            }
        }
    }
}

/// A CGI response as the answer: its head, and its body streamed as the script writes it
/// (cut short, so the client sees it is incomplete, when the script fails or runs past its
/// timeout). Dropped (the client went away), the body kills the script.
fn cgi_answer(name: &str, response: shs_supervisor::CgiResponse) -> HttpResponse {
    let shs_supervisor::CgiResponse {
        status,
        headers,
        body,
    } = response;
    let head = match response::head_of_lines(status, &headers) {
        Ok(head) => head,
        Err(detail) => return response::malformed(name, "CGI response", &detail),
    };
    let function = name.to_owned();
    let chunks = futures::stream::unfold(Some(body), move |body| {
        let function = function.clone();
        async move {
            let mut body = body?;
            match body.next().await? {
                Ok(bytes) => Some((Ok(bytes), Some(body))),
                Err(error) => {
                    tracing::debug!(function, "a CGI answer broke off: {error}");
                    let error = std::io::Error::other(format!("the CGI answer broke off: {error}"));
                    Some((Err(actix_web::Error::from(error)), None))
                }
            }
        }
    });
    head.builder().streaming(chunks)
}

/// The request as function `name` sees it. A HEAD request is passed as GET (actix drops the
/// answer's body); `X-API-Key` is left out, and `Authorization` when it carried the API key.
fn function_request(req: &HttpRequest, name: &str, body: web::Bytes) -> FunctionRequest {
    let method = match req.method().as_str() {
        "HEAD" => "GET",
        other => other,
    };
    // The raw path: `/run/NAME` then the tail, percent-encoding kept. The name matched
    // `[A-Za-z0-9_-]+`, so it is in the raw path as it is.
    let prefix_len = "/run/".len() + name.len();
    let tail = req.uri().path().get(prefix_len..).unwrap_or_default();
    let mut request = FunctionRequest {
        method: method.to_owned(),
        path: if tail.is_empty() { "/" } else { tail }.to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        body,
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
        local_addr: Some(req.app_config().local_addr()),
        version: match req.version() {
            actix_web::http::Version::HTTP_09 => "HTTP/0.9",
            actix_web::http::Version::HTTP_10 => "HTTP/1.0",
            actix_web::http::Version::HTTP_2 => "HTTP/2",
            actix_web::http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        },
        ..FunctionRequest::default()
    };
    let drop_authorization = authorization_holds_key(req);
    add_headers(&mut request, req.headers(), drop_authorization);
    request
}

fn add_headers(request: &mut FunctionRequest, headers: &HeaderMap, drop_authorization: bool) {
    for (name, value) in headers {
        let name = name.as_str();
        if name == "x-api-key" || (drop_authorization && name == "authorization") {
            continue;
        }
        request.add_header(name, &String::from_utf8_lossy(value.as_bytes()));
    }
}

/// `POST /run/`: there is no function without a name (404, saying how to name one).
pub(crate) async fn run_without_name() -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        "no function name: use POST /run/{name}",
        Map::new(),
    )
}
