//! Deploying while the server runs: new, changed and removed functions, and readiness.

use serde_json::json;

use crate::harness::{ServerBuilder, alive, deploy_fixture, poll, write_file};

#[tokio::test]
async fn a_function_copied_in_is_invocable_and_subscribed_without_a_restart() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    assert_eq!(server.run("late", json!({})).await.status, 404);

    // As a user would: mkdir, then copy the files in.
    let dir = server.functions_dir().join("late");
    std::fs::create_dir(&dir).expect("mkdir");
    deploy_fixture("subscriber", &dir);
    write_file(
        &dir,
        "function.toml",
        "env = { SUBSCRIBE = \"late.news\" }\n",
    );

    assert!(
        poll(|| async {
            server
                .subscriptions()
                .await
                .contains(&("late.news".into(), "late".into()))
        })
        .await,
        "the start-up subscription came into force; log:\n{}",
        server.logs()
    );
    let answer = server.publish("late.news", json!({"n": 1})).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let events = server.run("late", json!({"action": "events"})).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.body["events"][0]["payload"], json!({"n": 1}));
    server.stop_and_check();
}

#[tokio::test]
async fn a_deployed_rpc_function_is_started_before_its_first_request() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    deploy_fixture("echo", &server.functions_dir().join("eager"));
    assert!(
        poll(|| async {
            server
                .function_info("eager")
                .await
                .is_some_and(|f| f["state"] == "ready" && f["processes"] == 1)
        })
        .await,
        "started without being asked; log:\n{}",
        server.logs()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_removed_function_answers_404_and_its_process_stops() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"gone.soon\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("echo", json!({})).await;
    let pid = u32::try_from(answer.body["pid"].as_u64().expect("pid")).expect("pid fits");

    std::fs::remove_dir_all(server.functions_dir().join("echo")).expect("rm echo");
    std::fs::remove_dir_all(server.functions_dir().join("sub")).expect("rm sub");
    assert!(
        poll(|| async { server.run("echo", json!({})).await.status == 404 }).await,
        "removed; log:\n{}",
        server.logs()
    );
    assert!(poll(|| async { !alive(pid) }).await, "its process stopped");
    assert!(
        poll(|| async { server.subscriptions().await.is_empty() }).await,
        "its subscriptions went with it"
    );
    assert_eq!(
        server.publish("gone.soon", json!({})).await.body["delivered"],
        0
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_changed_function_is_redeployed() {
    let v1 = "import fixture\nfixture.serve(invoke=lambda p: {\"version\": 1})\n";
    let v2 = "import fixture\nfixture.serve(invoke=lambda p: {\"version\": 2, \"more\": True})\n";
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    let dir = server.functions_dir().join("echo");
    write_file(&dir, "main.py", v1);
    assert!(
        poll(|| async { server.run("echo", json!({})).await.body == json!({"version": 1}) }).await,
        "version 1 is served; log:\n{}",
        server.logs()
    );
    write_file(&dir, "main.py", v2);
    assert!(
        poll(|| async { server.run("echo", json!({})).await.body["version"] == 2 }).await,
        "version 2 is served; log:\n{}",
        server.logs()
    );
    server.wait_for_log("function redeployed").await;
    assert!(
        poll(|| async {
            server
                .function_info("echo")
                .await
                .is_some_and(|f| f["processes"] == 1)
        })
        .await,
        "the old process stopped"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_broken_function_toml_is_503_until_fixed() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml("echo", "timeout = \"soon\"\n")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("echo", json!({})).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.message().contains("function.toml"),
        "{}",
        answer.message()
    );
    assert!(
        answer.message().contains("invalid type"),
        "{}",
        answer.message()
    );
    let info = server.function_info("echo").await.expect("listed");
    assert_eq!(info["state"], "failed");
    assert!(
        info["error"]
            .as_str()
            .is_some_and(|e| e.contains("function.toml"))
    );

    write_file(
        &server.functions_dir().join("echo"),
        "function.toml",
        "timeout = 5\n",
    );
    assert!(
        poll(|| async { server.run("echo", json!({})).await.status == 200 }).await,
        "fixed; log:\n{}",
        server.logs()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_main_that_is_not_executable_is_explained() {
    let mut server = ServerBuilder::new().start().await;
    let dir = server.functions_dir().join("noexec");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("main"), "#!/bin/sh\nexit 0\n").expect("write");
    assert!(
        poll(|| async { server.run("noexec", json!({})).await.status == 503 }).await,
        "found"
    );
    let answer = server.run("noexec", json!({})).await;
    assert!(
        answer.message().contains("chmod +x"),
        "{}",
        answer.message()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn ready_waits_for_every_function_found_at_start_up() {
    // silent-start never answers initialize; it fails to start after its 5 s timeout.
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("silent-start")
        .toml("silent-start", "timeout = 5\n")
        .start()
        .await;
    let early = server.get("/ready").await;
    assert_eq!(early.status, 503, "{early:?}");
    assert_eq!(server.get("/health").await.body, json!({"status": "ok"}));
    server.wait_ready().await;
    assert_eq!(server.get("/ready").await.body, json!({"status": "ready"}));
    let info = server.function_info("silent-start").await.expect("listed");
    assert!(
        info["state"] == "failed" || info["state"] == "backing_off",
        "{info}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_main_executable_with_a_shebang_is_a_function() {
    let script = "#!/bin/sh\nwhile IFS= read -r line; do\n  id=$(printf '%s' \"$line\" | sed -n 's/^{\"jsonrpc\":\"2.0\",\"id\":\\([0-9]*\\),.*/\\1/p')\n  printf '{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":\"from main\"}\\n' \"$id\"\ndone\n";
    let mut server = ServerBuilder::new()
        .file("bin", "main", script)
        .start()
        .await;
    let answer = server.run("bin", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!("from main"));
    server.stop_and_check();
}

#[tokio::test]
async fn the_default_relative_functions_folder_runs_every_kind_of_function() {
    let script = "#!/bin/sh\nwhile IFS= read -r line; do\n  id=$(printf '%s' \"$line\" | sed -n 's/^{\"jsonrpc\":\"2.0\",\"id\":\\([0-9]*\\),.*/\\1/p')\n  printf '{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":\"relative\"}\\n' \"$id\"\ndone\n";
    let mut server = ServerBuilder::new()
        .file("bin", "main", script)
        .file("cmd", "run.sh", "cat > /dev/null; echo '\"by command\"'\n")
        .toml("cmd", "mode = \"exec\"\ncommand = [\"sh\", \"./run.sh\"]\n")
        .file(
            "own",
            "tool",
            "#!/bin/sh\ncat > /dev/null; echo '\"own tool\"'\n",
        )
        .toml("own", "mode = \"exec\"\ncommand = [\"./tool\"]\n")
        .fixture("echo")
        .default_functions_dir()
        .start()
        .await;
    std::fs::set_permissions(
        server.functions_dir().join("own/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    assert_eq!(server.run("bin", json!({})).await.body, json!("relative"));
    assert_eq!(server.run("cmd", json!({})).await.body, json!("by command"));
    assert_eq!(server.run("own", json!({})).await.body, json!("own tool"));
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_removed_while_it_initializes_subscribes_nothing() {
    // late-subscriber subscribes 2 s into its initialize; its folder goes before that.
    let mut server = ServerBuilder::new()
        .fixture_as("late-subscriber", "late")
        .toml("late", "env = { ON = \"late.type\", DELAY = \"2\" }\n")
        .start()
        .await;
    server.wait_for_log("late: initializing").await;
    std::fs::remove_dir_all(server.functions_dir().join("late")).expect("rm late");
    server.wait_for_log("function removed").await;
    server.wait_for_log("late subscribe:").await;
    let logs = server.logs();
    assert!(
        logs.contains("late subscribe: {\"error\"") && logs.contains("was removed or redeployed"),
        "its subscribe was refused; log:\n{logs}"
    );
    // Its answer to initialize (with `subscribe`) is refused too.
    assert!(
        poll(|| async { server.logs().matches("refused: function").count() >= 2 }).await,
        "both subscriptions were refused; log:\n{}",
        server.logs()
    );
    assert_eq!(server.subscriptions().await, Vec::<(String, String)>::new());
    let accepted = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"type": "late.type", "payload": {}}).to_string()),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let dead = server.get("/events/dead-letters").await;
    assert_eq!(dead.body["dead_letters"], json!([]), "{dead:?}");

    // A later function of the same name, after a restart, inherits nothing.
    deploy_fixture("echo", &server.functions_dir().join("late"));
    assert!(
        poll(|| async { server.run("late", json!({})).await.status == 200 }).await,
        "the new function runs; log:\n{}",
        server.logs()
    );
    server.restart();
    server.wait_ready().await;
    assert_eq!(server.run("late", json!({})).await.status, 200);
    assert_eq!(server.subscriptions().await, Vec::<(String, String)>::new());
    server.stop_and_check();
}

/// Answers each request after `SLEEP` seconds with its version.
fn slow_version(version: u32) -> String {
    format!(
        r#"
import json, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    if msg["method"] == "invoke":
        time.sleep(0.02)
    sys.stdout.write(json.dumps({{"jsonrpc": "2.0", "id": msg["id"], "result": {{"version": {version}}}}}) + "\n")
    sys.stdout.flush()
"#
    )
}

#[tokio::test]
async fn a_redeploy_under_load_serves_every_request() {
    // Few slots and a long line of waiters: at each redeploy, requests hold slots of the old
    // processes, and more wait in line for them.
    let toml = "instances = 2\nconcurrency = 1\nqueue = 1000\ntimeout = 20\n";
    let mut server = ServerBuilder::new()
        .file("slow", "main.py", &slow_version(1))
        .toml("slow", toml)
        .start()
        .await;
    server.wait_ready().await;
    let dir = server.functions_dir().join("slow");
    let load = futures::future::join_all((0..16).map(|_| {
        let server = &server;
        async move {
            let mut answers = Vec::new();
            for _ in 0..40 {
                let answer = server.run("slow", json!({})).await;
                answers.push((answer.status, answer.body));
            }
            answers
        }
    }));
    let redeploys = async {
        for version in 2..=4 {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            write_file(&dir, "main.py", &slow_version(version));
        }
    };
    let (answers, ()) = tokio::join!(load, redeploys);
    let failed: Vec<_> = answers
        .iter()
        .flatten()
        .filter(|(s, _)| *s != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}; log:\n{}",
        failed.len(),
        answers.iter().flatten().count(),
        failed.first(),
        server.logs()
    );
    // The last version serves in the end.
    assert!(
        poll(|| async { server.run("slow", json!({})).await.body["version"] == 4 }).await,
        "version 4 is served"
    );
    server.stop_and_check();
}
