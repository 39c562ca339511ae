//! The OpenAPI document served at `GET /openapi.json`, held to the real server: it describes
//! exactly the routes of `shs_http::ROUTES`, and every answer the server gives while these tests
//! walk every route (successes and every kind of error) has a status the document declares for
//! that operation, the headers it requires, and a body that validates against the declared
//! schema (JSON Schema 2020-12, with the `jsonschema` crate) for its content type.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, ServerBuilder};

/// One answer, as it came: status, headers and the raw body.
struct Reply {
    method: Method,
    path: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {}",
            self.method,
            self.path,
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Sends one request.
async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client.request(method.clone(), format!("{url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply {
        method: method.clone(),
        path: path.to_owned(),
        status,
        headers,
        body,
    }
}

/// The OpenAPI document, and what the answers checked against it have shown.
struct Spec {
    doc: Value,
    /// Operations (method, path template) that answered a 2xx.
    succeeded: BTreeSet<(String, String)>,
    /// Every status seen.
    statuses: BTreeSet<u16>,
    /// What did not match the document.
    failures: Vec<String>,
    /// Validators built so far, by schema.
    validators: std::cell::RefCell<BTreeMap<String, std::rc::Rc<jsonschema::Validator>>>,
}

/// The path template of `ROUTES` that `path` (without its query) matches, in routing order:
/// `{x}` matches one non-empty segment, and a last `{tail}` the rest of the path, whatever it
/// is.
fn template_of(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    shs_http::ROUTES.iter().map(|(_, t)| *t).find(|template| {
        let parts: Vec<&str> = template.split('/').collect();
        if let Some(head) = template.strip_suffix("/{tail}") {
            let head: Vec<&str> = head.split('/').collect();
            return segments.len() > head.len()
                && head.iter().zip(&segments).all(|(part, segment)| {
                    if part.starts_with('{') {
                        !segment.is_empty()
                    } else {
                        part == segment
                    }
                });
        }
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') {
                    !segment.is_empty()
                } else {
                    part == segment
                }
            })
    })
}

/// A media type's essence: `type/subtype`, lower case, without parameters.
fn essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

impl Spec {
    fn new(doc: Value) -> Spec {
        Spec {
            doc,
            succeeded: BTreeSet::new(),
            statuses: BTreeSet::new(),
            failures: Vec::new(),
            validators: std::cell::RefCell::default(),
        }
    }

    /// The document as this crate embeds it.
    fn embedded() -> Spec {
        Spec::new(serde_json::from_str(shs_http::OPENAPI).expect("openapi.json is JSON"))
    }

