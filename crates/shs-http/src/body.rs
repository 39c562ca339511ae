//! Reading a request: its body within the size limit, and its id and trace context.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde_json::Map;

use crate::{RequestId, TraceParent, error_response};

/// Reads the whole body, refusing more than `limit` bytes with a 413.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, HttpResponse> {
    let too_large = |size: Option<usize>| {
        let what = size.map_or_else(|| "more".to_owned(), |s| s.to_string());
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {what} bytes; the limit is {limit} bytes (--max-body)"),
            Map::new(),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(Some(len)));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
                Map::new(),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The request's id (set by the access guard) and trace context.
pub(crate) fn request_meta(req: &HttpRequest) -> (String, Option<String>) {
    let extensions = req.extensions();
    let request_id = extensions
        .get::<RequestId>()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.0.clone());
    let trace = extensions.get::<TraceParent>().map(|t| t.0.clone());
    (request_id, trace)
}
