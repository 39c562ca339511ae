//! Asynchronous invocation: `Prefer: respond-async` on `/run` (202, `Location`, the result at
//! `GET /invocations/{id}`), a `kill -9` between the 202 and the run, retries then `failed`
//! (a dead letter of kind `invocation`, retried and deleted like an event's), the caps on
//! what may be queued, bad input, and the CLI (`shs invoke --async`, `shs invocations`).

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Answer, Server, ServerBuilder, poll};

/// `POST /run/{name}` with `Prefer: respond-async`.
pub async fn invoke_async(server: &Server, name: &str, input: Value) -> Answer {
    invoke_async_with(server, name, input, &[]).await
}

/// [`invoke_async`] with more headers.
pub async fn invoke_async_with(
    server: &Server,
    name: &str,
    input: Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut all = vec![
        ("prefer", "respond-async"),
        ("content-type", "application/json"),
    ];
    all.extend_from_slice(headers);
    server
        .request(
            reqwest::Method::POST,
            &format!("/run/{name}"),
            Some(input.to_string()),
            &all,
        )
        .await
}

/// The id of an accepted invocation.
pub fn accepted(answer: &Answer) -> String {
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.body["status"], "accepted", "{answer:?}");
    answer.body["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_owned()
}

/// Polls `GET /invocations/{id}` until its state is `state`; the invocation then.
pub async fn wait_state(server: &Server, id: &str, state: &str) -> Value {
    let path = format!("/invocations/{id}");
    let reached = poll(|| async { server.get(&path).await.body["state"] == state }).await;
    let last = server.get(&path).await.body;
    assert!(
        reached,
        "invocation {id} never {state}: {last}; log:\n{}",
        server.logs()
    );
    last
}

