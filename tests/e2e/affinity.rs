//! The supervisor as a library, with real processes: their pipes handled on an attached I/O
//! thread (as the HTTP workers of `shs serve` are), and what happens when that thread goes away.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use shs_bus::Bus;
use shs_supervisor::{Config, Output, Supervisor};

use crate::harness::{deploy_fixture, poll, write_file};

fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("json")
}

/// The pid of the echo process that answers an invoke.
async fn echo_pid(supervisor: &Supervisor) -> u32 {
    let output = supervisor
        .invoke("echo", raw(&json!({"n": 1})), "affinity", None)
        .await
        .expect("invoke echo");
    let Output::Json(json) = output else {
        panic!("echo answers JSON")
    };
    let answer: Value = serde_json::from_str(json.get()).expect("answer");
    u32::try_from(answer["pid"].as_u64().expect("pid")).expect("pid fits")
}

fn alive(pid: u32) -> bool {
    // A zombie is as good as gone: look at its state, not only at its entry.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_handled_on_a_thread_that_stops_is_replaced() {
    let root = tempfile::tempdir().expect("temp dir");
    let functions = root.path().join("functions");
    deploy_fixture("echo", &functions.join("echo"));
    write_file(&functions.join("echo"), "function.toml", "instances = 1\n");
    let mut config = Config::new(&functions);
    config.watch = false;
    config.io_threads = 1;
    config.kill_grace = Duration::from_millis(500);
    let supervisor = Supervisor::start(config, Arc::new(Bus::new(16)))
        .await
        .expect("start the supervisor");

    // An I/O thread: a current-thread runtime on its own thread, like an actix worker. The
    // function's first process is handled there, and its invokes answered there.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let on_thread = supervisor.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            assert!(on_thread.attach_io_thread());
            let _ = pid_tx.send(echo_pid(&on_thread).await);
            let _ = stopped.await;
        });
        // Dropping the runtime drops every task on it, the process's reader among them.
    });
    let first = pid_rx.await.expect("the thread's invoke");
    assert_eq!(
        echo_pid(&supervisor).await,
        first,
        "one process serves both"
    );

    let _ = stop.send(());
    thread.join().expect("the I/O thread");
    // Nobody reads its answers any more: the process is stopped, not left to hang.
    assert!(
        poll(|| async { !alive(first) }).await,
        "process {first} still runs"
    );
    // The next invoke starts a new process, handled by the supervisor's own runtime.
    let second = echo_pid(&supervisor).await;
    assert_ne!(second, first);
    supervisor.shutdown(Duration::from_secs(2)).await;
    assert!(!alive(second), "process {second} outlived the shutdown");
}
