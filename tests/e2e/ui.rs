//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver (`fantoccini`), against the real `shs` with real
//! functions.
//!
//! Each test starts its own chromedriver on a free port and its own Chromium with a fresh
//! profile, and kills both (and anything left of them) when it ends. One browser runs at a
//! time (they are heavy on a small machine). Without Chromium the tests are skipped, unless
//! `SHS_REQUIRE_BROWSER=1` (CI sets it), which makes a missing browser a failure.
//!
//! The screenshots of the README are taken here: each run writes them to
//! `target/tmp/ui-screenshots/`, and with `SHS_UPDATE_SCREENSHOTS=1` to `docs/img/` too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, ServerBuilder, poll};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the tests can run; panics when they must and cannot.
fn browser_available() -> bool {
    let there = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !there && std::env::var("SHS_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!(
            "SHS_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing: \
             apt-get install -y chromium chromium-driver"
        );
    }
    if !there {
        eprintln!(
            "skipped: no {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
    }
    there
}

/// A free port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Pids of processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// chromedriver and the Chromium it drives, with a fresh profile.
struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Browser {
    async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let profile = tempfile::Builder::new()
            .prefix("shs-chromium-")
            .tempdir()
            .expect("profile dir");
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("start chromedriver");
        let mut browser = Browser {
            client: None,
            driver,
            profile,
            _turn: turn,
        };
        let url = format!("http://127.0.0.1:{port}");
        let status = reqwest::Client::new();
        let up = poll(|| async {
            status
                .get(format!("{url}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up, "chromedriver did not start on port {port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.expect("navigate");
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The page's visible text.
    async fn text(&self) -> String {
        self.js("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `script` returns something truthy; returns it. Panics after [`PATIENCE`]
    /// with what was waited for, the page's text and the server's log.
    async fn until(&self, what: &str, script: &str, server: &Server) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.js(script).await;
            let truthy =
                !matches!(&value, Value::Null | Value::Bool(false)) && value.as_str() != Some("");
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "the page never showed {what}; it shows:\n{}\nserver log:\n{}",
                    self.text().await,
                    server.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Saves a screenshot as `name.png` (see the module's comment for where).
    async fn screenshot(&self, name: &str) {
        self.js("window.scrollTo(0, 0); document.activeElement?.blur(); return 1;")
            .await;
        let png = self.client().screenshot().await.expect("screenshot");
        let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")];
        if std::env::var("SHS_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        }
    }

    /// Ends the session, then the driver and whatever is left of the browser.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        let group = Pid::from_raw(self.driver.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.driver.wait();
        // Chromium's processes carry the profile folder on their command lines.
        let profile = self.profile.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with(&profile);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Python function on the fixtures' helper module.
fn python(builder: ServerBuilder, name: &str, code: &str) -> ServerBuilder {
    let lib = std::fs::read_to_string(crate::harness::fixtures_dir().join("lib/fixture.py"))
        .expect("fixture.py");
    builder
        .file(name, "fixture.py", &lib)
        .file(name, "main.py", code)
}

const FLIP: &str = r#"import fixture
fixture.serve(invoke=lambda params: {"ok": True})
"#;

#[tokio::test]
async fn the_functions_page_lists_functions_and_shows_changes_live() {
    if !browser_available() {
        return;
    }
    // min_instances: both run from the start (a function with no subscriptions is otherwise
    // stopped once it has answered initialize).
    let mut server = python(
        ServerBuilder::new()
            .fixture("echo")
            .toml("echo", "min_instances = 1\n"),
        "flip",
        FLIP,
    )
    .toml("flip", "min_instances = 1\n")
    .start()
    .await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui", server.url)).await;
    // The redirect to /ui/, then the default page.
    browser
        .until(
            "the functions page",
            "return location.pathname === '/ui/' && location.hash === '#/functions';",
            &server,
        )
        .await;
    let state = |name: &str| {
        format!(
            "const row = document.querySelector('tr[data-function=\"{name}\"]'); \
             return row && row.querySelector('[data-field=state]').textContent;"
        )
    };
    browser
        .until(
            "echo ready",
            &format!("return (() => {{ {} }})() === 'ready';", state("echo")),
            &server,
        )
        .await;
    browser
        .until(
            "flip ready",
            &format!("return (() => {{ {} }})() === 'ready';", state("flip")),
            &server,
        )
        .await;

    // Invocations count up without a reload.
    let marker = browser.js("window.__same_page = 1; return 1;").await;
    assert_eq!(marker, 1);
    for _ in 0..3 {
        assert_eq!(server.run("echo", json!({})).await.status, 200);
    }
    browser
        .until(
            "3 invocations of echo",
            "const c = document.querySelector('tr[data-function=\"echo\"] [data-field=invocations]'); \
             return c && c.textContent === '3';",
            &server,
        )
        .await;

    // flip breaks: the redeploy fails to start, and the page shows it, with its stderr.
    std::fs::write(
        server.functions_dir().join("flip/main.py"),
        "import sys\nsys.stderr.write('flip cannot start: no database\\n')\nsys.exit(3)\n",
    )
    .expect("break flip");
    // A request makes the broken version try to start.
    let _ = poll(|| async { server.run("flip", json!({})).await.status == 503 }).await;
    browser
        .until(
            "flip failing",
            &format!(
                "return ['backing off', 'failed'].includes((() => {{ {} }})());",
                state("flip")
            ),
            &server,
        )
        .await;
    browser
        .until(
            "flip's stderr",
            "const p = document.querySelector('tr[data-problem-of=\"flip\"]'); \
             return p && p.textContent.includes('flip cannot start: no database');",
            &server,
        )
        .await;

    // A function deployed while the page is open appears in it.
    crate::harness::deploy_fixture("echo", &server.functions_dir().join("late"));
    browser
        .until(
            "the new function",
            "return !!document.querySelector('tr[data-function=\"late\"]');",
            &server,
        )
        .await;
    assert_eq!(
        browser.js("return window.__same_page;").await,
        1,
        "no reload"
    );
    browser.screenshot("functions").await;

    // The filter, from the keyboard: "/" focuses it.
    browser.js("document.body.focus(); return 1;").await;
    browser
        .client()
        .active_element()
        .await
        .expect("active")
        .send_keys("/")
        .await
        .expect("key");
    browser
        .until(
            "the filter focused",
            "return document.activeElement && document.activeElement.matches('[data-filter]');",
            &server,
        )
        .await;
    browser.type_into("[data-filter]", "fli").await;
    browser
        .until(
            "only flip",
            "return document.querySelectorAll('#functions tbody tr[data-function]').length === 1;",
            &server,
        )
        .await;
    assert!(
        browser.js("return location.hash;").await == "#/functions?q=fli",
        "the filter is in the link"
    );
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_functions_page_shows_its_log_live_and_survives_a_reload() {
    if !browser_available() {
        return;
    }
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/#/functions/echo", server.url))
        .await;
    browser
        .until(
            "echo's configuration",
            "return document.querySelector('#config dl') !== null;",
            &server,
        )
        .await;
    let line_of = |rid: &str| {
        format!(
            "return [...document.querySelectorAll('#log .log-line')].some(l => \
             l.dataset.requestId === '{rid}' && l.textContent.includes('echo got a request'));"
        )
    };
    let srv = &server;
    let invoke = |rid: &'static str| async move {
        srv.request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".to_owned()),
            &[("x-request-id", rid)],
        )
        .await
    };
    assert_eq!(invoke("ui-live-1").await.status, 200);
    browser
        .until("the log line of ui-live-1", &line_of("ui-live-1"), &server)
        .await;
    // The process list counts it.
    browser
        .until(
            "a process with a request",
            "const r = document.querySelector('#processes tbody tr'); \
             return r && r.children[2].textContent === '1';",
            &server,
        )
        .await;

    // Paused, new lines are held; resumed, they show.
    browser.click("#log-pause").await;
    assert_eq!(invoke("ui-live-2").await.status, 200);
    browser
        .until(
            "a held line",
            "return document.querySelector('#log-state').textContent.includes('1 new lines held');",
            &server,
        )
        .await;
    assert_eq!(browser.js(&line_of("ui-live-2")).await, false);
    browser.click("#log-pause").await;
    browser
        .until("the held line", &line_of("ui-live-2"), &server)
        .await;

    // Filtered by request id.
    browser.type_into("#log-filter", "ui-live-2").await;
    let shown = browser
        .js("return [...document.querySelectorAll('#log .log-line')].map(l => l.dataset.requestId);")
        .await;
    assert_eq!(shown, json!(["ui-live-2"]), "only that request's lines");

    // No schedules: no such section.
    assert_eq!(
        browser
            .js("return document.getElementById('schedules').hidden;")
            .await,
        true
    );

    // A deep link survives a reload.
    browser.client().refresh().await.expect("reload");
    browser
        .until("the page again", &line_of("ui-live-1"), &server)
        .await;
    browser.screenshot("function").await;
    browser.click("#theme").await;
    browser
        .until(
            "the dark theme",
            "return document.documentElement.dataset.theme === 'dark';",
            &server,
        )
        .await;
    browser.screenshot("function-dark").await;
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn the_playground_invokes_and_shows_the_answer() {
    if !browser_available() {
        return;
    }
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/#/functions/echo", server.url))
        .await;
    browser
        .until(
            "the playground",
            "return !!document.querySelector('#pg-send');",
            &server,
        )
        .await;
    browser
        .type_into("#pg-body", r#"{"hello": "from the browser"}"#)
        .await;
    browser
        .type_into("#pg-headers", "X-Request-Id: playground-1")
        .await;
    browser.click("#pg-send").await;
    let answer = browser
        .until(
            "the answer",
            "const r = document.querySelector('#pg-response'); return r && r.textContent;",
            &server,
        )
        .await;
    let answer: Value = serde_json::from_str(answer.as_str().unwrap_or_default()).expect("JSON");
    assert_eq!(answer["input"]["hello"], "from the browser");
    assert_eq!(answer["context"]["request_id"], "playground-1");
    let status = browser
        .js("return document.querySelector('[data-field=status]').textContent;")
        .await;
    assert_eq!(status, "200 OK");
    let time = browser
        .js("return document.querySelector('[data-field=time]').textContent;")
        .await;
    assert!(
        time.as_str()
            .is_some_and(|t| t.contains(" ms") || t.contains(" µs") || t.contains(" s")),
        "{time}"
    );
    // The response headers are shown.
    let headers = browser
        .js("return document.querySelector('#pg-out details').textContent;")
        .await;
    assert!(
        headers.as_str().is_some_and(|h| h.contains("playground-1")),
        "{headers}"
    );

    // As curl: the same request, the key left to the shell.
    browser.click("#pg-copy").await;
    let curl = browser
        .until(
            "the curl command",
            "const c = document.querySelector('#pg-curl'); return !c.hidden && c.textContent;",
            &server,
        )
        .await;
    let curl = curl.as_str().unwrap_or_default();
    assert!(curl.starts_with("curl -i -X POST '"), "{curl}");
    assert!(curl.contains("/run/echo'"), "{curl}");
    assert!(curl.contains("-H 'X-Request-Id: playground-1'"), "{curl}");
    assert!(
        curl.contains(r#"--data-raw '{"hello": "from the browser"}'"#),
        "{curl}"
    );
    assert!(curl.contains("$SHS_API_KEY"), "{curl}");

    // Another method works too; that GET sends no body is said.
    browser
        .find("#pg-method")
        .await
        .select_by_value("GET")
        .await
        .expect("select GET");
    browser
        .until(
            "the note",
            "const n = document.querySelector('#pg-note'); return !n.hidden && n.textContent.includes('GET sends no body');",
            &server,
        )
        .await;
    browser.click("#pg-send").await;
    browser
        .until(
            "the 200",
            "const s = document.querySelector('[data-field=status]'); return s && s.textContent.startsWith('200');",
            &server,
        )
        .await;
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_dead_letter_is_inspected_and_retried_from_the_page() {
    if !browser_available() {
        return;
    }
    let mut server = ServerBuilder::new()
        .fixture("flaky")
        .toml(
            "flaky",
            "env = { ON = \"ui.job\", FAILS = \"0\" }\nmax_attempts = 1\nretry_backoff = 0.05\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    std::fs::write(server.functions_dir().join("flaky/broken"), "").expect("break flaky");
    let accepted = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"type": "ui.job", "payload": {"job": 7}}).to_string()),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let event_id = accepted.body["event_id"].as_str().expect("id").to_owned();
    let dead = poll(|| async {
        server.get("/events/dead-letters").await.body["dead_letters"][0]["id"].is_string()
    })
    .await;
    assert!(dead, "a dead letter; log:\n{}", server.logs());

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/#/dead-letters?function=flaky", server.url))
        .await;
    browser
        .until(
            "the dead letter",
            "return document.querySelectorAll('#dead-letters tbody tr').length === 1;",
            &server,
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#dl-function').value;")
            .await,
        "flaky",
        "the filter comes from the link"
    );
    browser.click("#dead-letters tbody button.inspect").await;
    let inspected = browser
        .until(
            "the inspected event",
            "const e = document.querySelector('#dl-event'); return e && e.textContent;",
            &server,
        )
        .await;
    assert!(
        inspected.as_str().is_some_and(|t| t.contains("\"job\": 7")),
        "{inspected}"
    );
    assert!(browser.text().await.contains("broken (attempt 1)"));
    browser.screenshot("dead-letters").await;

    // Fixed, and retried from the page.
    std::fs::remove_file(server.functions_dir().join("flaky/broken")).expect("fix flaky");
    browser.click("#dl-all").await;
    browser.click("#dl-retry").await;
    browser
        .until(
            "no dead letter left",
            "return document.querySelector('#dl-status').textContent.startsWith('Retried 1 of 1.') \
             && document.querySelectorAll('#dead-letters tbody tr').length === 0;",
            &server,
        )
        .await;
    let delivered = poll(|| async {
        server.get(&format!("/events/{event_id}")).await.body["deliveries"][0]["state"]
            == "delivered"
    })
    .await;
    assert!(delivered, "the retried delivery; log:\n{}", server.logs());
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn with_an_api_key_the_page_asks_for_it_and_refuses_a_wrong_one() {
    if !browser_available() {
        return;
    }
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--api-key", "the-right-key"])
        .start()
        .await;
    server.wait_ready().await;
    // The shell needs no key; the data does.
    assert_eq!(server.get("/ui/").await.status, 200);
    assert_eq!(server.get("/functions").await.status, 401);
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", server.url)).await;
    browser
        .until(
            "the key prompt",
            "const d = document.querySelector('#key-dialog'); return d.open && \
             document.querySelector('#key-message').textContent.includes('needs an API key');",
            &server,
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#functions tbody tr').length;")
            .await,
        0,
        "nothing shown without a key"
    );
    browser.screenshot("key-prompt").await;
    browser.type_into("#key-input", "a-wrong-key").await;
    browser.click("#key-submit").await;
    browser
        .until(
            "the refusal",
            "const d = document.querySelector('#key-dialog'); return d.open && \
             document.querySelector('#key-message').textContent.includes('refused');",
            &server,
        )
        .await;
    browser.type_into("#key-input", "the-right-key").await;
    browser.click("#key-submit").await;
    browser
        .until(
            "the functions, with the key",
            "return !document.querySelector('#key-dialog').open && \
             !!document.querySelector('tr[data-function=\"echo\"]');",
            &server,
        )
        .await;
    // Kept for the tab: a reload does not ask again, and every call sends it.
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('shs.apiKey');")
            .await,
        "the-right-key"
    );
    browser.client().refresh().await.expect("reload");
    browser
        .until(
            "the functions after a reload",
            "return !!document.querySelector('tr[data-function=\"echo\"]');",
            &server,
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#key-dialog').open;")
            .await,
        false
    );
    browser.close().await;
    server.stop_and_check();
}

/// What a hostile function puts in front of the page: markup in its log, its error, its
/// answer, the payload it publishes (and the error of the subscriber that takes it), and its
/// stderr when it fails to start. None of it may run.
const EVIL: &str = r#"import fixture

HTML = '<img src=x onerror="window.__pwned = 1">'

def invoke(params):
    fixture.log("evil logs " + HTML + "<script>window.__pwned = 2</script>")
    fixture.call("publish", {"type": "xss.payload", "async": True,
                             "payload": {"html": HTML, "svg": "<svg onload=window.__pwned=3>"}})
    raise fixture.RpcError({"code": 7, "message": "evil fails with " + HTML, "data": {"html": HTML}})

fixture.serve(invoke=invoke)
"#;

const SINK: &str = r#"import fixture

def event(params):
    raise fixture.RpcError({"code": 1, "message": '<img src=x onerror="window.__pwned = 4">'})

fixture.serve(event=event)
"#;

#[tokio::test]
async fn markup_from_functions_is_shown_as_text_and_never_runs() {
    if !browser_available() {
        return;
    }
    let builder = python(ServerBuilder::new(), "evil", EVIL);
    let builder = python(builder, "sink", SINK)
        .toml("sink", "subscribe = [\"xss.>\"]\nmax_attempts = 1\n")
        .file(
            "badstart",
            "main.sh",
            "echo '<img src=x onerror=\"window.__pwned = 5\"><script>window.__pwned = 6</script>' >&2\nexit 1\n",
        );
    let mut server = builder.start().await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    let pwned = "return window.__pwned === undefined && document.querySelectorAll('img, script:not([src]), svg[onload]').length === 0;";

    // Its log, and its answer in the playground.
    browser
        .goto(&format!("{}/ui/#/functions/evil", server.url))
        .await;
    browser
        .until(
            "the playground",
            "return !!document.querySelector('#pg-send');",
            &server,
        )
        .await;
    browser.click("#pg-send").await;
    let answer = browser
        .until(
            "evil's error",
            "const r = document.querySelector('#pg-response'); return r && r.textContent;",
            &server,
        )
        .await;
    assert!(
        answer
            .as_str()
            .is_some_and(|a| a.contains("evil fails with <img src=x onerror=")),
        "{answer}"
    );
    browser
        .until(
            "the log line, as text",
            "return [...document.querySelectorAll('#log .log-message')].some(m => \
             m.textContent.includes('evil logs <img src=x onerror=\"window.__pwned = 1\"><script>'));",
            &server,
        )
        .await;
    assert_eq!(
        browser.js(pwned).await,
        true,
        "nothing ran on the function page"
    );

    // The dead letter of the payload it published.
    let dead = poll(|| async {
        server.get("/events/dead-letters").await.body["dead_letters"][0]["id"].is_string()
    })
    .await;
    assert!(dead, "a dead letter; log:\n{}", server.logs());
    browser
        .goto(&format!("{}/ui/#/dead-letters", server.url))
        .await;
    browser
        .until(
            "the dead letter",
            "return document.querySelectorAll('#dead-letters tbody tr').length === 1;",
            &server,
        )
        .await;
    browser.click("#dead-letters tbody button.inspect").await;
    browser
        .until(
            "the payload, as text",
            "const e = document.querySelector('#dl-event'); return e && e.textContent.includes('<svg onload=window.__pwned=3>');",
            &server,
        )
        .await;
    assert!(
        browser
            .text()
            .await
            .contains("<img src=x onerror=\"window.__pwned = 4\">")
    );
    assert_eq!(
        browser.js(pwned).await,
        true,
        "nothing ran on the dead letters page"
    );

    // The stderr of a function that cannot start, on the home page.
    browser
        .goto(&format!("{}/ui/#/functions", server.url))
        .await;
    browser
        .until(
            "badstart's stderr, as text",
            "const p = document.querySelector('tr[data-problem-of=\"badstart\"]'); \
             return p && p.textContent.includes('<script>window.__pwned = 6</script>');",
            &server,
        )
        .await;
    assert_eq!(
        browser.js(pwned).await,
        true,
        "nothing ran on the functions page"
    );
    // The policy is in force: an inline script put in the page by hand is refused too.
    let inline = browser
        .js(
            "const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; \
             document.body.append(s); return window.__inline === undefined;",
        )
        .await;
    assert_eq!(
        inline, true,
        "the Content-Security-Policy refuses inline script"
    );
    browser.close().await;
    server.stop_and_check();
}

/// A step of a chain: on `chain.one` it publishes `chain.two`, on `chain.two` `chain.three`
/// (asynchronously, so that each is a delivery of its own with its attempts); `chain.three`
/// fails its first attempt and then succeeds.
const STEP: &str = r#"import os
import fixture

NEXT = {"chain.one": "chain.two", "chain.two": "chain.three"}

def event(params):
    event = params["event"]
    following = NEXT.get(event["type"])
    if following:
        fixture.call("publish", {"type": following, "async": True, "payload": event["payload"]})
        return {"ok": True}
    if not os.path.exists("tried"):
        open("tried", "w").close()
        raise fixture.RpcError({"code": 1, "message": "the first try fails"})
    return {"ok": True}

fixture.serve(event=event)
"#;

/// The id of the newest event of `event_type` the listing shows, once there is one whose
/// deliveries are all delivered.
async fn settled_event(server: &Server, event_type: &str) -> String {
    let settled = || async {
        let listed = server.get(&format!("/events?type={event_type}")).await;
        let first = &listed.body["events"][0];
        let done = first["deliveries"]
            .as_array()
            .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["state"] == "delivered"));
        first["id"].as_str().filter(|_| done).map(str::to_owned)
    };
    let found = poll(|| async { settled().await.is_some() }).await;
    assert!(found, "no settled {event_type}; log:\n{}", server.logs());
    settled().await.expect("an id")
}

#[tokio::test]
async fn the_lineage_of_a_three_step_chain_is_drawn_and_walked() {
    if !browser_available() {
        return;
    }
    let mut builder = ServerBuilder::new();
    for (name, on) in [
        ("step1", "chain.one"),
        ("step2", "chain.two"),
        ("step3", "chain.three"),
    ] {
        builder = python(builder, name, STEP).toml(
            name,
            &format!("subscribe = [\"{on}\"]\nmax_attempts = 3\nretry_backoff = 0.05\n"),
        );
    }
    let mut server = builder.start().await;
    server.wait_ready().await;
    let accepted = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"type": "chain.one", "payload": {"order": 42}}).to_string()),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let one = accepted.body["event_id"].as_str().expect("id").to_owned();
    let three = settled_event(&server, "chain.three").await;
    let two = settled_event(&server, "chain.two").await;

    let browser = Browser::start().await;
    // The listing, filtered from the link.
    browser
        .goto(&format!("{}/ui/#/events?type=chain.*", server.url))
        .await;
    browser
        .until(
            "the three events",
            "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.event).length === 3;",
            &server,
        )
        .await;
    let rows = browser
        .js("return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.event);")
        .await;
    assert_eq!(rows, json!([three, two, one]), "newest first");
    assert_eq!(
        browser
            .js("return document.querySelector('#ev-type').value;")
            .await,
        "chain.*"
    );
    browser.screenshot("events").await;

    // The middle event: its cause above, the step after it below, each delivery with its
    // attempts.
    browser
        .click(&format!("#events tr[data-event=\"{two}\"] a.event-link"))
        .await;
    browser
        .until(
            "the whole chain in the graph",
            "return document.querySelectorAll('#lineage .node-event').length === 3 \
             && document.querySelectorAll('#lineage .node-delivery').length === 3;",
            &server,
        )
        .await;
    assert_eq!(
        browser.js("return location.hash;").await,
        format!("#/events/{two}")
    );
    let graph = browser
        .js(
            "return [...document.querySelectorAll('#lineage .node')].map(n => \
             [n.dataset.event || n.dataset.delivery, n.textContent]);",
        )
        .await;
    let text = graph.to_string();
    for needle in [
        "chain.one",
        "chain.two",
        "chain.three",
        "step1",
        "step2",
        "step3",
        "delivered",
        "2 attempts",
    ] {
        assert!(text.contains(needle), "{needle} not in the graph: {graph}");
    }
    let current = browser
        .js("return document.querySelector('#lineage .node-current').dataset.event;")
        .await;
    assert_eq!(current, two.as_str());
    // The edges: event, delivery, event, delivery, event, delivery.
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#lineage path.edge').length;")
            .await,
        5
    );
    let facts = browser
        .js("return document.querySelector('#event-facts').textContent;")
        .await;
    assert!(
        facts
            .as_str()
            .is_some_and(|f| f.contains(&one) && f.contains(&three) && f.contains("step1")),
        "{facts}"
    );
    browser.screenshot("event").await;
    browser.click("#theme").await;
    browser
        .until(
            "the dark theme",
            "return document.documentElement.dataset.theme === 'dark';",
            &server,
        )
        .await;
    browser.screenshot("event-dark").await;
    browser.click("#theme").await;

    // The graph's events are links the keyboard reaches.
    let focusable = browser
        .js(
            "const a = document.querySelector('#lineage a.node-link'); a.focus(); \
             return document.activeElement === a;",
        )
        .await;
    assert_eq!(focusable, true, "a node of the graph takes the focus");

    // Down the chain by a click on the graph; its attempts are listed, the failed one too.
    browser
        .click(&format!("#lineage a.node-link g[data-event=\"{three}\"]"))
        .await;
    browser
        .until(
            "the last event's page",
            &format!(
                "return location.hash === '#/events/{three}' && \
                 !!document.querySelector('#deliveries') && \
                 document.querySelector('#lineage .node-current')?.dataset.event === '{three}';"
            ),
            &server,
        )
        .await;
    let attempts = browser
        .js("return [...document.querySelectorAll('#deliveries tbody tr')].map(r => r.textContent);")
        .await;
    let attempts = attempts.to_string();
    assert!(
        attempts.contains("the first try fails") && attempts.contains("200"),
        "{attempts}"
    );
    // A deep link survives a reload.
    browser.client().refresh().await.expect("reload");
    browser
        .until(
            "the graph after a reload",
            "return document.querySelectorAll('#lineage .node-event').length === 3;",
            &server,
        )
        .await;
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn markup_in_event_types_ids_and_payloads_is_shown_as_text() {
    if !browser_available() {
        return;
    }
    let builder = python(ServerBuilder::new(), "sink", SINK)
        .toml("sink", "subscribe = [\"xss.>\"]\nmax_attempts = 1\n");
    let mut server = builder.start().await;
    server.wait_ready().await;
    let event_type = "xss.<img/src=x/onerror=window.__pwned=7//";
    let id = "<svg onload=window.__pwned=8>";
    let published = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(
                json!({
                    "specversion": "1.0", "id": id, "source": "/xss", "type": event_type,
                    "data": {"html": "<img src=x onerror=\"window.__pwned = 9\">"},
                })
                .to_string(),
            ),
            &[("content-type", "application/cloudevents+json")],
        )
        .await;
    assert_eq!(published.status, 200, "{published:?}");
    let listed =
        poll(|| async { server.get("/events?type=xss.>").await.body["events"][0]["id"] == id })
            .await;
    assert!(listed, "the event listed; log:\n{}", server.logs());
    let browser = Browser::start().await;
    let pwned = "return window.__pwned === undefined && document.querySelectorAll('#main img, #main script, #main svg[onload], #main b').length === 0;";
    browser.goto(&format!("{}/ui/#/events", server.url)).await;
    browser
        .until(
            "the type, as text",
            &format!(
                "return [...document.querySelectorAll('#events tbody code')].some(c => c.textContent === {});",
                json!(event_type)
            ),
            &server,
        )
        .await;
    assert_eq!(
        browser.js(pwned).await,
        true,
        "nothing ran on the events page"
    );
    browser.click("#events tbody a.event-link").await;
    browser
        .until(
            "the graph, with the type as text",
            &format!(
                "return [...document.querySelectorAll('#lineage .node-title')].some(t => t.textContent.startsWith({}));",
                json!(&event_type[..20])
            ),
            &server,
        )
        .await;
    browser
        .until(
            "the payload and the error, as text",
            "return document.querySelector('#event-json').textContent.includes('window.__pwned = 9') \
             && document.querySelector('#deliveries').textContent.includes('onerror=\"window.__pwned = 4\"');",
            &server,
        )
        .await;
    assert_eq!(
        browser
            .js("return decodeURIComponent(location.hash);")
            .await,
        format!("#/events/{id}")
    );
    assert_eq!(
        browser.js(pwned).await,
        true,
        "nothing ran on the event page"
    );
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn the_topology_shows_who_publishes_and_takes_what_with_live_counts() {
    if !browser_available() {
        return;
    }
    let mut builder = ServerBuilder::new();
    for (name, on) in [
        ("step1", "chain.one"),
        ("step2", "chain.two"),
        ("step3", "chain.three"),
    ] {
        builder = python(builder, name, STEP).toml(
            name,
            &format!(
                "subscribe = [\"{on}\", \"quiet.*\"]\nmax_attempts = 3\nretry_backoff = 0.05\n"
            ),
        );
    }
    let mut server = builder.start().await;
    server.wait_ready().await;
    let publish = |event_type: &'static str| {
        let server = &server;
        async move {
            let accepted = server
                .request(
                    reqwest::Method::POST,
                    "/events",
                    Some(json!({"type": event_type, "payload": {}}).to_string()),
                    &[("prefer", "respond-async")],
                )
                .await;
            assert_eq!(accepted.status, 202, "{accepted:?}");
        }
    };
    publish("chain.one").await;
    settled_event(&server, "chain.three").await;
    let hostile = "xss.<img/src=x/onerror=window.__pwned=10//";
    publish(hostile).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/#/topology", server.url)).await;
    let edge = |key: &str| {
        format!("return document.querySelector('#topology [data-edge=\"{key}\"]')?.dataset.count;")
    };
    browser
        .until(
            "the chain's last delivery",
            &format!(
                "return ({})() === '1 ✓';",
                format_args!("() => {{ {} }}", edge("type:chain.three>sub:step3"))
            ),
            &server,
        )
        .await;
    let nodes = browser
        .js("return [...document.querySelectorAll('#topology [data-node]')].map(n => n.dataset.node).sort();")
        .await;
    for key in [
        "http",
        "fn:step1",
        "fn:step2",
        "type:chain.one",
        "type:chain.two",
        "type:chain.three",
        "type:quiet.*",
        "sub:step1",
        "sub:step2",
        "sub:step3",
    ] {
        assert!(
            nodes.as_array().is_some_and(|n| n.iter().any(|n| n == key)),
            "{key} not in {nodes}"
        );
    }
    assert_eq!(browser.js(&edge("http>type:chain.one")).await, "1");
    assert_eq!(browser.js(&edge("fn:step1>type:chain.two")).await, "1");
    assert_eq!(browser.js(&edge("fn:step2>type:chain.three")).await, "1");
    // A pattern nothing matched yet: an edge with nothing on it.
    assert_eq!(browser.js(&edge("type:quiet.*>sub:step2")).await, "");
    // The hostile type is a node whose label is text.
    let label = browser
        .js(&format!(
            "return document.querySelector('#topology [data-node=\"type:' + {} + '\"] title')?.textContent;",
            json!(hostile)
        ))
        .await;
    assert_eq!(label, hostile);
    browser.screenshot("topology").await;

    // Counts follow without a reload.
    browser.js("window.__same_page = 1; return 1;").await;
    publish("chain.one").await;
    browser
        .until(
            "two chain.one published",
            &format!(
                "return ({})() === '2';",
                format_args!("() => {{ {} }}", edge("http>type:chain.one"))
            ),
            &server,
        )
        .await;
    assert_eq!(browser.js("return window.__same_page;").await, 1);
    assert_eq!(
        browser
            .js("return window.__pwned === undefined && document.querySelectorAll('#main img').length === 0;")
            .await,
        true,
        "nothing ran on the topology page"
    );
    // From the keyboard: "g e" goes to the events, "g t" back here.
    for (keys, hash) in [("ge", "#/events"), ("gt", "#/topology")] {
        browser
            .js("document.activeElement?.blur(); return 1;")
            .await;
        browser
            .client()
            .active_element()
            .await
            .expect("active")
            .send_keys(keys)
            .await
            .expect("keys");
        browser
            .until(
                hash,
                &format!(
                    "return location.hash === '{hash}' && !!document.querySelector('#main h1');"
                ),
                &server,
            )
            .await;
    }
    browser
        .until(
            "the topology again",
            "return !!document.querySelector('#topology [data-node=\"sub:step3\"]');",
            &server,
        )
        .await;

    // A subscriber is a link to its function.
    browser
        .click("#topology a.node-link g[data-node=\"sub:step3\"]")
        .await;
    browser
        .until(
            "step3's page",
            "return location.hash === '#/functions/step3';",
            &server,
        )
        .await;
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_failed_invocation_is_listed_inspected_and_retried_from_the_dead_letters_page() {
    if !browser_available() {
        return;
    }
    let builder = ServerBuilder::new()
        .fixture("job")
        .toml("job", "max_attempts = 1\nretry_backoff = 0.05\n");
    let dir = builder.functions_dir().join("job");
    let mut server = builder.start().await;
    server.wait_ready().await;
    std::fs::write(dir.join("broken"), "").expect("break job");
    let id = crate::invocations::accepted(
        &crate::invocations::invoke_async(&server, "job", json!({"order": "<b>17</b>"})).await,
    );
    crate::invocations::wait_state(&server, &id, "failed").await;

    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/#/dead-letters?kind=invocation", server.url))
        .await;
    browser
        .until(
            "the failed invocation",
            "return document.querySelectorAll('#dead-letters tbody tr [data-kind=invocation]').length === 1;",
            &server,
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#dl-kind').value;")
            .await,
        "invocation",
        "the kind comes from the link"
    );
    browser.click("#dead-letters tbody button.inspect").await;
    let request = browser
        .until(
            "the request",
            "const t = document.querySelector('#dl-inspect-title'); const e = document.querySelector('#dl-event'); \
             const b = document.querySelector('#dl-body'); \
             return t && t.textContent.startsWith('Failed invocation') && e && b && b.textContent;",
            &server,
        )
        .await;
    assert!(
        request
            .as_str()
            .is_some_and(|r| r.contains("\"<b>17</b>\"")),
        "{request}"
    );
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#main b').length;")
            .await,
        0,
        "the input is text"
    );
    std::fs::remove_file(dir.join("broken")).expect("fix job");
    browser.click("#dl-all").await;
    browser.click("#dl-retry").await;
    browser
        .until(
            "nothing left",
            "return document.querySelector('#dl-status').textContent.startsWith('Retried 1 of 1.') \
             && document.querySelectorAll('#dead-letters tbody tr').length === 0;",
            &server,
        )
        .await;
    crate::invocations::wait_state(&server, &id, "succeeded").await;
    browser.close().await;
    server.stop_and_check();
}

/// A page of the same origin (a function's HTML answer) that puts the dashboard in a frame.
const FRAMER: &str = r#"import fixture

PAGE = '<!doctype html><title>framer</title><iframe id="f" src="/ui/#/functions"></iframe>'

fixture.serve(invoke=lambda params: {"http_response": {
    "status": 200, "headers": {"content-type": "text/html; charset=utf-8"}, "body": PAGE}})
"#;

#[tokio::test]
async fn the_dashboard_refuses_to_be_framed_even_by_its_own_origin() {
    if !browser_available() {
        return;
    }
    let mut server = python(ServerBuilder::new().fixture("echo"), "framer", FRAMER)
        .start()
        .await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/run/framer", server.url)).await;
    assert_eq!(browser.js("return document.title;").await, "framer");
    // Blocked, the frame holds Chromium's error page, of another origin: no document to read.
    // Had it loaded, its document (same origin) would hold the dashboard.
    browser
        .until(
            "the frame refused",
            "const f = document.getElementById('f'); let d; \
             try { d = f.contentDocument; } catch (e) { d = null; } \
             return d === null;",
            &server,
        )
        .await;
    // The dashboard itself loads at the top level.
    browser
        .goto(&format!("{}/ui/#/functions", server.url))
        .await;
    browser
        .until(
            "the functions at the top level",
            "return !!document.querySelector('tr[data-function=\"echo\"]');",
            &server,
        )
        .await;
    browser.close().await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_functions_schedules_are_on_its_page() {
    if !browser_available() {
        return;
    }
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml(
            "echo",
            "[[schedule]]\ncron = \"* * * * * *\"\ninput = { tick = \"<b>t</b>\" }\n\n[[schedule]]\ncron = \"0 0 3 * * *\"\ntimezone = \"Europe/Paris\"\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ui/#/functions/echo", server.url))
        .await;
    browser
        .until(
            "two schedules, the every-second one run",
            "const s = document.getElementById('schedules'); \
             return !s.hidden && s.querySelectorAll('tbody tr').length === 2 && \
             s.querySelector('tr[data-cron=\"* * * * * *\"] .chip')?.textContent === 'succeeded';",
            &server,
        )
        .await;
    let text = browser
        .js("return document.getElementById('schedules').textContent;")
        .await;
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains("Europe/Paris"), "{text}");
    assert!(text.contains("{\"tick\":\"<b>t</b>\"}"), "{text}");
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#main b').length;")
            .await,
        0
    );
    browser.close().await;
    server.stop_and_check();
}