    /// Follows a `$ref` to `#/components/...` (once or more).
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(pointer) = value.get("$ref").and_then(Value::as_str) {
            let pointer = pointer.strip_prefix('#').expect("local $ref");
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {pointer}"));
        }
        value
    }

    /// The methods (upper case) the document gives `template`.
    fn methods(&self, template: &str) -> BTreeSet<String> {
        self.doc["paths"][template]
            .as_object()
            .map(|item| {
                item.keys()
                    .filter(|k| {
                        ["get", "head", "post", "put", "delete", "patch", "options"]
                            .contains(&k.as_str())
                    })
                    .map(|k| k.to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The (method, path template) pairs the document describes.
    fn operations(&self) -> BTreeSet<(String, String)> {
        self.doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .flat_map(|t| self.methods(t).into_iter().map(move |m| (m, t.clone())))
            .collect()
    }

    /// Validates `instance` against `schema` (a schema of the document, whose `$ref`s point
    /// into its components), as JSON Schema 2020-12 with formats checked.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = schema.to_string();
        let cached = self.validators.borrow().get(&key).cloned();
        let validator = match cached {
            Some(validator) => validator,
            None => {
                let mut root = match schema {
                    Value::Object(object) => object.clone(),
                    Value::Bool(true) => serde_json::Map::new(),
                    other => panic!("unexpected schema {other}"),
                };
                root.insert(
                    "$schema".into(),
                    json!("https://json-schema.org/draft/2020-12/schema"),
                );
                root.insert("components".into(), self.doc["components"].clone());
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&Value::Object(root))
                    .map_err(|e| format!("the schema does not compile: {e}"))?;
                let validator = std::rc::Rc::new(validator);
                self.validators.borrow_mut().insert(key, validator.clone());
                validator
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Checks one answer against the document; a mismatch is recorded, not panicked on.
    fn check(&mut self, reply: &Reply) {
        if let Err(why) = self.verdict(reply) {
            self.failures.push(format!("{reply:?}: {why}"));
        }
        self.statuses.insert(reply.status);
    }

    fn verdict(&mut self, reply: &Reply) -> Result<(), String> {
        if reply.header("x-request-id").is_none_or(str::is_empty) {
            return Err("no X-Request-Id".into());
        }
        let Some(template) = template_of(&reply.path) else {
            // Not a route: 404 from the router (or what comes before it: 401, 429, 503).
            if reply.status == 404 && !reply.message().starts_with("no route for") {
                return Err("a 404 for an unknown path must be the router's".into());
            }
            let response = if reply.status == 404 {
                self.doc["components"]["responses"]["NoRoute"].clone()
            } else {
                self.component_response_for(reply.status)?
            };
            return self.check_response(reply, &response);
        };
        let method = reply.method.as_str().to_ascii_lowercase();
        let Some(operation) = self.doc["paths"][template].get(&method).cloned() else {
            // A route's path with a method it does not take: 405, `Allow` as documented.
            if reply.status != 405 {
                return Err(format!(
                    "{method} {template} is not an operation, yet not 405"
                ));
            }
            let allowed: BTreeSet<String> = reply
                .header("allow")
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            if allowed != self.methods(template) {
                return Err(format!("Allow {allowed:?} is not the document's methods"));
            }
            let response = self.doc["components"]["responses"]["MethodNotAllowed"].clone();
            return self.check_response(reply, &response);
        };
        if reply.status == 404 && reply.message().starts_with("no route for") {
            return Err("a documented operation fell through to the router's 404".into());
        }
        if reply.status == 405 {
            return Err("a documented operation answered 405".into());
        }
        let Some(response) = operation["responses"]
            .get(reply.status.to_string())
            .or_else(|| operation["responses"].get("default"))
        else {
            return Err(format!(
                "status {} is not declared for {method} {template}",
                reply.status
            ));
        };
        let response = self.resolve(response).clone();
        self.check_response(reply, &response)?;
        if (200..300).contains(&reply.status) {
            self.succeeded
                .insert((reply.method.as_str().to_owned(), template.to_owned()));
        }
        Ok(())
    }

    /// The shared response for a status every secured route may give before its handler runs.
    fn component_response_for(&self, status: u16) -> Result<Value, String> {
        let name = match status {
            401 => "Unauthorized",
            429 => "TooManyRequests",
            503 => "ShuttingDown",
            other => return Err(format!("an unknown path answered {other}")),
        };
        Ok(self.doc["components"]["responses"][name].clone())
    }

    /// Checks headers and body against one response object.
    fn check_response(&self, reply: &Reply, response: &Value) -> Result<(), String> {
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header);
                let value = reply.header(name);
                if header["required"] == true && value.is_none() {
                    return Err(format!("no {name} header"));
                }
                if let Some(value) = value {
                    let schema = &header["schema"];
                    let typed = if schema["type"] == "integer" {
                        value
                            .parse::<i64>()
                            .map(Value::from)
                            .map_err(|_| format!("{name}: {value:?} is not an integer"))?
                    } else {
                        Value::String(value.to_owned())
                    };
                    self.validate(schema, &typed)
                        .map_err(|e| format!("header {name}: {e}"))?;
                }
            }
        }
        if reply.method == Method::HEAD {
            // No body, whatever the document says a GET would have.
            return if reply.body.is_empty() {
                Ok(())
            } else {
                Err("a body in the answer to HEAD".into())
            };
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if reply.body.is_empty() {
                Ok(())
            } else {
                Err("a body where the document declares none".into())
            };
        };
        let content_type = reply.header("content-type").unwrap_or_default();
        let media = content
            .get(content_type)
            .or_else(|| {
                content
                    .iter()
                    .find(|(k, _)| essence(k) == essence(content_type))
                    .map(|(_, v)| v)
            })
            .or_else(|| content.get("*/*"))
            .ok_or_else(|| format!("content type {content_type:?} is not declared"))?;
        let schema = media.get("schema").cloned().unwrap_or(Value::Bool(true));
        let kind = essence(content_type);
        if kind == "application/json" || kind.ends_with("+json") {
            let body: Value = serde_json::from_slice(&reply.body)
                .map_err(|e| format!("declared JSON, but the body is not: {e}"))?;
            self.validate(&schema, &body)
        } else if kind == "text/event-stream" {
            // OpenAPI 3.1 describes each event of a stream with `schema` (as Schemathesis reads
            // it): check every event, and its `data` against `contentSchema` when it is JSON.
            let text = std::str::from_utf8(&reply.body)
                .map_err(|_| "an event stream that is not UTF-8".to_owned())?;
            let content_schema = schema.pointer("/properties/data/contentSchema");
            for event in sse_events(text) {
                self.validate(&schema, &event)?;
                if let (Some(content_schema), Some(data)) =
                    (content_schema, event.get("data").and_then(Value::as_str))
                {
                    let data: Value = serde_json::from_str(data)
                        .map_err(|e| format!("an event's data is not JSON: {e}: {data}"))?;
                    self.validate(content_schema, &data)?;
                }
            }
            Ok(())
        } else if kind.starts_with("text/") {
            let text = std::str::from_utf8(&reply.body)
                .map_err(|_| "a text answer that is not UTF-8".to_owned())?;
            self.validate(&schema, &Value::String(text.to_owned()))
        } else {
            Ok(())
        }
    }

    /// Panics with every mismatch found.
    fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "answers that do not match the OpenAPI document:\n{}",
            self.failures.join("\n")
        );
    }
}

/// The complete events of a server-sent-events body, each as an object of its fields (`event`,
/// `data`, `id` as strings, `retry` as a number), as the SSE parsing rules dispatch them: an
/// event ends at a blank line, comments (`:`) are skipped, and a block with only `retry` sets
/// the reconnection time without dispatching an event.
fn sse_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // what follows the last blank line: an unfinished event, or nothing
    for block in blocks {
        let mut event = serde_json::Map::new();
        let mut data: Option<String> = None;
        for line in block.lines().filter(|l| !l.starts_with(':')) {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    let d = data.get_or_insert_with(String::new);
                    if !d.is_empty() {
                        d.push('\n');
                    }
                    d.push_str(value);
                }
                "retry" => {
                    event.insert("retry".into(), json!(value.parse::<u64>().ok()));
                }
                other => {
                    event.insert(other.into(), Value::String(value.to_owned()));
                }
            }
        }
        if let Some(data) = data {
            event.insert("data".into(), Value::String(data));
            events.push(Value::Object(event));
        }
    }
    events
}

