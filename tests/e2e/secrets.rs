//! Secrets: `--secrets-dir` refused when others may read it; a function's secrets are in the
//! private folder `SHS_SECRETS` and nowhere else (environment, `/functions`, logs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::{ServerBuilder, poll};

/// Makes a private secrets folder next to the builder's functions folder, holding `files`,
/// and points `--secrets-dir` at it.
pub fn with_secrets(builder: ServerBuilder, files: &[(&str, &str)]) -> ServerBuilder {
    let root = builder
        .functions_dir()
        .parent()
        .expect("a parent")
        .join("secrets");
    fs::create_dir(&root).expect("secrets folder");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).expect("chmod");
    for (name, value) in files {
        let path = root.join(name);
        fs::write(&path, value).expect("write a secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let dir = root.to_string_lossy().into_owned();
    builder.args(&["--secrets-dir", &dir])
}

const VALUE: &str = "hunter2-but-longer";

/// An exec function that shows its whole environment, its secrets folder and a secret.
const SHOW: &str = r#"#!/bin/sh
echo "env:"
env
echo "folder: $(stat -c '%a %U' "$SHS_SECRETS")"
echo "files: $(ls -A "$SHS_SECRETS" | tr '\n' ' ')"
echo "mode: $(stat -c '%a' "$SHS_SECRETS/api-token")"
printf 'value: %s|\n' "$(cat "$SHS_SECRETS/api-token")"
echo "$SHS_SECRETS" >&2
"#;

#[tokio::test]
async fn a_secret_is_in_shs_secrets_and_not_in_the_environment() {
    let builder = ServerBuilder::new()
        .file("show", "main", SHOW)
        .toml("show", "mode = \"exec\"\nsecrets = [\"api-token\"]\n");
    let server = with_secrets(
        builder,
        &[
            (("api-token"), &format!("{VALUE}\n")),
            ("other", "not for show"),
        ],
    )
    .start()
    .await;
    server.wait_ready().await;
    let answer = server.post("/run/show", "{}").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let out = answer.body.as_str().expect("text").to_owned();
    let (env, rest) = out.split_once("folder: ").expect("both parts");
    assert!(env.contains("SHS_SECRETS="), "{env}");
    assert!(
        !env.contains(VALUE),
        "the value is in the environment:\n{env}"
    );
    let me = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
        .expect("utf-8");
    // Only the function's user may read: the folder is r-x for it alone, the file r--.
    assert!(rest.starts_with(&format!("500 {}", me.trim())), "{rest}");
    assert!(
        rest.contains("files: api-token \n"),
        "only the named secret: {rest}"
    );
    assert!(rest.contains("mode: 400\n"), "{rest}");
    // One trailing newline is not part of the value.
    assert!(rest.contains(&format!("value: {VALUE}|")), "{rest}");

    for path in [
        "/functions",
        "/functions/show",
        "/functions/show/logs",
        "/metrics",
    ] {
        let answer = server.get(path).await;
        assert!(!answer.body.to_string().contains(VALUE), "{path}");
    }
    assert!(!server.logs().contains(VALUE));
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_error_without_the_folder_content() {
    let builder = ServerBuilder::new()
        .file("show", "main", SHOW)
        .toml("show", "mode = \"exec\"\nsecrets = [\"absent\"]\n");
    let server = with_secrets(builder, &[("present", VALUE)]).start().await;
    server.wait_ready().await;
    let answer = server.post("/run/show", "{}").await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(
        answer.message().contains("secret \"absent\""),
        "{}",
        answer.message()
    );
    assert!(!answer.body.to_string().contains(VALUE));
}

#[tokio::test]
async fn a_secret_others_may_read_is_refused() {
    let builder = ServerBuilder::new()
        .file("show", "main", SHOW)
        .toml("show", "mode = \"exec\"\nsecrets = [\"open\"]\n");
    let secrets = builder
        .functions_dir()
        .parent()
        .expect("parent")
        .join("secrets");
    let server = with_secrets(builder, &[("open", VALUE)]).start().await;
    server.wait_ready().await;
    fs::set_permissions(secrets.join("open"), fs::Permissions::from_mode(0o644)).expect("chmod");
    // Redeployed (the manifest changes), the function reads its secrets again: refused.
    fs::write(
        server.functions_dir().join("show/function.toml"),
        "mode = \"exec\"\nsecrets = [\"open\"]\ntimeout = 5\n",
    )
    .expect("write");
    let refused = poll(|| async { server.post("/run/show", "{}").await.status == 503 }).await;
    assert!(refused);
    let answer = server.post("/run/show", "{}").await;
    assert!(
        answer.message().contains("chmod 600"),
        "{}",
        answer.message()
    );
}

#[test]
fn a_secrets_folder_others_may_read_is_refused_at_start() {
    let cwd = tempfile::tempdir().expect("temp dir");
    fs::create_dir(cwd.path().join("functions")).expect("functions");
    let secrets = cwd.path().join("secrets");
    fs::create_dir(&secrets).expect("secrets");
    // Any access for its group or others; 0700 is the mode the other tests run with.
    for mode in [0o755, 0o740, 0o701] {
        fs::set_permissions(&secrets, fs::Permissions::from_mode(mode)).expect("chmod");
        // The default folder, ./secrets, and the one given by SHS_SECRETS_DIR alike.
        for by_env in [false, true] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shs"));
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-watch"])
                .current_dir(cwd.path())
                .env_remove("RUST_LOG")
                .env_remove("SHS_SECRETS_DIR");
            if by_env {
                cmd.env("SHS_SECRETS_DIR", &secrets);
            }
            let out = cmd.output().expect("run shs");
            assert!(!out.status.success());
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(text.contains("--secrets-dir"), "{text}");
            assert!(text.contains("chmod 700"), "{text}");
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
        }
    }
}