/// The lines `job` recorded.
pub fn received(server: &Server, name: &str) -> Vec<Value> {
    std::fs::read_to_string(server.functions_dir().join(name).join("received.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn respond_async_answers_202_then_the_result_is_kept() {
    let mut server = ServerBuilder::new().fixture("job").start().await;
    server.wait_ready().await;
    let answer = server
        .request(
            reqwest::Method::PUT,
            "/run/job/orders/7?x=1",
            Some(json!({"n": 1}).to_string()),
            &[
                ("prefer", "respond-async"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    let id = accepted(&answer);
    assert_eq!(answer.header("preference-applied"), Some("respond-async"));
    assert_eq!(
        answer.header("location"),
        Some(format!("/invocations/{id}").as_str())
    );
    let done = wait_state(&server, &id, "succeeded").await;
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["function"], "job");
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        done["result"],
        json!({"ok": true, "input": {"n": 1}, "attempt": 1})
    );
    assert!(done.get("error").is_none(), "{done}");
    assert!(
        done["accepted_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        done["finished_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let lines = received(&server, "job");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["id"],
        id.as_str(),
        "context.request_id is the invocation id"
    );
    assert_eq!(
        (&lines[0]["method"], &lines[0]["path"]),
        (&json!("PUT"), &json!("/orders/7"))
    );

    let list = server
        .get("/invocations?function=job&state=succeeded")
        .await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["invocations"][0]["id"], id.as_str());
    let none = server.get("/invocations?function=other").await;
    assert_eq!(none.body["invocations"], json!([]));
    server.stop_and_check();
}

#[tokio::test]
async fn bad_asynchronous_requests_are_refused_and_nothing_is_queued() {
    let mut server = ServerBuilder::new().fixture("job").start().await;
    server.wait_ready().await;
    let unknown = invoke_async(&server, "nobody", json!({})).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.message().contains("nobody"), "{unknown:?}");
    let bad_json = server
        .request(
            reqwest::Method::POST,
            "/run/job",
            Some("{not json".into()),
            &[
                ("prefer", "respond-async"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(bad_json.status, 400, "{bad_json:?}");
    let missing = server
        .get("/invocations/0193a1b2-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.message().contains("no invocation"), "{missing:?}");
    let forged = server.get("/invocations/..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(forged.status, 404, "{forged:?}");
    let bad_state = server.get("/invocations?state=sleeping").await;
    assert_eq!(bad_state.status, 400, "{bad_state:?}");
    assert!(
        bad_state.message().contains("queued, running"),
        "{bad_state:?}"
    );
    let bad_limit = server.get("/invocations?limit=many").await;
    assert_eq!(bad_limit.status, 400, "{bad_limit:?}");
    assert_eq!(
        server.get("/invocations").await.body["invocations"],
        json!([])
    );
    // The server goes on serving.
    assert_eq!(server.run("job", json!({"sync": true})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn an_invocation_accepted_before_a_kill_9_runs_after_the_restart() {
    let builder = ServerBuilder::new().fixture("job");
    let dir = builder.functions_dir().join("job");
    let mut server = builder.start().await;
    server.wait_ready().await;
    // The function holds every invoke: the invocation cannot end before the kill.
    std::fs::write(dir.join("hold"), "").expect("hold");
    let id = accepted(&invoke_async(&server, "job", json!({"n": 9})).await);
    server.kill9();
    std::fs::remove_file(dir.join("hold")).expect("release");
    server.restart();
    let done = wait_state(&server, &id, "succeeded").await;
    assert_eq!(done["result"]["input"], json!({"n": 9}));
    let lines = received(&server, "job");
    assert_eq!(
        lines.iter().filter(|l| l["id"] == id.as_str()).count(),
        1,
        "{lines:?}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_failing_invocation_is_retried_then_failed_and_a_dead_letter() {
    let builder = ServerBuilder::new()
        .fixture("job")
        .toml("job", "max_attempts = 3\nretry_backoff = 0.05\n")
        .fixture_as("job", "flaky-job")
        .toml(
            "flaky-job",
            "max_attempts = 3\nretry_backoff = 0.05\nenv = { FAILS = \"2\" }\n",
        );
    let dir = builder.functions_dir().join("job");
    let mut server = builder.start().await;
    server.wait_ready().await;

    // Fails twice, then succeeds on its third attempt.
    let flaky = accepted(&invoke_async(&server, "flaky-job", json!({"k": 1})).await);
    let done = wait_state(&server, &flaky, "succeeded").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["attempt_log"].as_array().map(Vec::len), Some(3));
    assert_eq!(done["attempt_log"][0]["status"], 500);
    assert_eq!(done["attempt_log"][2]["status"], 200);

    // Always fails: three attempts, then failed.
    std::fs::write(dir.join("broken"), "").expect("break");
    let id = accepted(&invoke_async(&server, "job", json!({"k": 2})).await);
    let failed = wait_state(&server, &id, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["error"]["status"], 500, "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken (attempt 3)")),
        "{failed}"
    );
    assert!(failed.get("result").is_none(), "{failed}");
    assert_eq!(failed["dead_letter"], id.as_str());

    // Listed with the dead letters, kind `invocation`.
    let letters = server.get("/events/dead-letters?kind=invocation").await;
    assert_eq!(letters.status, 200, "{letters:?}");
    let letter = &letters.body["dead_letters"][0];
    assert_eq!(letter["kind"], "invocation");
    assert_eq!(letter["id"], id.as_str());
    assert_eq!(letter["function"], "job");
    assert_eq!(letter["attempts"].as_array().map(Vec::len), Some(3));
    let events_only = server.get("/events/dead-letters?kind=event").await;
    assert_eq!(events_only.body["dead_letters"], json!([]));
    let bad_kind = server.get("/events/dead-letters?kind=email").await;
    assert_eq!(bad_kind.status, 400, "{bad_kind:?}");

    // Retried the way an event's dead letter is, it runs again and succeeds.
    std::fs::remove_file(dir.join("broken")).expect("mend");
    let retried = server
        .post(&format!("/events/dead-letters/{id}/retry"), "")
        .await;
    assert_eq!(retried.status, 200, "{retried:?}");
    let done = wait_state(&server, &id, "succeeded").await;
    assert_eq!(
        done["attempt_log"].as_array().map(Vec::len),
        Some(4),
        "{done}"
    );
    assert!(done.get("error").is_none(), "{done}");

    // Another one fails, and is deleted.
    std::fs::write(dir.join("broken"), "").expect("break");
    let doomed = accepted(&invoke_async(&server, "job", json!({"k": 3})).await);
    wait_state(&server, &doomed, "failed").await;
    let deleted = server
        .request(
            reqwest::Method::DELETE,
            &format!("/events/dead-letters/{doomed}"),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        server.get(&format!("/invocations/{doomed}")).await.status,
        404
    );
    let again = server
        .post(&format!("/events/dead-letters/{doomed}/retry"), "")
        .await;
    assert_eq!(again.status, 404, "{again:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn queued_invocations_are_capped_per_function_and_in_all() {
    let builder = ServerBuilder::new()
        .fixture("job")
        .fixture_as("job", "other")
        .args(&[
            "--max-queued-invocations",
            "2",
            "--max-queued-invocations-total",
            "3",
        ]);
    let dirs = [
        builder.functions_dir().join("job"),
        builder.functions_dir().join("other"),
    ];
    let mut server = builder.start().await;
    server.wait_ready().await;
    for dir in &dirs {
        std::fs::write(dir.join("hold"), "").expect("hold");
    }
    let first = accepted(&invoke_async(&server, "job", json!({"n": 1})).await);
    accepted(&invoke_async(&server, "job", json!({"n": 2})).await);
    let over = invoke_async(&server, "job", json!({"n": 3})).await;
    assert_eq!(over.status, 429, "{over:?}");
    assert!(over.message().contains("2 invocations queued"), "{over:?}");
    assert_eq!(over.body["error"]["function"], "job");
    assert_eq!(over.header("retry-after"), Some("1"));
    accepted(&invoke_async(&server, "other", json!({"n": 4})).await);
    let full = invoke_async(&server, "other", json!({"n": 5})).await;
    assert_eq!(full.status, 503, "{full:?}");
    assert!(
        full.message().contains("3 invocations are queued"),
        "{full:?}"
    );
    // Synchronous calls are not capped by this.
    for dir in &dirs {
        std::fs::remove_file(dir.join("hold")).expect("release");
    }
    wait_state(&server, &first, "succeeded").await;
    assert!(
        poll(|| async {
            server.get("/invocations?state=queued").await.body["invocations"] == json!([])
                && server.get("/invocations?state=running").await.body["invocations"] == json!([])
        })
        .await
    );
    // Room again.
    accepted(&invoke_async(&server, "job", json!({"n": 6})).await);
    server.stop_and_check();
}

/// Runs `shs ARGS` against `server`.
fn shs(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shs"))
        .args(args)
        .env_remove("SHS_API_KEY")
        .env("SHS_URL", &server.url)
        .output()
        .expect("run shs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_invokes_asynchronously_and_shows_invocations() {
    let mut server = ServerBuilder::new().fixture("job").start().await;
    server.wait_ready().await;
    let (code, stdout, stderr) = shs(&server, &["invoke", "--async", "job", r#"{"via": "cli"}"#]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let id = stdout
        .split_whitespace()
        .nth(1)
        .expect("the id is printed")
        .to_owned();
    assert!(stdout.contains("shs invocations"), "{stdout}");
    wait_state(&server, &id, "succeeded").await;
    let (code, stdout, stderr) = shs(&server, &["invocations", &id]);
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["result"]["input"], json!({"via": "cli"}));
    let (code, stdout, stderr) = shs(&server, &["invocations", "--function", "job"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(
        stdout.contains(&id) && stdout.contains("succeeded"),
        "{stdout}"
    );
    let (code, _, stderr) = shs(
        &server,
        &["invocations", "0193a1b2-0000-7000-8000-000000000000"],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no invocation"), "{stderr}");
    let (code, _, stderr) = shs(&server, &["invocations", "--state", "asleep"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("invalid state"), "{stderr}");
    server.stop_and_check();
}

/// One request a [`Receiver`] got: its headers (names lower-case) and its body as JSON.
#[derive(Debug)]
pub struct Received {
    pub headers: std::collections::HashMap<String, String>,
    pub body: Value,
}

/// A callback receiver on a free port: answers 500 to its first `fails` requests, then 200,
/// and hands over each request it got.
pub struct Receiver {
    pub url: String,
    got: tokio::sync::mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fails: usize) -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body Content-Length says.
                let (head, length) = loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break (String::new(), 0),
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).into_owned();
                        data.drain(..end + 4);
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (head, length);
                    }
                };
                while data.len() < length {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    })
                    .collect();
                let status = if served < fails {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                served += 1;
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                let body = serde_json::from_slice(&data).unwrap_or(Value::Null);
                let _ = tx.send(Received { headers, body });
            }
        });
        Receiver { url, got, task }
    }

    /// The next request, within the patience of the harness.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(crate::harness::PATIENCE, self.got.recv())
            .await
            .expect("a callback in time")
            .expect("the receiver runs")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn the_outcome_is_posted_to_the_callback_until_the_receiver_takes_it() {
    let builder = ServerBuilder::new()
        .fixture("job")
        .fixture_as("job", "broken-job")
        .toml("broken-job", "max_attempts = 1\n");
    std::fs::write(builder.functions_dir().join("broken-job/broken"), "").expect("break");
    let mut server = builder.start().await;
    server.wait_ready().await;
    // Fails twice, then takes it.
    let mut receiver = Receiver::start(2).await;
    let id = accepted(
        &invoke_async_with(
            &server,
            "job",
            json!({"n": 5}),
            &[("x-callback-url", &receiver.url)],
        )
        .await,
    );
    for _ in 0..3 {
        let got = receiver.next().await;
        assert_eq!(got.headers.get("x-shs-invocation-id"), Some(&id), "{got:?}");
        assert_eq!(
            got.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            got.body,
            json!({
                "invocation_id": id,
                "function": "job",
                "state": "succeeded",
                "result": {"ok": true, "input": {"n": 5}, "attempt": 1}
            })
        );
    }
    let path = format!("/invocations/{id}");
    assert!(
        poll(|| async { server.get(&path).await.body["callback_state"] == "sent" }).await,
        "{}",
        server.get(&path).await.body
    );
    assert_eq!(
        server.get(&path).await.body["callback_url"],
        receiver.url.as_str()
    );

    // A failed invocation's callback carries the error.
    let mut receiver = Receiver::start(0).await;
    let failed = accepted(
        &invoke_async_with(
            &server,
            "broken-job",
            json!({}),
            &[("x-callback-url", &receiver.url)],
        )
        .await,
    );
    let got = receiver.next().await;
    assert_eq!(got.body["invocation_id"], failed.as_str());
    assert_eq!(got.body["state"], "failed");
    assert_eq!(got.body["error"]["status"], 500);
    assert!(got.body.get("result").is_none(), "{:?}", got.body);
    server.stop_and_check();
}

#[tokio::test]
async fn a_callback_url_that_is_not_http_or_not_allowed_is_refused() {
    let mut server = ServerBuilder::new()
        .fixture("job")
        .args(&["--callback-allow", "hooks.example.com,10.0.0.0/8"])
        .start()
        .await;
    server.wait_ready().await;
    for (url, why) in [
        ("ftp://hooks.example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("/relative/path", "absolute"),
        ("http://user:secret@hooks.example.com/", "credentials"),
        ("http://127.0.0.1:9/hook", "not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "not allowed"),
        ("http://hooks.example.com.evil.net/", "not allowed"),
    ] {
        let refused =
            invoke_async_with(&server, "job", json!({}), &[("x-callback-url", url)]).await;
        assert_eq!(refused.status, 400, "{url}: {refused:?}");
        assert!(refused.message().contains(why), "{url}: {refused:?}");
    }
    let long = format!("http://hooks.example.com/{}", "a".repeat(3000));
    let refused = invoke_async_with(&server, "job", json!({}), &[("x-callback-url", &long)]).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    // Nothing was queued; an allowed URL is taken.
    assert_eq!(
        server.get("/invocations").await.body["invocations"],
        json!([])
    );
    accepted(
        &invoke_async_with(
            &server,
            "job",
            json!({}),
            &[("x-callback-url", "http://10.255.255.1:9/hook")],
        )
        .await,
    );
    server.stop_and_check();
}
