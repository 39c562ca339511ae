//! `GET /stream`, the live updates the dashboard and `shs logs -f` follow: what it sends, that
//! it ends when the server shuts down (without holding the shutdown up), that the number of
//! streams is bounded, and that a reader too slow for a flooding function costs bounded memory
//! and is told what it missed. Also the dashboard's shell without a browser: its headers, and
//! `--ui off`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{PATIENCE, Server, ServerBuilder};

/// A raw connection that asked for `path` (so that a test controls how fast it is read).
async fn open(server: &Server, path: &str) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream
}

/// Reads from `stream` until what was read holds `needle` (returns all of it), the stream
/// ends, or [`PATIENCE`] passes.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut text = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&text).contains(needle) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn a_stream_sends_state_and_log_lines_and_ends_when_the_server_stops() {
    // A grace period far beyond the harness's patience: a stream that held the shutdown up
    // would have the server killed, and the check of its exit fail.
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--shutdown-grace", "120"])
        .start()
        .await;
    server.wait_ready().await;
    let mut stream = open(
        &server,
        "/stream?topics=functions,function:echo,logs:echo&tail=0",
    )
    .await;
    let head = read_until(&mut stream, "event: function\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(
        head.contains("event: functions\ndata: {\"functions\":[{\"name\":\"echo\""),
        "{head}"
    );
    assert!(!head.contains("event: log\n"), "tail=0: no old lines");

    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".to_owned()),
            &[("x-request-id", "streamed-1")],
        )
        .await;
    assert_eq!(answer.status, 200);
    let text = read_until(&mut stream, "\"request_id\":\"streamed-1\"").await;
    let line = text
        .lines()
        .find(|l| l.contains("streamed-1"))
        .unwrap_or_else(|| panic!("the log line: {text}"));
    let data: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("data: ")).expect("JSON data");
    assert_eq!(data["function"], "echo");
    assert_eq!(data["message"], "echo got a request");
    // The invocation shows in the next state of the functions.
    let text = read_until(&mut stream, "\"invocations\":1").await;
    assert!(text.contains("\"invocations\":1"), "{text}");

    // `shs logs -f` follows the same stream, and says when the server goes.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_shs"))
        .args(["logs", "echo", "-f", "--tail", "1", "--url", &server.url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shs logs -f");
    // Wait until the follower has its stream: its first line is printed.
    let mut stdout = follow.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    })
    .await
    .expect("read");
    assert!(first.ends_with("] echo got a request"), "{first}");

    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let text = read_until(&mut stream, "event: bye").await;
    assert!(
        text.contains("event: bye\ndata: {\"reason\":\"the server is shutting down\"}"),
        "{text}"
    );
    let output = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .expect("join")
        .expect("shs logs -f ends");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is shutting down: stopped following"),
        "{stderr}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn streams_are_bounded_in_number() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let mut open_streams = Vec::new();
    for _ in 0..64 {
        let mut stream = open(&server, "/stream?topics=functions").await;
        let head = read_until(&mut stream, "event: functions").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open_streams.push(stream);
    }
    let refused = server.get("/stream?topics=functions").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.message().contains("64 streams are open"),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("5"));
    // Everything else goes on.
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    // A stream that closes frees its place.
    drop(open_streams.pop());
    let deadline = Instant::now() + PATIENCE;
    let freed = loop {
        let mut stream = open(&server, "/stream?topics=functions").await;
        let head = read_until(&mut stream, "\r\n").await;
        if head.starts_with("HTTP/1.1 200") {
            open_streams.push(stream);
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(freed, "a place was freed");
    drop(open_streams);
    server.stop_and_check();
}

#[tokio::test]
async fn a_slow_reader_of_a_flood_costs_bounded_memory_and_is_told_what_it_missed() {
    let mut server = ServerBuilder::new()
        .fixture("flood-stderr")
        .toml("flood-stderr", "min_instances = 1\n")
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let mut stream = open(&server, "/stream?topics=logs:flood-stderr&tail=0").await;
    let head = read_until(&mut stream, "retry: 2000").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let before = server.rss_kib();
    // 60 MiB of log lines while the stream is not read at all.
    let answer = server.run("flood-stderr", json!({"mb": 60})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let after = server.rss_kib();
    assert!(
        after < before + 64 * 1024,
        "memory stayed bounded: {after} KiB, {before} KiB before"
    );
    // Others are served meanwhile.
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    // Read now: what the socket held, then a marker of the lines the ring dropped meanwhile.
    let text = read_until(&mut stream, "event: skipped").await;
    let marker = text
        .split("event: skipped\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no skipped marker in {} bytes", text.len()));
    let marker: serde_json::Value = serde_json::from_str(marker).expect("JSON");
    assert_eq!(marker["function"], "flood-stderr");
    assert!(
        marker["lines"].as_u64().is_some_and(|n| n > 1000),
        "{marker}"
    );
    drop(stream);
    server.stop_and_check();
}

#[tokio::test]
async fn the_dashboard_is_served_with_its_policy_and_can_be_turned_off() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    let page = server.get("/ui/").await;
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let script = server.get("/ui/app.js").await;
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    // Only the dashboard's own files: no way out of it.
    for path in [
        "/ui/..%2FCargo.toml",
        "/ui/%2e%2e",
        "/ui/APP.JS",
        "/ui/app.js%00",
    ] {
        assert_eq!(server.get(path).await.status, 404, "{path}");
    }
    server.stop_and_check();

    let mut server = ServerBuilder::new()
        .fixture("echo")
        .env("SHS_UI", "off")
        .start()
        .await;
    for path in ["/ui", "/ui/", "/ui/app.js"] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.message(), "the dashboard is off (--ui off)");
    }
    // The data routes stay.
    server.wait_ready().await;
    assert_eq!(server.get("/functions/echo").await.status, 200);
    server.stop_and_check();
}
