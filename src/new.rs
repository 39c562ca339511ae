//! `shs new NAME --lang LANG`: a new function from a template.
//!
//! The templates are the files under `templates/` in the repository, built into the binary,
//! with `{{name}}` (and, for Rust, `{{package}}` and `{{sdk_path}}`) filled in. Python and Node
//! functions get a copy of their SDK next to them, so that they need nothing installed; a Rust
//! function is a Cargo project with a path dependency on `crates/shs-sdk`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use crate::cli::{Lang, NewArgs, Template};

/// One file of a new function: where it goes in the function's folder, and its text.
struct File {
    path: &'static str,
    text: &'static str,
    /// What it is, for the summary (`None`: not listed).
    about: Option<&'static str>,
}

const fn file(path: &'static str, text: &'static str, about: &'static str) -> File {
    File {
        path,
        text,
        about: Some(about),
    }
}

const PYTHON: &[File] = &[
    file(
        "main.py",
        include_str!("../templates/python/main.py"),
        "the function: an invoke handler, and a handler of NAME.ping events",
    ),
    file(
        "test_main.py",
        include_str!("../templates/python/test_main.py"),
        "its tests (python3 -m unittest)",
    ),
    file(
        "shs_sdk.py",
        include_str!("../sdk/python/shs_sdk.py"),
        "the shs Python SDK, copied in",
    ),
    file(
        "README.md",
        include_str!("../templates/python/README.md"),
        "how to test, invoke and follow it",
    ),
];

const NODE: &[File] = &[
    file(
        "main.js",
        include_str!("../templates/node/main.js"),
        "the function: an invoke handler, and a handler of NAME.ping events",
    ),
    file(
        "main.test.js",
        include_str!("../templates/node/main.test.js"),
        "its tests (node --test)",
    ),
    file(
        "node_modules/shs-sdk/index.js",
        include_str!("../sdk/node/index.js"),
        "the shs Node SDK, copied in",
    ),
    File {
        path: "node_modules/shs-sdk/index.d.ts",
        text: include_str!("../sdk/node/index.d.ts"),
        about: None,
    },
    File {
        path: "node_modules/shs-sdk/package.json",
        text: include_str!("../sdk/node/package.json"),
        about: None,
    },
    file(
        "README.md",
        include_str!("../templates/node/README.md"),
        "how to test, invoke and follow it",
    ),
];

const RUST: &[File] = &[
    file(
        "src/main.rs",
        include_str!("../templates/rust/src/main.rs"),
        "the function: an invoke handler, a handler of NAME.ping events, and tests",
    ),
    file(
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml.in"),
        "the project, on the shs-sdk crate",
    ),
    file(
        "function.toml",
        include_str!("../templates/rust/function.toml"),
        "tells shs to run target/release/NAME",
    ),
    file(
        "README.md",
        include_str!("../templates/rust/README.md"),
        "how to build, test, invoke and follow it",
    ),
    File {
        path: ".gitignore",
        text: include_str!("../templates/rust/gitignore"),
        about: None,
    },
];

const WEBHOOK: &[File] = &[
    file(
        "main.py",
        include_str!("../templates/webhook/main.py"),
        "the handler of GitHub deliveries (shs checks their signature first)",
    ),
    file(
        "function.toml",
        include_str!("../templates/webhook/function.toml"),
        "[webhook] kind = \"github\", secret NAME-webhook",
    ),
    file(
        "test_main.py",
        include_str!("../templates/webhook/test_main.py"),
        "its tests (python3 -m unittest)",
    ),
    file(
        "shs_sdk.py",
        include_str!("../sdk/python/shs_sdk.py"),
        "the shs Python SDK, copied in",
    ),
    file(
        "README.md",
        include_str!("../templates/webhook/README.md"),
        "how to make the secret and send a signed request",
    ),
];

const SH: &[File] = &[file(
    "main.sh",
    include_str!("../templates/sh/main.sh"),
    "the function: the protocol by hand, an invoke handler and NAME.ping events",
)];