/// A client of `server` that checks every answer against the document.
struct Walker<'a> {
    server: &'a Server,
    client: reqwest::Client,
    spec: Spec,
}

impl<'a> Walker<'a> {
    fn new(server: &'a Server) -> Walker<'a> {
        Walker {
            server,
            // Redirects are answers to check, not to follow.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            spec: Spec::embedded(),
        }
    }

    /// Sends a request, checks the answer, and returns it.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let reply = call(&self.client, &self.server.url, &method, path, body, headers).await;
        self.spec.check(&reply);
        reply
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    /// `GET path` on a stream: the answer with what came until `enough` holds of the body read
    /// so far (the stream is then dropped), checked like any other.
    async fn stream(&mut self, path: &str, enough: impl Fn(&str) -> bool) -> Reply {
        let mut response = self
            .client
            .get(format!("{}{path}", self.server.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while !enough(&String::from_utf8_lossy(&body)) && Instant::now() < deadline {
            match tokio::time::timeout(PATIENCE, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let reply = Reply {
            method: Method::GET,
            path: path.to_owned(),
            status,
            headers,
            body,
        };
        self.spec.check(&reply);
        reply
    }

    /// `GET path` again and again until `done` holds of its answer, or [`PATIENCE`] passes;
    /// returns the last answer.
    async fn get_until(&mut self, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let reply = self.get(path).await;
            if done(&reply) || Instant::now() > deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn post(&mut self, path: &str, body: &str) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }

    /// Sends a request and asserts its status.
    async fn expect(
        &mut self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let reply = self.send(method, path, body, headers).await;
        assert_eq!(reply.status, status, "{reply:?}");
        reply
    }
}

/// A concrete path for a template: every parameter filled with `value`.
fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { value } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_served_and_describes_exactly_the_routes() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let mut walker = Walker::new(&server);

    let served = walker.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = served.json();
    assert_eq!(
        doc, walker.spec.doc,
        "the server serves the embedded document"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "shs");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["security"], json!([{"apiKey": []}, {"bearer": []}, {}]));
    for open in OPEN {
        assert_eq!(doc["paths"][open]["get"]["security"], json!([]), "{open}");
    }

    // Every schema is a JSON Schema 2020-12 schema.
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        let mut schema = schema.clone();
        schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("components.schemas.{name} is not a 2020-12 schema: {e}");
        }
    }
    // Every operation has a description, an id, and declares its X-Request-Id.
    let spec = &walker.spec;
    for (method, template) in spec.operations() {
        let op = &doc["paths"][&template][method.to_ascii_lowercase()];
        assert!(op["description"].is_string(), "{method} {template}");
        assert!(op["operationId"].is_string(), "{method} {template}");
        for (status, response) in op["responses"].as_object().expect("responses") {
            let response = spec.resolve(response);
            assert!(
                response["headers"]["X-Request-Id"].is_object(),
                "{method} {template} {status}"
            );
        }
    }

    // The document's operations are the router's, and the other way round.
    let routed: BTreeSet<(String, String)> = shs_http::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(walker.spec.operations(), routed);

    // Each is a real route of the running server: never the router's 404, never 405. Other
    // methods on its path are 405, with `Allow` naming the document's methods.
    let operations = walker.spec.operations();
    for (method, template) in &operations {
        let path = fill(template, "nope");
        let body = (method == "POST").then_some("{\"type\": \"x.y\"}");
        let reply = walker.send(method, &path, body, &[]).await;
        assert!(reply.status != 405, "{reply:?}");
        assert!(!reply.message().starts_with("no route"), "{reply:?}");
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if !walker.spec.methods(template).contains(other) {
                let reply = walker.send(other, &path, None, &[]).await;
                assert_eq!(reply.status, 405, "{reply:?}");
            }
        }
    }
    for unknown in [
        "/",
        "/nope",
        "/run",
        "/functions/",
        "/functions/echo/x",
        "/events/a/b",
        "/ui/a/b",
    ] {
        let reply = walker.get(unknown).await;
        assert_eq!(reply.status, 404, "{reply:?}");
        assert!(reply.message().starts_with("no route for"), "{reply:?}");
    }
    walker.spec.assert_clean();
    server.stop_and_check();
}

/// The routes that need no API key: probes, and the dashboard's shell (which holds no data).
const OPEN: [&str; 5] = ["/health", "/ready", "/ui", "/ui/", "/ui/{file}"];

/// The functions the walk deploys.
fn walk_server() -> ServerBuilder {
    let builder = ServerBuilder::new()
        .fixture_as("echo", "signed")
        .toml("signed", "[webhook]\nkind = \"github\"\nsecret = \"gh\"\n");
    crate::secrets::with_secrets(builder, &[("gh", "walk-secret")])
        .fixture("echo")
        .fixture("fail")
        .toml("fail", "max_attempts = 1\n")
        .fixture_as("job", "ticker")
        .toml("ticker", "[[schedule]]\ncron = \"* * * * * *\"\n")
        .fixture("crash")
        .fixture("exec-cat")
        .fixture("exec-fail")
        .fixture("http-answer")
        .fixture("exit-at-start")
        .fixture("publisher")
        .fixture("hang")
        .toml("hang", "timeout = 1\nstart_timeout = 20\n")
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"walk.*\" }\n")
        .fixture("flaky")
        .toml(
            "flaky",
            "env = { ON = \"doomed.job\", FAILS = \"0\" }\nretry_backoff = 0.05\nmax_attempts = 2\n",
        )
        .file(
            "text",
            "main.sh",
            "cat > /dev/null\necho 'plain words, not JSON'\n",
        )
        .toml("text", "mode = \"exec\"\n")
        .file("bytes", "main.sh", "cat > /dev/null\nprintf '\\377\\376\\000'\n")
        .toml("bytes", "mode = \"exec\"\n")
        .file("bad-toml", "main.sh", "echo never\n")
        .toml("bad-toml", "mode = \"neither\"\n")
        .args(&["--max-body", "4096"])
}

