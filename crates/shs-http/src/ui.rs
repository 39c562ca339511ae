//! The dashboard's shell: `GET /ui/` and its files, built into the binary from
//! `crates/shs-http/ui/` (plain HTML, CSS and JavaScript modules; no build step, nothing
//! fetched from elsewhere).
//!
//! The shell holds no data: it is served without an API key, and the page then reads
//! everything through the API (`/functions`, `/stream`, ...) with the key the user gives it.
//! Every answer here carries a strict Content-Security-Policy (scripts, styles, images and
//! connections from this origin only, no inline script or style, no framing), `X-Frame-Options:
//! DENY` and `X-Content-Type-Options: nosniff`. With `--ui off` every path here is a 404.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Map;

use crate::error_response;

/// Whether the dashboard is served (`--ui on|off`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dashboard {
    pub(crate) enabled: bool,
}

/// The policy every dashboard answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; \
     manifest-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:literal,)*) => {
        /// The dashboard's files, by name (`/ui/{name}`).
        const ASSETS: &[Asset] = &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../ui/", $name)),
        }),*];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "chart.js" => "text/javascript; charset=utf-8",
    "functions.js" => "text/javascript; charset=utf-8",
    "function.js" => "text/javascript; charset=utf-8",
    "dead-letters.js" => "text/javascript; charset=utf-8",
    "events.js" => "text/javascript; charset=utf-8",
    "event.js" => "text/javascript; charset=utf-8",
    "topology.js" => "text/javascript; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
}

/// The names of the dashboard's files and their sizes in bytes.
pub fn assets() -> impl Iterator<Item = (&'static str, usize)> {
    ASSETS.iter().map(|a| (a.name, a.body.len()))
}

/// The ETag of each asset (FNV-1a of its bytes), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

/// Adds the headers every dashboard answer carries.
fn secure(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn off() -> HttpResponse {
    secure(error_response(
        StatusCode::NOT_FOUND,
        "the dashboard is off (--ui off)",
        Map::new(),
    ))
}

fn enabled(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<Dashboard>>()
        .is_none_or(|d| d.enabled)
}

/// Serves asset `name`, or 304 when the client has it already.
fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return secure(error_response(
            StatusCode::NOT_FOUND,
            format!("the dashboard has no file {name:?}"),
            Map::new(),
        ));
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok()
            .content_type(asset.content_type)
            .body(asset.body)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    // Check every time: a new shs binary serves new files under the same names.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(response)
}

/// `GET /ui`: to `/ui/`, where the page's relative links resolve.
pub(crate) async fn redirect(req: HttpRequest) -> HttpResponse {
    if !enabled(&req) {
        return off();
    }
    secure(
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/ui/"))
            .finish(),
    )
}

/// `GET /ui/`: the page.
pub(crate) async fn index(req: HttpRequest) -> HttpResponse {
    if !enabled(&req) {
        return off();
    }
    serve(&req, "index.html")
}

/// `GET /ui/{file}`: one of the page's files.
pub(crate) async fn file(req: HttpRequest) -> HttpResponse {
    if !enabled(&req) {
        return off();
    }
    let name = req.match_info().get("file").unwrap_or_default().to_owned();
    serve(&req, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(asset.body).expect("UTF-8")
    }

    #[test]
    fn the_dashboard_stays_small() {
        let total: usize = assets().map(|(_, size)| size).sum();
        assert!(
            total < 250 * 1024,
            "the dashboard's files are {total} bytes"
        );
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in text(asset).lines() {
                let Some(from) = line.split(" from './").nth(1) else {
                    continue;
                };
                let module = from.split('\'').next().unwrap_or_default();
                assert!(names.contains(&module), "{} imports {module}", asset.name);
            }
        }
        let index = text(&ASSETS[0]);
        for name in ["style.css", "app.js", "favicon.svg"] {
            assert!(
                index.contains(&format!("\"{name}\"")),
                "index.html links {name}"
            );
        }
    }

    /// What a function controls is only ever put in the page as text: no API that parses HTML
    /// is used anywhere, and no inline script or style (the policy would refuse them anyway).
    #[test]
    fn the_page_never_parses_html_from_strings() {
        for asset in ASSETS {
            let text = text(asset);
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "createContextualFragment",
                "DOMParser",
                "eval(",
                "new Function",
                "setAttribute('style'",
                "setAttribute(\"style\"",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", asset.name);
            }
            if asset.name == "index.html" {
                assert!(!text.contains("<script>"), "no inline script");
                assert!(!text.contains("style="), "no inline style");
                let handler = text.match_indices(" on").any(|(at, _)| {
                    let rest = &text[at + 3..];
                    let name = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                    name > 0 && rest.as_bytes().get(name) == Some(&b'=')
                });
                assert!(!handler, "no inline event handlers");
            }
        }
    }
}