/// The shs-sdk crate of the checkout this binary was built from.
fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/shs-sdk")
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The Cargo package name for a function: its name, unless Cargo would refuse that.
fn package_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("fn-{name}")
    } else {
        name.to_owned()
    }
}

/// Fills in a template. `sdk_path` is already a TOML string.
fn render(text: &str, name: &str, sdk_path: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{package}}", &package_name(name))
        .replace("\"{{sdk_path}}\"", sdk_path)
}

/// `shs new`.
pub(crate) fn run(args: &NewArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    shs_supervisor::validate_name(name).map_err(|e| anyhow!("{e}"))?;
    let (files, lang) = match (args.template, args.lang) {
        (Some(Template::Webhook), None | Some(Lang::Python)) => (WEBHOOK, "python webhook"),
        (Some(Template::Webhook), Some(_)) => {
            bail!("the webhook template is in Python: leave out --lang, or give --lang python")
        }
        (None, Some(Lang::Python)) => (PYTHON, "python"),
        (None, Some(Lang::Node)) => (NODE, "node"),
        (None, Some(Lang::Rust)) => (RUST, "rust"),
        (None, Some(Lang::Sh)) => (SH, "sh"),
        (None, None) => bail!("give --lang (python, node, rust, sh) or --template webhook"),
    };
    let rust = args.lang == Some(Lang::Rust);
    if args.sdk_path.is_some() && !rust {
        bail!("--sdk-path is for --lang rust only");
    }
    let sdk = args.sdk_path.clone().unwrap_or_else(default_sdk_path);
    if rust && !sdk.join("Cargo.toml").is_file() {
        bail!(
            "there is no shs-sdk crate at {}: give the path of crates/shs-sdk in an shs \
             checkout with --sdk-path",
            sdk.display()
        );
    }
    // An absolute path, so that the project can be moved within the machine.
    let sdk = std::path::absolute(&sdk).unwrap_or(sdk);
    let sdk_path = toml_string(&sdk.to_string_lossy());

    let folder = args.dir.join(name);
    if folder.exists() || folder.is_symlink() {
        bail!(
            "{} already exists: pick another name, or remove that folder first",
            folder.display()
        );
    }
    if !args.dir.is_dir() {
        fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create the folder {}", args.dir.display()))?;
    }
    // Built aside and renamed into place, so that a server watching the folder never sees a
    // half-written function.
    let staging = staging_dir(&args.dir, name)?;
    let written = write_files(staging.path(), files, name, &sdk_path);
    if let Err(e) = written {
        return Err(e.context(format!(
            "cannot write the new function in {}",
            args.dir.display()
        )));
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, &folder) {
        let _ = fs::remove_dir_all(&staged);
        return Err(anyhow!(e).context(format!("cannot create {}", folder.display())));
    }
    print!("{}", summary(args, &folder, files, lang));
    Ok(())
}

/// A hidden folder next to where the function goes (hidden: the server skips it).
fn staging_dir(dir: &Path, name: &str) -> anyhow::Result<Staging> {
    for n in 0..100u32 {
        let path = dir.join(format!(".shs-new-{name}-{}-{n}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(Staging(Some(path))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(
                    anyhow!(e).context(format!("cannot create a folder in {}", dir.display()))
                );
            }
        }
    }
    bail!("cannot create a temporary folder in {}", dir.display())
}