#[tokio::test]
async fn every_route_answers_as_the_document_says() {
    let mut server = walk_server().start().await;
    let mut w = Walker::new(&server);
    // Whatever /ready says while functions start is checked too.
    w.get("/ready").await;
    server.wait_ready().await;
    std::fs::write(server.functions_dir().join("flaky/broken"), "").expect("break flaky");
    w.expect(200, "GET", "/health", None, &[]).await;
    w.expect(200, "GET", "/ready", None, &[]).await;
    w.expect(200, "GET", "/openapi.json", None, &[]).await;

    // Invoking.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echoed = w
        .expect(
            200,
            "POST",
            "/run/echo",
            Some("{\"hello\": \"world\"}"),
            &[("x-request-id", "walk-1"), ("traceparent", trace)],
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("walk-1"));
    w.expect(200, "POST", "/run/echo", Some(""), &[]).await;
    // Every method, with and without a sub-path, and bodies that are not JSON.
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        w.expect(200, method, "/run/echo", None, &[]).await;
        w.expect(200, method, "/run/echo/a/b%20c/?x=1&y=2", None, &[])
            .await;
    }
    w.expect(
        200,
        "POST",
        "/run/echo/form",
        Some("a=1&b=two"),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    w.expect(
        200,
        "PUT",
        "/run/exec-cat/text",
        Some("plain words"),
        &[("content-type", "text/plain")],
    )
    .await;
    // A function's own HTTP response, and a malformed one.
    let html = json!({"result": {"http_response": {"status": 201,
        "headers": {"content-type": "text/html", "set-cookie": ["a=1", "b=2"]}, "body": "<p>hi</p>"}}});
    w.expect(
        201,
        "POST",
        "/run/http-answer",
        Some(&html.to_string()),
        &[],
    )
    .await;
    let teapot = json!({"result": {"http_response": {"status": 418, "body": "short and stout"}}});
    w.expect(
        418,
        "PUT",
        "/run/http-answer/pot",
        Some(&teapot.to_string()),
        &[],
    )
    .await;
    let bad = json!({"result": {"http_response": {"status": 600}}});
    w.expect(502, "POST", "/run/http-answer", Some(&bad.to_string()), &[])
        .await;
    w.expect(
        400,
        "PATCH",
        "/run/echo/a",
        Some("{nope"),
        &[("content-type", "application/json")],
    )
    .await;
    w.expect(200, "POST", "/run/exec-cat", Some("[1, 2, 3]"), &[])
        .await;
    let text = w.expect(200, "POST", "/run/text", Some("{}"), &[]).await;
    assert!(
        text.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let bytes = w.expect(200, "POST", "/run/bytes", Some("{}"), &[]).await;
    assert_eq!(
        bytes.header("content-type"),
        Some("application/octet-stream")
    );
    w.expect(
        400,
        "POST",
        "/run/echo",
        Some("{not json"),
        &[("content-type", "application/json")],
    )
    .await;
    w.expect(400, "POST", "/run/bad.name", Some("{}"), &[])
        .await;
    w.expect(404, "POST", "/run/", Some("{}"), &[]).await;
    w.expect(404, "POST", "/run/nope", Some("{}"), &[]).await;
    // A webhook: signed right, it runs; unsigned, 401 naming the header.
    let signature = format!(
        "sha256={}",
        crate::webhooks::sign("walk-secret", b"{\"zen\": 1}")
    );
    w.expect(
        200,
        "POST",
        "/run/signed",
        Some("{\"zen\": 1}"),
        &[("x-hub-signature-256", &signature)],
    )
    .await;
    let refused = w.expect(401, "POST", "/run/signed", Some("{}"), &[]).await;
    assert!(
        refused.message().contains("X-Hub-Signature-256"),
        "{refused:?}"
    );
    let big = format!("\"{}\"", "x".repeat(5000));
    w.expect(413, "POST", "/run/echo", Some(&big), &[]).await;
    let failed = w.expect(500, "POST", "/run/fail", Some("{}"), &[]).await;
    assert_eq!(failed.json()["error"]["code"], 42);
    let exited = w
        .expect(500, "POST", "/run/exec-fail", Some("{}"), &[])
        .await;
    assert!(exited.json()["error"]["stderr"].is_array(), "{exited:?}");
    w.expect(502, "POST", "/run/crash", Some("{\"crash\": true}"), &[])
        .await;
    w.expect(504, "POST", "/run/hang", Some("{}"), &[]).await;
    // Idempotency keys: the first answer again, another request, a key in flight, bad keys.
    let key = [("idempotency-key", "walk-key")];
    let first = w
        .expect(200, "POST", "/run/echo/keyed", Some("{\"n\": 1}"), &key)
        .await;
    let again = w
        .expect(200, "POST", "/run/echo/keyed", Some("{\"n\": 1}"), &key)
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    w.expect(422, "POST", "/run/echo/keyed", Some("{\"n\": 2}"), &key)
        .await;
    let long = "k".repeat(256);
    w.expect(
        400,
        "PATCH",
        "/run/echo",
        Some("{}"),
        &[("idempotency-key", &long)],
    )
    .await;
    let event_key = [("idempotency-key", "walk-event")];
    for _ in 0..2 {
        w.expect(
            200,
            "POST",
            "/events",
            Some("{\"type\": \"walk.keyed\"}"),
            &event_key,
        )
        .await;
    }
    w.expect(
        422,
        "POST",
        "/events",
        Some("{\"type\": \"walk.other\"}"),
        &event_key,
    )
    .await;
    let slow = call(
        &w.client,
        &server.url,
        &Method::POST,
        "/run/hang",
        Some("{\"sleep\": 0.6}"),
        &[("idempotency-key", "walk-slow")],
    );
    // Sent together: whichever comes first runs (0.6 s), the other finds it in flight.
    let (slow, conflict) = tokio::join!(slow, async {
        call(
            &w.client,
            &server.url,
            &Method::POST,
            "/run/hang",
            Some("{\"sleep\": 0.6}"),
            &[("idempotency-key", "walk-slow")],
        )
        .await
    });
    assert_eq!(
        (slow.status, conflict.status),
        (200, 409),
        "{slow:?} {conflict:?}"
    );
    w.spec.check(&slow);
    w.spec.check(&conflict);
    // It cannot start: 503, and while it backs off, 503 with Retry-After and next_try.
    let mut backing_off = None;
    for _ in 0..40 {
        let reply = w
            .expect(503, "POST", "/run/exit-at-start", Some("{}"), &[])
            .await;
        if reply.json()["error"]["next_try"].is_string() {
            backing_off = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backing_off = backing_off.expect("a 503 while backing off");
    assert!(
        backing_off.header("retry-after").is_some(),
        "{backing_off:?}"
    );
    w.expect(503, "POST", "/run/bad-toml", Some("{}"), &[])
        .await;

    // Looking at functions.
    let functions = w.expect(200, "GET", "/functions", None, &[]).await;
    let rows = functions.json()["functions"].clone();
    let row = |name: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|f| f["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {rows}"))
    };
    assert!(
        ["backing_off", "failed"].contains(&row("exit-at-start")["state"].as_str().unwrap_or("")),
        "{rows}"
    );
    assert_eq!(row("exec-cat")["mode"], "exec");
    assert_eq!(row("bad-toml")["state"], "failed");
    w.expect(200, "GET", "/functions/echo/logs", None, &[])
        .await;
    w.expect(200, "GET", "/functions/echo/logs?tail=2&after=1", None, &[])
        .await;
    w.expect(200, "GET", "/functions/crash/logs?tail=10000", None, &[])
        .await;
    w.expect(400, "GET", "/functions/echo/logs?tail=many", None, &[])
        .await;
    w.expect(400, "GET", "/functions/bad.name/logs", None, &[])
        .await;
    w.expect(404, "GET", "/functions/nope/logs", None, &[])
        .await;
    w.expect(200, "GET", "/metrics", None, &[]).await;
    w.expect(200, "GET", "/metrics/echo", None, &[]).await;
    w.expect(200, "GET", "/metrics/exec-cat", None, &[]).await;
    w.expect(400, "GET", "/metrics/bad.name", None, &[]).await;
    w.expect(404, "GET", "/metrics/nope", None, &[]).await;
    w.expect(200, "GET", "/subscriptions", None, &[]).await;
    let echo = w.expect(200, "GET", "/functions/echo", None, &[]).await;
    assert_eq!(echo.json()["config"]["mode"], "rpc", "{echo:?}");
    assert!(echo.json()["process_list"][0]["pid"].is_u64(), "{echo:?}");
    w.expect(200, "GET", "/functions/exec-cat", None, &[]).await;
    let broken = w.expect(200, "GET", "/functions/bad-toml", None, &[]).await;
    assert_eq!(broken.json()["config"], Value::Null, "{broken:?}");
    w.expect(400, "GET", "/functions/bad.name", None, &[]).await;
    w.expect(404, "GET", "/functions/nope", None, &[]).await;

    // Live updates, and what the stream refuses.
    let streamed = w
        .stream(
            "/stream?topics=functions,function:echo,logs:echo&tail=5",
            |b| b.contains("event: functions") && b.contains("event: function\n"),
        )
        .await;
    assert_eq!(streamed.status, 200, "{streamed:?}");
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    w.expect(400, "GET", "/stream", None, &[]).await;
    w.expect(400, "GET", "/stream?topics=events", None, &[])
        .await;
    w.expect(400, "GET", "/stream?topics=logs:bad.name", None, &[])
        .await;
    w.expect(400, "GET", "/stream?topics=functions&tail=many", None, &[])
        .await;
    w.expect(404, "GET", "/stream?topics=logs:nope", None, &[])
        .await;

    // The dashboard's shell.
    w.expect(308, "GET", "/ui", None, &[]).await;
    let page = w.expect(200, "GET", "/ui/", None, &[]).await;
    let etag = page.header("etag").expect("an ETag").to_owned();
    w.expect(304, "GET", "/ui/", None, &[("if-none-match", &etag)])
        .await;
    for file in ["app.js", "style.css", "favicon.svg", "index.html"] {
        w.expect(200, "GET", &format!("/ui/{file}"), None, &[])
            .await;
    }
    w.expect(404, "GET", "/ui/nope.js", None, &[]).await;

    // Publishing, in each form.
    let simple = w
        .expect(
            200,
            "POST",
            "/events",
            Some("{\"type\": \"walk.simple\", \"payload\": {\"n\": 1}}"),
            &[("traceparent", trace)],
        )
        .await;
    assert_eq!(simple.json()["delivered"], 1, "{simple:?}");
    let failing = w
        .post(
            "/events",
            "{\"type\": \"walk.failing\", \"data\": {\"fail\": \"no thanks\"}}",
        )
        .await;
    assert_eq!(failing.status, 200);
    assert_eq!(
        failing.json()["errors"][0]["function"],
        "sub",
        "{failing:?}"
    );
    let structured = json!({
        "specversion": "1.0", "type": "walk.structured", "source": "/walk", "id": "walk-ce-1",
        "time": "2026-03-04T05:06:07Z", "subject": "s", "datacontenttype": "application/json",
        "dataschema": "https://example.com/walk.json",
        "tenant": "acme", "data": {"n": 2}
    });
    w.expect(
        200,
        "POST",
        "/events",
        Some(&structured.to_string()),
        &[("content-type", "application/cloudevents+json")],
    )
    .await;
    w.expect(
        200,
        "POST",
        "/events",
        Some("{\"n\": 3}"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-type", "walk.binary"),
            ("ce-id", "walk-bin-1"),
            ("ce-source", "/walk"),
            ("ce-tenant", "acme"),
            ("ce-dataschema", "https://example.com/walk.json"),
            ("content-type", "application/json"),
        ],
    )
    .await;
    w.expect(
        200,
        "POST",
        "/events",
        Some("just text"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-type", "walk.text"),
            ("content-type", "text/plain"),
        ],
    )
    .await;
    // Bytes in binary mode (data_base64 for the subscriber), and a batch, which is a 415.
    let mut octets = w.client.post(format!("{}/events", w.server.url));
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-type", "walk.bytes"),
        ("content-type", "application/octet-stream"),
    ] {
        octets = octets.header(name, value);
    }
    let reply = octets
        .body(vec![0u8, 0xff, 0xfe])
        .send()
        .await
        .expect("POST /events with bytes");
    let reply = Reply {
        method: Method::POST,
        path: "/events".into(),
        status: reply.status().as_u16(),
        headers: reply.headers().clone(),
        body: reply.bytes().await.expect("body").to_vec(),
    };
    w.spec.check(&reply);
    assert_eq!(reply.status, 200, "{reply:?}");
    w.expect(
        415,
        "POST",
        "/events",
        Some("[]"),
        &[("content-type", "application/cloudevents-batch+json")],
    )
    .await;
    let accepted = w
        .expect(
            202,
            "POST",
            "/events",
            Some("{\"type\": \"walk.async\", \"payload\": 4}"),
            &[("prefer", "respond-async")],
        )
        .await;
    let async_id = accepted.json()["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    for bad in [
        "",
        "[1]",
        "{\"payload\": 1}",
        "{\"type\": 5}",
        "{\"type\": \"a..b\"}",
        "{nope",
    ] {
        w.expect(400, "POST", "/events", Some(bad), &[]).await;
    }
    w.expect(
        400,
        "POST",
        "/events",
        Some("{}"),
        &[("ce-specversion", "0.3"), ("ce-type", "a.b")],
    )
    .await;
    w.expect(
        400,
        "POST",
        "/events",
        Some("{\"specversion\": \"1.0\", \"type\": \"a.b\", \"time\": \"yesterday\"}"),
        &[],
    )
    .await;
    let big_event = format!(
        "{{\"type\": \"a.b\", \"payload\": \"{}\"}}",
        "x".repeat(5000)
    );
    w.expect(413, "POST", "/events", Some(&big_event), &[])
        .await;

    // Event history: synchronous events, an asynchronous one, one a function published. (A
    // synchronous event's history is written just after the answer: it may take a moment.)
    let found = |r: &Reply| r.status != 404;
    let simple_id = simple.json()["event_id"].as_str().expect("id").to_owned();
    let info = w.get_until(&format!("/events/{simple_id}"), found).await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.json()["event"]["traceparent"], trace, "{info:?}");
    for id in ["walk-ce-1", "walk-bin-1"] {
        let info = w.get_until(&format!("/events/{id}"), found).await;
        assert_eq!(info.status, 200, "{info:?}");
    }
    let published = w
        .expect(
            200,
            "POST",
            "/run/publisher",
            Some("{\"type\": \"walk.inner\", \"payload\": 5}"),
            &[],
        )
        .await;
    let inner = published.json()["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let inner = w.get_until(&format!("/events/{inner}"), found).await;
    assert_eq!(inner.status, 200, "{inner:?}");
    assert_eq!(
        inner.json()["published_by"]["kind"],
        "function",
        "{inner:?}"
    );
    let delivered = w
        .get_until(&format!("/events/{async_id}"), |r| {
            r.json()["deliveries"][0]["state"] == "delivered"
        })
        .await;
    assert_eq!(delivered.status, 200, "{delivered:?}");
    w.expect(404, "GET", "/events/no-such-event", None, &[])
        .await;

    // The listing: every filter, a page and its next, and each malformed parameter.
    let listed = w.expect(200, "GET", "/events", None, &[]).await;
    assert!(
        listed.json()["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["id"] == inner.json()["event"]["id"])),
        "{listed:?}"
    );
    let page = w
        .expect(
            200,
            "GET",
            "/events?type=walk.*&function=publisher&since=1h&limit=1",
            None,
            &[],
        )
        .await;
    let next = page.json()["next"].as_str().map(str::to_owned);
    if let Some(next) = next {
        w.expect(200, "GET", &next, None, &[]).await;
    }
    let topology = w.expect(200, "GET", "/topology", None, &[]).await;
    assert!(
        topology.json()["traffic"]["events"].as_u64() > Some(0),
        "{topology:?}"
    );
    w.expect(
        200,
        "GET",
        "/topology?since=2026-01-01T00:00:00Z",
        None,
        &[],
    )
    .await;
    for bad in [
        "/topology?since=soon",
        "/events?type=a..b",
        "/events?function=../x",
        "/events?since=yesterday",
        "/events?before=-1",
        "/events?limit=many",
    ] {
        w.expect(400, "GET", bad, None, &[]).await;
    }

    // Dead letters: flaky is broken, so its event ends there after two attempts.
    let doomed = w
        .expect(
            202,
            "POST",
            "/events",
            Some("{\"type\": \"doomed.job\", \"payload\": {\"job\": 1}}"),
            &[("prefer", "respond-async")],
        )
        .await;
    let doomed_id = doomed.json()["event_id"].as_str().expect("id").to_owned();
    let letters = "/events/dead-letters?function=flaky";
    let dead = |r: &Reply| r.json()["dead_letters"][0]["id"].is_string();
    let reply = w.get_until(letters, dead).await;
    let letter = reply.json()["dead_letters"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a dead letter: {reply:?}; log:\n{}", server.logs()))
        .to_owned();
    w.expect(200, "GET", "/events/dead-letters", None, &[])
        .await;
    w.expect(
        200,
        "GET",
        "/events/dead-letters?type=doomed.job&limit=1",
        None,
        &[],
    )
    .await;
    w.expect(400, "GET", "/events/dead-letters?limit=many", None, &[])
        .await;
    let history = w
        .expect(200, "GET", &format!("/events/{doomed_id}"), None, &[])
        .await;
    assert_eq!(
        history.json()["deliveries"][0]["state"],
        "dead",
        "{history:?}"
    );
    w.expect(
        200,
        "POST",
        &format!("/events/dead-letters/{letter}/retry"),
        None,
        &[],
    )
    .await;
    w.expect(404, "POST", "/events/dead-letters/nope/retry", None, &[])
        .await;
    // Still broken: it dies again, and is deleted.
    let reply = w.get_until(letters, dead).await;
    let letter = reply.json()["dead_letters"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("dead again: {reply:?}"))
        .to_owned();
    w.expect(
        200,
        "DELETE",
        &format!("/events/dead-letters/{letter}"),
        None,
        &[],
    )
    .await;
    w.expect(
        404,
        "DELETE",
        &format!("/events/dead-letters/{letter}"),
        None,
        &[],
    )
    .await;

    // Asynchronous invocations: accepted, listed, read back; one that fails is a dead letter
    // of kind `invocation`.
    let async_run = w
        .expect(
            202,
            "POST",
            "/run/echo/sub/path",
            Some("{\"later\": true}"),
            &[("prefer", "respond-async")],
        )
        .await;
    let invocation = async_run.json()["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_owned();
    let done = w
        .get_until(&format!("/invocations/{invocation}"), |r| {
            r.json()["state"] == "succeeded"
        })
        .await;
    assert_eq!(done.status, 200, "{done:?}");
    let failing = w
        .expect(
            202,
            "PUT",
            "/run/fail",
            Some("{}"),
            &[("prefer", "respond-async")],
        )
        .await;
    let failing = failing.json()["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_owned();
    w.get_until(&format!("/invocations/{failing}"), |r| {
        r.json()["state"] == "failed"
    })
    .await;
    w.expect(200, "GET", "/invocations", None, &[]).await;
    let schedules = w
        .get_until("/schedules", |r| {
            r.json()["schedules"][0]["last"].is_object()
        })
        .await;
    assert_eq!(schedules.status, 200, "{schedules:?}");
    w.expect(
        200,
        "GET",
        "/invocations?function=echo&state=succeeded&limit=5",
        None,
        &[],
    )
    .await;
    w.expect(400, "GET", "/invocations?state=asleep", None, &[])
        .await;
    w.expect(
        400,
        "POST",
        "/run/echo",
        Some("{}"),
        &[("prefer", "respond-async"), ("x-callback-url", "ftp://x/")],
    )
    .await;
    w.expect(404, "GET", "/invocations/no-such-invocation", None, &[])
        .await;
    w.expect(
        404,
        "POST",
        "/run/nobody",
        Some("{}"),
        &[("prefer", "respond-async")],
    )
    .await;
    let letters = w
        .expect(
            200,
            "GET",
            "/events/dead-letters?kind=invocation",
            None,
            &[],
        )
        .await;
    assert_eq!(letters.json()["dead_letters"][0]["id"], failing.as_str());
    w.expect(400, "GET", "/events/dead-letters?kind=other", None, &[])
        .await;
    w.expect(
        200,
        "DELETE",
        &format!("/events/dead-letters/{failing}"),
        None,
        &[],
    )
    .await;

    // Wrong methods and unknown paths.
    w.expect(405, "TRACE", "/run/echo", None, &[]).await;
    w.expect(405, "TRACE", "/run/echo/a/b", None, &[]).await;
    w.expect(405, "DELETE", "/functions", None, &[]).await;
    w.expect(405, "PUT", "/events", None, &[]).await;
    w.expect(405, "GET", "/events/dead-letters/x", None, &[])
        .await;
    w.expect(404, "GET", "/nope", None, &[]).await;

    w.spec.assert_clean();
    // Every operation answered a success at least once (but `POST /run/`, which cannot, and
    // `GET /ui`, a redirect).
    let missing: Vec<_> = w
        .spec
        .operations()
        .into_iter()
        .filter(|op| !w.spec.succeeded.contains(op) && op.1 != "/run/" && op.1 != "/ui")
        .collect();
    assert!(missing.is_empty(), "never answered 2xx: {missing:?}");
    let seen = w.spec.statuses.clone();
    for status in [
        200, 202, 304, 308, 400, 404, 405, 409, 413, 415, 422, 500, 502, 503, 504,
    ] {
        assert!(seen.contains(&status), "no {status} in {seen:?}");
    }
    drop(w);
    server.stop_and_check();
}

#[tokio::test]
async fn refusals_before_the_route_are_as_the_document_says() {
    // Without a key: 401 on every route but the open ones, with the right one: through.
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--api-key", "walk-key"])
        .start()
        .await;
    server.wait_ready().await;
    let mut w = Walker::new(&server);
    for (method, template) in shs_http::ROUTES {
        let path = fill(template, "echo");
        let reply = w.send(method, &path, Some("{}"), &[]).await;
        if OPEN.contains(template) {
            assert!([200, 308, 404].contains(&reply.status), "{reply:?}");
            assert!(!reply.message().starts_with("no route"), "{reply:?}");
        } else {
            assert_eq!(reply.status, 401, "{reply:?}");
            let keyed = w
                .send(method, &path, Some("{}"), &[("x-api-key", "walk-key")])
                .await;
            assert_ne!(keyed.status, 401, "{keyed:?}");
            let bearer = w
                .send(
                    method,
                    &path,
                    Some("{}"),
                    &[("authorization", "Bearer walk-key")],
                )
                .await;
            assert_ne!(bearer.status, 401, "{bearer:?}");
        }
    }
    w.expect(401, "GET", "/no-such-path", None, &[]).await;
    w.spec.assert_clean();
    drop(w);
    server.stop_and_check();

    // Over the rate limit: 429 with Retry-After on every limited route.
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--rate-limit", "1", "--rate-burst", "1"])
        .start()
        .await;
    server.wait_ready().await;
    let mut w = Walker::new(&server);
    let mut limited = BTreeMap::new();
    for (method, template) in shs_http::ROUTES {
        let path = fill(template, "echo");
        // The first may get through; the second right after finds the bucket empty.
        for _ in 0..2 {
            let reply = w.send(method, &path, Some("{}"), &[]).await;
            *limited.entry(reply.status).or_insert(0) += 1;
        }
    }
    assert!(limited.get(&429).is_some_and(|n| *n > 10), "{limited:?}");
    w.spec.assert_clean();
    drop(w);
    server.stop_and_check();
}

#[tokio::test]
async fn a_refusal_while_draining_is_as_the_document_says() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .args(&["--shutdown-grace", "20"])
        .start()
        .await;
    server.wait_ready().await;
    let mut w = Walker::new(&server);
    // A connection that stays open across the start of the shutdown.
    w.expect(200, "GET", "/functions", None, &[]).await;
    let in_flight = call(
        &server.client,
        &server.url,
        &Method::POST,
        "/run/hang",
        Some("{\"sleep\": 2}"),
        &[],
    );
    let refused = async {
        server.wait_for_log("hang: sleeping for 2 s").await;
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        server.wait_for_log("SIGTERM: shutting down").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.send("GET", "/functions", None, &[]).await
    };
    let (finished, refused) = tokio::join!(in_flight, refused);
    assert_eq!(finished.status, 200, "{finished:?}");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.message().contains("shutting down"), "{refused:?}");
    w.spec.check(&finished);
    w.spec.assert_clean();
    drop(w);
    server.stop_and_check();
}

#[tokio::test]
async fn what_the_nats_bus_cannot_do_is_501_as_the_document_says() {
    if !crate::nats::nats_available() {
        return;
    }
    let ns = crate::nats::Namespace::new();
    let mut server = crate::nats::node(ServerBuilder::new().fixture("echo"), &ns).await;
    server.wait_ready().await;
    let mut w = Walker::new(&server);
    let published = w
        .expect(
            200,
            "POST",
            "/events",
            Some("{\"type\": \"walk.nats\"}"),
            &[],
        )
        .await;
    let id = published.json()["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    w.expect(501, "GET", &format!("/events/{id}"), None, &[])
        .await;
    w.expect(501, "GET", "/events?type=walk.*", None, &[]).await;
    w.expect(501, "GET", "/topology", None, &[]).await;
    w.expect(
        501,
        "POST",
        "/run/echo",
        Some("{}"),
        &[("idempotency-key", "on-nats")],
    )
    .await;
    w.expect(200, "GET", "/events/dead-letters", None, &[])
        .await;
    w.expect(404, "POST", "/events/dead-letters/1/retry", None, &[])
        .await;
    w.expect(404, "DELETE", "/events/dead-letters/1", None, &[])
        .await;
    w.expect(
        501,
        "POST",
        "/run/echo",
        Some("{}"),
        &[("prefer", "respond-async")],
    )
    .await;
    w.expect(501, "GET", "/invocations", None, &[]).await;
    w.spec.assert_clean();
    drop(w);
    server.stop_and_check();
}
