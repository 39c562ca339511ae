//! Property tests of the `function.toml` reader: whatever a folder's `function.toml` holds
//! (any bytes, or known keys with values of any type and size), reading the folder never
//! panics, and a manifest that is refused is refused with a clear message that names the file.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use shs_supervisor::spec::{Defaults, Found, read_function};

/// Reads a folder holding `main.py` and a `function.toml` of `text`; checks what came back.
fn check(text: &[u8]) -> Result<(), TestCaseError> {
    let fail = |e: std::io::Error| TestCaseError::fail(e.to_string());
    let tmp = tempfile::tempdir().map_err(fail)?;
    let dir = tmp.path().join("f");
    fs::create_dir(&dir).map_err(fail)?;
    fs::write(dir.join("main.py"), "").map_err(fail)?;
    fs::write(dir.join("function.toml"), text).map_err(fail)?;
    match read_function("f", &dir, &Defaults::default()) {
        Some(Found::Function(spec)) => {
            prop_assert_eq!(&spec.name, "f");
            prop_assert!(spec.instances >= 1 && spec.concurrency >= 1);
            prop_assert!(!spec.command.is_empty());
        }
        Some(Found::Broken { name, error, .. }) => {
            prop_assert_eq!(name, "f");
            clear(&error.to_string(), &dir.join("function.toml"))?;
        }
        None => prop_assert!(false, "a folder with main.py is a function"),
    }
    Ok(())
}

/// A clear error: names the file and says what is wrong, in a message of reasonable length.
fn clear(message: &str, path: &Path) -> Result<(), TestCaseError> {
    let path = path.display().to_string();
    prop_assert!(message.contains(&path), "{:?} names {}", message, path);
    let said = message.replacen(&path, "", 1);
    prop_assert!(
        said.chars().filter(|c| c.is_alphabetic()).count() > 5,
        "{:?} says what is wrong",
        message
    );
    prop_assert!(message.len() < 4096, "{:?} is short", message);
    Ok(())
}

/// The keys `function.toml` knows, and a few it does not.
const KEYS: &[&str] = &[
    "command",
    "mode",
    "timeout",
    "subscribe",
    "env",
    "instances",
    "concurrency",
    "queue",
    "min_instances",
    "idle_timeout",
    "user",
    "group",
    "max_attempts",
    "retry_backoff",
    "ordered",
    "start_timeout",
    "limits",
    "limits.memory",
    "limits.cpu_seconds",
    "limits.open_files",
    "limits.processes",
    "unknown",
    "Timeout",
];

/// A TOML value of any type, some of them extreme.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        Just("1e308".to_owned()),
        Just("5e-324".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml_string(&s)),
        Just("\"rpc\"".to_owned()),
        Just("\"exec\"".to_owned()),
        Just("\"256MiB\"".to_owned()),
        Just("\"99999999999999999999GiB\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-zA-Z_.=\"]{0,8}", inner), 0..3).prop_map(|kv| {
                let pairs: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{} = {v}", toml_string(&k)))
                    .collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes at all.
    #[test]
    fn any_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&text)?;
    }

    /// Any text, mostly TOML-looking.
    #[test]
    fn any_text_never_panics(text in "[a-z_=\\[\\]{}\"'., 0-9\n#-]{0,200}") {
        check(text.as_bytes())?;
    }

    /// Known keys with values of every type and size.
    #[test]
    fn known_keys_with_any_value_never_panic(
        pairs in prop::collection::vec((prop::sample::select(KEYS), value()), 0..6),
    ) {
        let text: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        check(text.as_bytes())?;
    }
}

#[test]
fn extreme_values_are_refused_clearly() {
    for text in [
        "timeout = nan",
        "timeout = inf",
        "timeout = -1",
        "timeout = 1e308",
        "instances = 0",
        "instances = 18446744073709551615",
        "concurrency = 0",
        "max_attempts = 0",
        "limits.memory = \"99999999999999999999GiB\"",
        "limits.memory = 0",
        "mode = \"batch\"",
        "command = []",
        "group = \"root\"",
        "subscribe = [\"a..b\"]",
        "env = { \"A=B\" = \"1\" }",
        "unknown = 1",
        "\u{0}",
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("main.py"), "").expect("main.py");
        fs::write(dir.join("function.toml"), text).expect("function.toml");
        match read_function("f", &dir, &Defaults::default()) {
            Some(Found::Broken { error, .. }) => {
                let message = error.to_string();
                if let Err(e) = clear(&message, &dir.join("function.toml")) {
                    panic!("{text}: {e}");
                }
            }
            other => panic!("{text} was accepted: {other:?}"),
        }
    }
}
