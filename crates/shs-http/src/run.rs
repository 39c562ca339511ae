//! `/run/{name}` and `/run/{name}/{tail...}`, every method: invokes a function on the HTTP
//! request ([`shs_supervisor::HttpRequest`]: method, the path after the name, the raw query,
//! the headers less shs's API key, the raw body, the client's address) and answers its result:
//! JSON, or the HTTP response of an `http_response` result ([`response`]).

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Map;
use shs_supervisor::{HttpRequest as FunctionRequest, Output};

use crate::access::authorization_holds_key;
use crate::body::{read_body, request_meta};
use crate::functions::{FunctionName, invoke_error_response, status_of};
use crate::{AppState, error_response, response};

/// `/run/{name}[/{tail}]`, any method: invokes the function on the request.
pub(crate) async fn run(
    FunctionName(name): FunctionName,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body.freeze(),
        Err(response) => return response,
    };
    let request = function_request(&req, &name, body);
    let invoke = match request.into_invoke() {
        Ok(invoke) => invoke,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string(), Map::new()),
    };
    let (request_id, trace) = request_meta(&req);
    match state
        .supervisor
        .invoke_http(&name, invoke, &request_id, trace.as_deref())
        .await
    {
        Ok(Output::Json(result)) => {
            if response::looks_like_http_response(result.get()) {
                match response::http_response_of(result.get()) {
                    Ok(Some(answer)) => return answer,
                    Ok(None) => {}
                    Err(detail) => return response::malformed(&name, "http_response", &detail),
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
        Err(error) => {
            tracing::debug!(function = name, status = %status_of(&error), "invoke failed: {error}");
            invoke_error_response(&error)
        }
    }
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