/// A folder removed on drop unless kept.
struct Staging(Option<PathBuf>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

fn write_files(folder: &Path, files: &[File], name: &str, sdk_path: &str) -> anyhow::Result<()> {
    for f in files {
        let path = folder.join(f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // The SDK copies go in as they are; the templates get the name filled in.
        let text = if f.path.starts_with("node_modules/") || f.path == "shs_sdk.py" {
            f.text.to_owned()
        } else {
            render(f.text, name, sdk_path)
        };
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// What was created, and what to do next.
fn summary(args: &NewArgs, folder: &Path, files: &[File], lang: &str) -> String {
    let name = &args.name;
    let shown = folder.display().to_string();
    let mut text = format!("Created {lang} function {name} in {shown}/\n");
    let width = files
        .iter()
        .filter(|f| f.about.is_some())
        .map(|f| f.path.len())
        .max()
        .unwrap_or(0);
    for f in files {
        if let Some(about) = f.about {
            let about = about.replace("NAME", name);
            text.push_str(&format!("  {:<width$}  {about}\n", f.path));
        }
    }
    let cd = format!("cd {}", shell_word(&shown));
    let mut steps: Vec<(String, String)> = Vec::new();
    if args.template == Some(Template::Webhook) {
        return webhook_summary(text, name, &cd);
    }
    match args.lang.unwrap_or(Lang::Sh) {
        Lang::Python => steps.push((format!("({cd} && python3 -m unittest)"), "test it".into())),
        Lang::Node => steps.push((format!("({cd} && node --test)"), "test it".into())),
        Lang::Rust => {
            steps.push((
                format!("({cd} && cargo build --release)"),
                format!("build it first: shs runs target/release/{name}"),
            ));
            steps.push((format!("({cd} && cargo test)"), "test it".into()));
        }
        Lang::Sh => {}
    }
    let serve = if args.dir == Path::new("functions") {
        "shs serve".to_owned()
    } else {
        format!(
            "shs serve --functions-dir {}",
            shell_word(&args.dir.display().to_string())
        )
    };
    steps.push((
        serve,
        format!("deploy: nothing to do if it runs, it picks {name} up within 2 s"),
    ));
    steps.push((
        format!("shs invoke {name} '{{\"name\":\"Ada\"}}'"),
        "-> {\"message\": \"Hello, Ada!\"}".into(),
    ));
    steps.push((
        format!("shs publish {name}.ping '{{}}'"),
        "an event it subscribes to".into(),
    ));
    steps.push((format!("shs logs {name} -f"), "its log".into()));
    text.push_str("\nNext steps:\n");
    let width = steps.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, comment) in steps {
        text.push_str(&format!("  {command:<width$}  # {comment}\n"));
    }
    text
}

/// What to do next with a new webhook function.
fn webhook_summary(mut text: String, name: &str, cd: &str) -> String {
    let steps = [
        (
            format!("({cd} && python3 -m unittest)"),
            "test it".to_owned(),
        ),
        (
            format!("mkdir -p -m 700 secrets && openssl rand -hex 32 > secrets/{name}-webhook"),
            "its secret (chmod 600 it; give GitHub the same)".to_owned(),
        ),
        (
            "shs serve".to_owned(),
            "deploy: requests without a right X-Hub-Signature-256 get 401".to_owned(),
        ),
        (format!("shs logs {name} -f"), "its log".to_owned()),
    ];
    text.push_str("\nNext steps (the README shows a signed request with curl):\n");
    let width = steps.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, comment) in steps {
        text.push_str(&format!("  {command:<width$}  # {comment}\n"));
    }
    text
}

/// `word`, quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_filled_in() {
        for files in [PYTHON, NODE, RUST, SH, WEBHOOK] {
            for f in files {
                let text = render(f.text, "hello-1", "\"/x\"");
                assert!(!text.contains("{{"), "{} keeps a placeholder", f.path);
            }
        }
        let cargo = render(RUST[1].text, "9lives", &toml_string("/a \"b\"\\c"));
        assert!(cargo.contains("name = \"fn-9lives\""), "{cargo}");
        assert!(cargo.contains("name = \"9lives\""), "{cargo}");
        assert!(cargo.contains("path = \"/a \\\"b\\\"\\\\c\""), "{cargo}");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("functions/hello"), "functions/hello");
        assert_eq!(shell_word("my functions/it's"), "'my functions/it'\\''s'");
    }
}
