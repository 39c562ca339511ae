//! HTTP functions: `/run/{name}[/{tail}]` with every method, the HTTP request passed through
//! as `http` (method, path, query, headers, raw body), and the `input` rules.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Answer, Server, ServerBuilder};

/// Sends `method path` with `body` and `headers`, straight from the client (no defaults).
async fn send(
    server: &Server,
    method: Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = server
        .client
        .request(method, format!("{}{path}", server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .expect("the request is answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

#[tokio::test]
async fn every_method_and_a_sub_path_reach_the_function() {
    let mut server = ServerBuilder::new().fixture("http-echo").start().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let answer = send(
            &server,
            method.clone(),
            "/run/http-echo/a/b%20c/?x=1&y=two&x=3",
            Vec::new(),
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "{method}: {answer:?}");
        let http = &answer.body["http"];
        assert_eq!(http["method"], json!(method.as_str()));
        assert_eq!(http["path"], json!("/a/b%20c/"), "the tail as it was sent");
        assert_eq!(http["query"], json!("x=1&y=two&x=3"));
        assert_eq!(http["remote_addr"], json!("127.0.0.1"));
        assert_eq!(answer.body["input"], json!({}), "an empty body is {{}}");
    }
    // Without a tail or a query.
    let answer = send(&server, Method::GET, "/run/http-echo", Vec::new(), &[]).await;
    assert_eq!(answer.body["http"]["path"], json!("/"));
    assert_eq!(answer.body["http"]["query"], json!(""));
    let answer = send(&server, Method::GET, "/run/http-echo/", Vec::new(), &[]).await;
    assert_eq!(answer.body["http"]["path"], json!("/"));
    // HEAD is GET without the body.
    let head = send(&server, Method::HEAD, "/run/http-echo/x", Vec::new(), &[]).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.body, json!(""), "no body");
    assert_eq!(head.header("content-type"), Some("application/json"));
    // Another method on the same path is 405 saying which ones work.
    let trace = send(&server, Method::TRACE, "/run/http-echo/x", Vec::new(), &[]).await;
    assert_eq!(trace.status, 405, "{trace:?}");
    assert!(trace.header("allow").is_some_and(|a| a.contains("PATCH")));
    // An unknown function is 404 on a sub-path too, and a malformed name 400.
    let missing = send(&server, Method::GET, "/run/nope/a", Vec::new(), &[]).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    let bad = send(&server, Method::GET, "/run/n%20pe/a", Vec::new(), &[]).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn a_form_is_passed_raw_and_its_input_is_null() {
    let mut server = ServerBuilder::new().fixture("http-echo").start().await;
    let answer = send(
        &server,
        Method::POST,
        "/run/http-echo",
        b"a=1&b=two+words&c=%C3%A9".to_vec(),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("X-Thing", "v1"),
            ("x-thing", "v2"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["input"], Value::Null);
    let http = &answer.body["http"];
    assert_eq!(http["method"], json!("POST"));
    assert_eq!(http["body"], json!("a=1&b=two+words&c=%C3%A9"));
    assert_eq!(
        http["headers"]["content-type"],
        json!("application/x-www-form-urlencoded")
    );
    assert_eq!(
        http["headers"]["x-thing"],
        json!("v1, v2"),
        "joined, in order"
    );
    assert!(http.get("body_base64").is_none());
    // What `curl -d '{...}'` sends (the form content type) is still JSON input, as in v1.
    let curl = send(
        &server,
        Method::POST,
        "/run/http-echo",
        br#"{"name":"Ada"}"#.to_vec(),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(curl.body["input"], json!({"name": "Ada"}));
    server.stop_and_check();
}

#[tokio::test]
async fn every_byte_value_arrives_as_sent() {
    let mut server = ServerBuilder::new().fixture("http-echo").start().await;
    let bytes: Vec<u8> = (0..=255).collect();
    let answer = send(
        &server,
        Method::PUT,
        "/run/http-echo/blob",
        bytes.clone(),
        &[("content-type", "application/octet-stream")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["input"], Value::Null);
    assert!(answer.body["http"].get("body").is_none(), "not UTF-8");
    assert!(answer.body["http"]["body_base64"].is_string());
    assert_eq!(answer.body["body_bytes"], json!(bytes));
    // UTF-8 with characters that end lines for some readers still arrives whole.
    let text = "line\r\nnext\u{2028}sep\u{85}\0end";
    let answer = send(
        &server,
        Method::POST,
        "/run/http-echo",
        text.as_bytes().to_vec(),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(answer.body["http"]["body"], json!(text));
    server.stop_and_check();
}

#[tokio::test]
async fn the_raw_json_body_is_sent_only_when_asked_for() {
    let raw = br#"{ "b" :1, "a":[ 1.50, 2e3 ],"u":"\u00e9"}"#;
    let mut server = ServerBuilder::new()
        .fixture("http-echo")
        .fixture_as("http-echo", "raw-toml")
        .toml("raw-toml", "raw_body = true\n")
        .fixture_as("http-echo", "raw-init")
        .toml("raw-init", "env = { RAW_BODY = \"1\" }\n")
        .start()
        .await;
    let plain = send(
        &server,
        Method::POST,
        "/run/http-echo",
        raw.to_vec(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(
        plain.body["input"],
        json!({"b": 1, "a": [1.5, 2000.0], "u": "é"})
    );
    assert!(plain.body["http"].get("body").is_none(), "{plain:?}");
    assert!(plain.body["http"].get("body_base64").is_none());
    for name in ["raw-toml", "raw-init"] {
        let answer = send(
            &server,
            Method::POST,
            &format!("/run/{name}"),
            raw.to_vec(),
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {answer:?}");
        assert_eq!(answer.body["body_bytes"], json!(raw.to_vec()), "{name}");
        assert_eq!(answer.body["input"]["b"], json!(1));
    }
    server.stop_and_check();
}

#[tokio::test]
async fn input_follows_the_content_type() {
    let mut server = ServerBuilder::new().fixture("http-echo").start().await;
    let run = |body: &'static [u8], ct: Option<&'static str>| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
            send(
                server,
                Method::POST,
                "/run/http-echo",
                body.to_vec(),
                &headers,
            )
            .await
        }
    };
    assert_eq!(run(b"[1,2]", None).await.body["input"], json!([1, 2]));
    assert_eq!(run(b"hello", None).await.body["input"], Value::Null);
    assert_eq!(
        run(b"<a/>", Some("text/xml")).await.body["input"],
        Value::Null
    );
    assert_eq!(
        run(br#"{"a":1}"#, Some("application/cloudevents+json"))
            .await
            .body["input"],
        json!({"a": 1})
    );
    let bad = run(b"{nope", Some("application/json")).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(
        bad.message().starts_with(
            "the request body is not valid JSON (its Content-Type is application/json)"
        ),
        "{}",
        bad.message()
    );
    let deep = run(
        Box::leak(
            format!("{}{}", "[".repeat(200), "]".repeat(200))
                .into_bytes()
                .into_boxed_slice(),
        ),
        None,
    )
    .await;
    assert_eq!(deep.status, 400, "{deep:?}");
    // The function still answers.
    assert_eq!(run(b"", None).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn the_api_key_does_not_reach_the_function() {
    let mut server = ServerBuilder::new()
        .fixture("http-echo")
        .args(&["--api-key", "k-one,k-two"])
        .start()
        .await;
    let by_header = send(
        &server,
        Method::GET,
        "/run/http-echo",
        Vec::new(),
        &[
            ("x-api-key", "k-two"),
            ("authorization", "Basic dXNlcjpwdw=="),
        ],
    )
    .await;
    assert_eq!(by_header.status, 200, "{by_header:?}");
    let headers = &by_header.body["http"]["headers"];
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    assert_eq!(
        headers["authorization"],
        json!("Basic dXNlcjpwdw=="),
        "an Authorization that is not the key is the function's"
    );
    let by_bearer = send(
        &server,
        Method::GET,
        "/run/http-echo",
        Vec::new(),
        &[("authorization", "Bearer k-one")],
    )
    .await;
    assert_eq!(by_bearer.status, 200, "{by_bearer:?}");
    let text = by_bearer.body.to_string();
    assert!(!text.contains("k-one"), "{text}");
    assert!(
        by_bearer.body["http"]["headers"]
            .get("authorization")
            .is_none()
    );
    let refused = send(&server, Method::GET, "/run/http-echo", Vec::new(), &[]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    server.stop_and_check();
}

/// Invokes `http-answer` with `input` and returns the raw answer: status, headers, bytes.
async fn answer_with(server: &Server, input: Value) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    // Redirects are answers to look at, not to follow.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let resp = client
        .post(format!("{}/run/http-answer", server.url))
        .header("content-type", "application/json")
        .body(input.to_string())
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn an_http_response_sets_status_headers_and_body() {
    let mut server = ServerBuilder::new().fixture("http-answer").start().await;
    let (status, headers, body) = answer_with(
        &server,
        json!({"result": {"http_response": {
            "status": 201,
            "headers": {"Content-Type": "text/html; charset=utf-8",
                        "set-cookie": ["a=1; Path=/", "b=2; Path=/"], "location": "/x",
                        "connection": "close", "transfer-encoding": "chunked",
                        "content-length": "999"},
            "body": "<p>hi</p>"}}}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body, b"<p>hi</p>");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["location"], "/x");
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("text"))
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"], "one line each");
    assert_eq!(
        headers["content-length"], "9",
        "the real length, not the function's"
    );
    assert!(headers.get("connection").is_none_or(|c| c != "close"));
    assert!(headers.get("x-request-id").is_some());

    // Defaults: text for `body`, bytes for `body_base64`, nothing without a body.
    let (status, headers, body) = answer_with(
        &server,
        json!({"result": {"http_response": {"status": 200, "body": "plain"}}}),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"plain"[..]));
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let bytes: Vec<u8> = (0..=255).collect();
    let (status, headers, body) = answer_with(
        &server,
        json!({"result": {"http_response": {"status": 200}}, "body_bytes": bytes}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes, "every byte value");
    assert_eq!(headers["content-type"], "application/octet-stream");
    let (status, headers, body) = answer_with(
        &server,
        json!({"result": {"http_response": {"status": 302, "headers": {"location": "/there"}}}}),
    )
    .await;
    assert_eq!((status, body.len()), (302, 0));
    assert_eq!(headers["location"], "/there");
    assert!(headers.get("content-type").is_none());

    // Any other result is JSON with 200, as before.
    for result in [
        json!({"http_response": {"status": 201}, "other": 1}),
        json!({"status": 201}),
        json!([{"http_response": {"status": 201}}]),
    ] {
        let (status, headers, body) = answer_with(&server, json!({ "result": result })).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).expect("JSON"),
            result
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn a_malformed_http_response_is_a_502_that_says_why() {
    let mut server = ServerBuilder::new().fixture("http-answer").start().await;
    for (response, says) in [
        (json!(7), "\"http_response\" must be an object"),
        (json!({}), "\"status\" is missing"),
        (
            json!({"status": 99}),
            "\"status\" must be an integer from 100 to 599",
        ),
        (
            json!({"status": "200"}),
            "\"status\" must be an integer from 100 to 599",
        ),
        (
            json!({"status": 200, "headers": {"x": 5}}),
            "\"headers\".\"x\" must be a string or an array of strings",
        ),
        (
            json!({"status": 200, "headers": {"x": "a\nb"}}),
            "the value of header \"x\" is not valid",
        ),
        (
            json!({"status": 200, "body": "a", "body_base64": "YQ=="}),
            "at most one",
        ),
        (
            json!({"status": 200, "body_base64": "%%%"}),
            "not valid base64",
        ),
        (
            json!({"status": 200, "body": 5}),
            "\"body\" must be a string",
        ),
    ] {
        let answer = send(
            &server,
            Method::POST,
            "/run/http-answer",
            json!({"result": {"http_response": response}})
                .to_string()
                .into_bytes(),
            &[],
        )
        .await;
        assert_eq!(answer.status, 502, "{response}: {answer:?}");
        assert!(
            answer
                .message()
                .starts_with("function \"http-answer\" answered a malformed http_response: "),
            "{}",
            answer.message()
        );
        assert!(
            answer.message().contains(says),
            "{says}: {}",
            answer.message()
        );
        assert_eq!(answer.body["error"]["function"], json!("http-answer"));
    }
    // The process is fine and keeps answering.
    let (status, _, _) = answer_with(&server, json!({"result": {"ok": true}})).await;
    assert_eq!(status, 200);
    server.stop_and_check();
}

/// Starts `POST /run/{name}` with `input`, and returns the response once its head is in.
async fn start_stream(server: &Server, name: &str, input: Value) -> reqwest::Response {
    server
        .client
        .post(format!("{}/run/{name}", server.url))
        .header("content-type", "application/json")
        .body(input.to_string())
        .send()
        .await
        .expect("the answer begins")
}

/// The next chunk of `response`, within the harness's patience.
async fn next_chunk(response: &mut reqwest::Response) -> Option<Vec<u8>> {
    tokio::time::timeout(crate::harness::PATIENCE, response.chunk())
        .await
        .expect("a chunk in time")
        .expect("a readable stream")
        .map(|b| b.to_vec())
}

#[tokio::test]
async fn chunks_arrive_before_the_invoke_ends() {
    let mut server = ServerBuilder::new().fixture("http-stream").start().await;
    let gate = server.functions_dir().join("gate");
    let mut response = start_stream(
        &server,
        "http-stream",
        json!({"chunks": 3, "status": 201, "headers": {"x-streamed": ["yes", "really"]},
               "gate": gate.to_str().expect("a path")}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.headers().get_all("x-streamed").iter().count(), 2);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers().get("x-request-id").is_some());
    // The first chunk is here while the function still waits at its gate.
    let first = next_chunk(&mut response).await.expect("a first chunk");
    assert_eq!(first, b"chunk 0\n");
    assert!(!gate.exists());
    std::fs::write(&gate, "").expect("open the gate");
    let mut rest = Vec::new();
    while let Some(chunk) = next_chunk(&mut response).await {
        rest.extend(chunk);
    }
    assert_eq!(
        rest, b"chunk 1\nchunk 2\n",
        "the answer to the invoke ends the stream"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn server_sent_events_and_bytes_stream_through() {
    let mut server = ServerBuilder::new().fixture("http-stream").start().await;
    let response = start_stream(
        &server,
        "http-stream",
        json!({"chunks": 4, "sse": true,
               "headers": {"content-type": "text/event-stream", "cache-control": "no-cache"}}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let body = response.text().await.expect("the events");
    assert_eq!(body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");

    let response = start_stream(
        &server,
        "http-stream",
        json!({"chunks": 256, "binary": true}),
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let bytes = response.bytes().await.expect("the bytes").to_vec();
    assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    server.stop_and_check();
}

#[tokio::test]
async fn a_malformed_first_chunk_is_a_502_and_cancels() {
    let mut server = ServerBuilder::new().fixture("http-stream").start().await;
    let answer = send(
        &server,
        Method::POST,
        "/run/http-stream",
        json!({"chunks": -1, "delay": 0.01, "status": 700})
            .to_string()
            .into_bytes(),
        &[],
    )
    .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().starts_with(
            "function \"http-stream\" answered a malformed stream: \"status\" must be an integer from 100 to 599"
        ),
        "{}",
        answer.message()
    );
    server.wait_for_log("got cancel for").await;
    server.wait_for_log("chunks (cancelled)").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_and_a_slow_one_holds_the_function_back() {
    let mut server = ServerBuilder::new()
        .fixture("http-stream")
        .toml("http-stream", "concurrency = 4\n")
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let before = server.rss_kib();
    // 64 KiB chunks as fast as the function can write them, to a client that reads one and
    // then nothing: without back-pressure the supervisor would hold gigabytes.
    let mut response =
        start_stream(&server, "http-stream", json!({"chunks": -1, "size": 65536})).await;
    assert_eq!(response.status().as_u16(), 200);
    next_chunk(&mut response).await.expect("a first chunk");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // a slow reader, not a wait for an outcome
    let during = server.rss_kib();
    assert!(
        during < before + 64 * 1024,
        "the supervisor grew from {before} KiB to {during} KiB"
    );
    assert!(
        !server.logs().contains("streamed 1000 chunks"),
        "the function was not held back: {}",
        server.logs()
    );
    // Others are served meanwhile.
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    // The client goes away: the function gets `cancel` with the invoke's id, and stops.
    drop(response);
    server.wait_for_log("got cancel for").await;
    server.wait_for_log("chunks (cancelled)").await;
    let again = start_stream(&server, "http-stream", json!({"chunks": 2})).await;
    assert_eq!(again.text().await.expect("a body"), "chunk 0\nchunk 1\n");
    server.stop_and_check();
}
