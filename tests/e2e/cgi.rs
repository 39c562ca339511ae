//! Mode cgi: a process per request as a CGI/1.1 script (RFC 3875), in sh and in Python. The
//! request as meta-variables and the raw body on stdin; the CGI response (status, repeated
//! headers, the body streamed as it is written); what is not a CGI response (502), a script
//! that fails (500) or hangs (504); the limits of mode exec; the API key kept out.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, ServerBuilder, poll};

/// `method path` with `body` and `headers`: the status, the headers, the body's bytes.
async fn send(
    server: &Server,
    method: Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = server
        .client
        .request(method, format!("{}{path}", server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("a body").to_vec();
    (status, headers, bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn all<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("a text header"))
        .collect()
}

/// The message of a JSON error answer.
fn message(bytes: &[u8]) -> String {
    let body: Value = serde_json::from_slice(bytes).expect("a JSON error");
    body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

#[tokio::test]
async fn a_sh_script_gets_the_request_and_sets_status_and_repeated_headers() {
    let mut server = ServerBuilder::new().fixture("cgi-sh").start().await;
    let (status, headers, body) = send(
        &server,
        Method::PUT,
        "/run/cgi-sh/a%20b/c?x=1&y=two",
        b"name=shs&tail=%2F".to_vec(),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-thing", "v1"),
            ("x-thing", "v2"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{}", text(&body));
    assert_eq!(
        all(&headers, "set-cookie"),
        ["a=1; Path=/", "b=2; Path=/"],
        "one line each"
    );
    assert_eq!(all(&headers, "x-script"), ["sh"]);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(headers.get("x-request-id").is_some());
    assert_eq!(
        text(&body),
        "method=PUT\npath_info=/a b/c\nquery=x=1&y=two\n\
         content_type=application/x-www-form-urlencoded\ncontent_length=17\n\
         script_name=/run/cgi-sh\ngateway=CGI/1.1\nx_thing=v1, v2\nbody=name=shs&tail=%2F"
    );
    // Every method; HEAD is GET without the body.
    for method in ["GET", "POST", "PATCH", "DELETE", "OPTIONS"] {
        let (status, _, body) = send(
            &server,
            Method::from_bytes(method.as_bytes()).expect("a method"),
            "/run/cgi-sh",
            Vec::new(),
            &[],
        )
        .await;
        assert_eq!(status, 201, "{method}");
        assert!(
            text(&body).starts_with(&format!("method={method}\npath_info=/\nquery=\n")),
            "{method}: {}",
            text(&body)
        );
        assert!(
            text(&body).contains("content_length=\n"),
            "no body, no length"
        );
    }
    let (status, headers, body) = send(&server, Method::HEAD, "/run/cgi-sh", Vec::new(), &[]).await;
    assert_eq!(status, 201);
    assert_eq!(all(&headers, "set-cookie").len(), 2);
    assert!(body.is_empty());
    server.stop_and_check();
}

#[tokio::test]
async fn a_python_script_gets_rfc_3875_meta_variables_and_the_raw_bytes() {
    let mut server = ServerBuilder::new().fixture("cgi-py").start().await;
    let bytes: Vec<u8> = (0..=255).collect();
    let (status, headers, body) = send(
        &server,
        Method::POST,
        "/run/cgi-py/files/x.bin?mode=raw",
        bytes.clone(),
        &[
            ("content-type", "application/octet-stream"),
            ("x-thing", "one"),
        ],
    )
    .await;
    assert_eq!(status, 202, "{}", text(&body));
    assert_eq!(all(&headers, "x-multi"), ["one", "two"]);
    assert_eq!(headers["content-type"], "application/json");
    let vars: Value = serde_json::from_slice(&body).expect("JSON");
    let port = server.url.rsplit(':').next().expect("a port");
    let expect = json!({
        "REQUEST_METHOD": "POST", "PATH_INFO": "/files/x.bin", "QUERY_STRING": "mode=raw",
        "CONTENT_TYPE": "application/octet-stream", "CONTENT_LENGTH": "256",
        "SCRIPT_NAME": "/run/cgi-py", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": port,
        "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": concat!("shs/", env!("CARGO_PKG_VERSION")),
        "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_URI": "/run/cgi-py/files/x.bin?mode=raw", "HTTP_X_THING": "one",
        "SHS_REQUEST_ID": headers["x-request-id"].to_str().expect("an id"),
    });
    for (name, value) in expect.as_object().expect("an object") {
        assert_eq!(&vars[name], value, "{name}");
    }
    assert_eq!(vars["body"], json!(bytes), "every byte value as sent");
    // A body that says JSON and is not is the script's business, not a 400.
    let (status, _, body) = send(
        &server,
        Method::POST,
        "/run/cgi-py",
        b"{not json".to_vec(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 202, "{}", text(&body));
    let vars: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(vars["body"], json!(b"{not json".to_vec()));
    server.stop_and_check();
}

/// `GET /run/{name}/pieces?GATE`: the first piece arrives while the script waits for the gate
/// file, the second once it is there.
async fn streams_in_pieces(name: &str) {
    let mut server = ServerBuilder::new().fixture(name).start().await;
    let gate = server.functions_dir().join("gate");
    let mut response = server
        .client
        .get(format!(
            "{}/run/{name}/pieces?{}",
            server.url,
            gate.to_str().expect("a path")
        ))
        .send()
        .await
        .expect("the answer begins");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let first = tokio::time::timeout(PATIENCE, response.chunk())
        .await
        .expect("a chunk in time")
        .expect("readable")
        .expect("a first chunk");
    assert_eq!(&first[..], b"one\n");
    assert!(!gate.exists(), "the script still waits");
    std::fs::write(&gate, "").expect("open the gate");
    let rest = tokio::time::timeout(PATIENCE, response.bytes())
        .await
        .expect("the rest in time")
        .expect("the rest");
    assert_eq!(&rest[..], b"two\n");
    server.stop_and_check();
}

#[tokio::test]
async fn a_sh_script_streams_its_body_as_it_writes_it() {
    streams_in_pieces("cgi-sh").await;
}

#[tokio::test]
async fn a_python_script_streams_its_body_as_it_writes_it() {
    streams_in_pieces("cgi-py").await;
}

#[tokio::test]
async fn what_is_not_a_cgi_response_is_a_502_that_says_why() {
    let mut server = ServerBuilder::new().fixture("cgi-sh").start().await;
    let (status, _, body) = send(&server, Method::GET, "/run/cgi-sh/nohead", vec![], &[]).await;
    assert_eq!(status, 502, "{}", text(&body));
    assert_eq!(
        message(&body),
        "function \"cgi-sh\" broke the protocol: its output has no CGI header block (a CGI \
         response begins with header lines such as \"Content-Type: text/plain\", then a blank \
         line); it begins with \"hello, no headers here\""
    );
    let (status, _, body) = send(&server, Method::GET, "/run/cgi-sh/bighead", vec![], &[]).await;
    assert_eq!(status, 502, "{}", text(&body));
    assert_eq!(
        message(&body),
        "function \"cgi-sh\" broke the protocol: its CGI header block is over 64 KiB"
    );
    // A script that fails before its header block: 500 with the end of its stderr.
    let (status, _, body) = send(&server, Method::GET, "/run/cgi-sh/fail", vec![], &[]).await;
    assert_eq!(status, 500, "{}", text(&body));
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        answer["error"]["message"],
        json!(
            "function \"cgi-sh\" exited with status 3; stderr ends with: the input was not to my liking"
        )
    );
    assert_eq!(
        answer["error"]["stderr"],
        json!([
            "first line of the complaint",
            "the input was not to my liking"
        ])
    );
    // The server goes on serving.
    let (status, _, _) = send(&server, Method::GET, "/run/cgi-sh", vec![], &[]).await;
    assert_eq!(status, 201);
    assert!(
        poll(|| async { server.function_pids().is_empty() }).await,
        "left running: {:?}",
        server.function_pids()
    );
    server.stop_and_check();
}

/// A CGI script given as it is: `main.sh` of function `name`, with `toml` after `mode = "cgi"`.
fn script(builder: ServerBuilder, name: &str, toml: &str, main: &str) -> ServerBuilder {
    builder
        .file(name, "main.sh", main)
        .toml(name, &format!("mode = \"cgi\"\n{toml}"))
}

#[tokio::test]
async fn malformed_header_blocks_are_refused() {
    let cases = [
        ("blank", "printf '\\nbody'", "begins with a blank line"),
        (
            "nofield",
            "printf 'X-Only: 1\\n\\nbody'",
            "none of Content-Type, Location and Status",
        ),
        (
            "status",
            "printf 'Status: 99 Low\\n\\n'",
            "\"Status: 99 Low\" is not a status",
        ),
        (
            "two",
            "printf 'Status: 200\\nStatus: 201\\n\\n'",
            "two Status lines",
        ),
        (
            "badline",
            "printf 'Content-Type: text/plain\\nnot a header\\n\\n'",
            "line 2 of its CGI header block is not a header",
        ),
        (
            "control",
            "printf 'Content-Type: a\\033b\\n\\n'",
            "control character",
        ),
        (
            "unended",
            "printf 'Content-Type: text/plain\\n'",
            "ended before the blank line",
        ),
        ("nothing", "true", "it wrote nothing"),
    ];
    let mut builder = ServerBuilder::new();
    for (name, main, _) in cases {
        builder = script(builder, name, "", &format!("{main}\n"));
    }
    let mut server = builder.start().await;
    for (name, _, expected) in cases {
        let (status, _, body) =
            send(&server, Method::GET, &format!("/run/{name}"), vec![], &[]).await;
        assert_eq!(status, 502, "{name}: {}", text(&body));
        let message = message(&body);
        assert!(
            message.starts_with(&format!("function {name:?} broke the protocol: "))
                && message.contains(expected),
            "{name}: {message}"
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn location_alone_redirects_and_hop_by_hop_headers_are_dropped() {
    let mut server = script(
        ServerBuilder::new(),
        "moved",
        "",
        "printf 'Location: /run/moved/there\\r\\nConnection: close\\r\\nContent-Length: 1\\r\\nX-Kept: yes\\r\\n\\r\\n'\n",
    )
    .start()
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let response = client
        .get(format!("{}/run/moved", server.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 302);
    assert_eq!(response.headers()["location"], "/run/moved/there");
    assert_eq!(response.headers()["x-kept"], "yes");
    assert_ne!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert!(
        response
            .headers()
            .get("content-length")
            .is_none_or(|v| v != "1")
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_script_that_hangs_is_killed_with_its_helpers_at_its_timeout() {
    let mut server = ServerBuilder::new()
        .fixture("cgi-sh")
        .toml("cgi-sh", "mode = \"cgi\"\ntimeout = 1\n")
        .start()
        .await;
    let (status, _, body) = send(&server, Method::GET, "/run/cgi-sh/hang", vec![], &[]).await;
    assert_eq!(status, 504, "{}", text(&body));
    assert_eq!(
        message(&body),
        "function \"cgi-sh\" did not answer within 1s; its process was killed"
    );
    // Past its timeout while streaming: the answer is cut short.
    let response = server
        .client
        .get(format!("{}/run/cgi-sh/forever", server.url))
        .send()
        .await
        .expect("the answer begins");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.bytes().await.is_err(),
        "an answer cut at the timeout is not a complete one"
    );
    assert!(
        poll(|| async { server.function_pids().is_empty() }).await,
        "left running: {:?}",
        server.function_pids()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_kills_the_process_group() {
    let mut server = ServerBuilder::new().fixture("cgi-sh").start().await;
    let mut response = server
        .client
        .get(format!("{}/run/cgi-sh/forever", server.url))
        .send()
        .await
        .expect("the answer begins");
    let chunk = tokio::time::timeout(PATIENCE, response.chunk())
        .await
        .expect("a chunk in time")
        .expect("readable")
        .expect("a chunk");
    assert!(chunk.starts_with(b"tick\n"));
    // The script and its helper `sleep 300` run.
    assert!(
        poll(|| async { server.pids_of("cgi-sh").len() >= 2 }).await,
        "{:?}",
        server.pids_of("cgi-sh")
    );
    drop(response);
    assert!(
        poll(|| async { server.function_pids().is_empty() }).await,
        "left running: {:?}",
        server.function_pids()
    );
    // The count is taken down just after the group is reaped: wait for it too.
    assert!(
        poll(|| async {
            server
                .function_info("cgi-sh")
                .await
                .is_some_and(|info| info["processes"] == 0)
        })
        .await,
        "{:?}",
        server.function_info("cgi-sh").await
    );
    let (status, _, _) = send(&server, Method::GET, "/run/cgi-sh", vec![], &[]).await;
    assert_eq!(status, 201);
    server.stop_and_check();
}

#[tokio::test]
async fn instances_and_queue_bound_scripts_as_in_mode_exec() {
    let mut server = ServerBuilder::new()
        .fixture("cgi-sh")
        .toml("cgi-sh", "mode = \"cgi\"\ninstances = 1\nqueue = 0\n")
        .start()
        .await;
    let gate = server.functions_dir().join("gate");
    let mut first = server
        .client
        .get(format!(
            "{}/run/cgi-sh/pieces?{}",
            server.url,
            gate.to_str().expect("a path")
        ))
        .send()
        .await
        .expect("the answer begins");
    assert_eq!(first.status().as_u16(), 200);
    // Its one process is busy until the gate opens.
    let (status, headers, body) = send(&server, Method::GET, "/run/cgi-sh", vec![], &[]).await;
    assert_eq!(status, 503, "{}", text(&body));
    assert!(message(&body).contains("instances = 1"), "{}", text(&body));
    assert!(headers.get("retry-after").is_some());
    std::fs::write(&gate, "").expect("open the gate");
    let mut rest = Vec::new();
    while let Some(chunk) = first.chunk().await.expect("readable") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"one\ntwo\n");
    let (status, _, _) = send(&server, Method::GET, "/run/cgi-sh", vec![], &[]).await;
    assert_eq!(status, 201);
    server.stop_and_check();
}

/// The environment a script saw (`/env`), as a map.
async fn environment_of(server: &Server, headers: &[(&str, &str)]) -> BTreeMap<String, String> {
    let (status, _, body) = send(server, Method::GET, "/run/cgi-sh/env", vec![], headers).await;
    assert_eq!(status, 200, "{}", text(&body));
    text(&body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_api_key_never_becomes_a_variable() {
    let mut server = ServerBuilder::new()
        .fixture("cgi-sh")
        .args(&["--api-key", "k-secret-one,k-secret-two"])
        .start()
        .await;
    let env = environment_of(
        &server,
        &[
            ("x-api-key", "k-secret-one"),
            ("authorization", "Basic dXNlcjpwdw=="),
            ("x-other", "kept"),
            ("proxy", "http://evil.example"),
            ("x_other", "forged"),
        ],
    )
    .await;
    assert!(!env.contains_key("HTTP_X_API_KEY"), "{env:?}");
    assert!(
        env.values().all(|v| !v.contains("k-secret")),
        "the key is nowhere: {env:?}"
    );
    assert_eq!(
        env.get("HTTP_AUTHORIZATION").map(String::as_str),
        Some("Basic dXNlcjpwdw=="),
        "an Authorization that is not the key is the script's"
    );
    assert_eq!(env.get("HTTP_X_OTHER").map(String::as_str), Some("kept"));
    assert!(!env.contains_key("HTTP_PROXY"), "httpoxy: {env:?}");
    let env = environment_of(&server, &[("authorization", "Bearer k-secret-two")]).await;
    assert!(!env.contains_key("HTTP_AUTHORIZATION"), "{env:?}");
    assert!(env.values().all(|v| !v.contains("k-secret")), "{env:?}");
    // Nothing of shs's own environment either.
    assert!(
        env.keys().all(|k| !k.starts_with("SHS_")
            || k == "SHS_REQUEST_ID"
            || k == "SHS_URL"
            || k == "SHS_FUNCTION"),
        "{env:?}"
    );
    let (status, _, _) = send(&server, Method::GET, "/run/cgi-sh/env", vec![], &[]).await;
    assert_eq!(status, 401);
    server.stop_and_check();
}

#[tokio::test]
async fn events_reach_a_script_as_a_post_and_an_error_status_fails_them() {
    let record = "cat >> received.log; printf '\\n%s\\n' \"$CONTENT_TYPE $REQUEST_METHOD\" >> received.log\n\
                  printf 'Content-Type: text/plain\\n\\nthanks\\n'\n";
    let mut server = script(
        script(
            ServerBuilder::new(),
            "taker",
            "subscribe = [\"cgi.test\"]\n",
            record,
        ),
        "refuser",
        "subscribe = [\"cgi.refused\"]\n",
        "cat > /dev/null; printf 'Status: 503 Busy\\nContent-Type: text/plain\\n\\nno\\n'\n",
    )
    .start()
    .await;
    server.wait_ready().await;
    let answer = server.publish("cgi.test", json!({"n": 1})).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let log = std::fs::read_to_string(server.functions_dir().join("taker/received.log"))
        .expect("the script wrote its log");
    let (event, how) = log.trim().split_once('\n').expect("two lines");
    let event: Value = serde_json::from_str(event).expect("the event");
    assert_eq!(event["type"], "cgi.test");
    assert_eq!(event["payload"], json!({"n": 1}));
    assert_eq!(how, "application/cloudevents+json POST");
    let answer = server.publish("cgi.refused", json!({})).await;
    assert_eq!(answer.body["delivered"], 0, "{answer:?}");
    let errors = answer.body["errors"].to_string();
    assert!(
        errors.contains("function \\\"refuser\\\" answered with status 503"),
        "{errors}"
    );
    server.stop_and_check();
}
