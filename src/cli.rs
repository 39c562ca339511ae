//! The command line.
//!
//! The defaults of the supervisor's settings come from [`shs_supervisor::defaults`], where
//! `Config::new` and the manifest read them too.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use shs_supervisor::defaults;
use shs_supervisor::spec::fmt_size;

/// shs: a self-hosted serverless framework. Functions are executables in any language, run as
/// child processes that speak JSON-RPC over stdin and stdout.
#[derive(Debug, Parser)]
#[command(name = "shs", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the supervisor and its HTTP API on a folder of functions.
    Serve(Box<ServeArgs>),
    /// Create a new function from a template, ready to deploy (Python, Node, Rust or sh).
    New(NewArgs),
    /// Invoke a function on a running server (`POST /run/NAME`) and print its result.
    Invoke(InvokeArgs),
    /// List the asynchronous invocations of a running server (`GET /invocations`), or show
    /// one (`GET /invocations/ID`).
    Invocations(InvocationsArgs),
    /// Publish an event on a running server (`POST /events`).
    Publish(PublishArgs),
    /// List the functions a running server has deployed (`GET /functions`).
    List(ListArgs),
    /// List the subscriptions of a running server (`GET /subscriptions`).
    Subscriptions(ListArgs),
    /// Print a function's recent log lines, and follow them with -f.
    Logs(LogsArgs),
}

/// The language of a new function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    /// `main.py` on the Python SDK, with a unittest test.
    Python,
    /// `main.js` on the Node SDK, with a node:test test.
    Node,
    /// A Cargo project on the Rust SDK, with a unit test; build it with `cargo build --release`.
    Rust,
    /// `main.sh`, the protocol by hand in POSIX sh.
    Sh,
}

/// A template of `shs new` for a purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Template {
    /// A GitHub webhook handler in Python, its signature checked by shs (`[webhook]`).
    Webhook,
}

/// `shs new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The function's name: 1 to 64 letters, digits, `_` or `-`.
    pub(crate) name: String,

    /// The language to write it in.
    #[arg(long, value_enum, required_unless_present = "template")]
    pub(crate) lang: Option<Lang>,

    /// A function for a purpose instead of the language's greeter.
    #[arg(long, value_enum, value_name = "TEMPLATE")]
    pub(crate) template: Option<Template>,

    /// The functions folder to create it in (as a sub-folder NAME).
    #[arg(long, default_value = "functions", value_name = "DIR")]
    pub(crate) dir: PathBuf,

    /// Rust only: the `shs-sdk` crate the new project depends on [default: the one in the shs
    /// checkout this binary was built from].
    #[arg(long, value_name = "PATH")]
    pub(crate) sdk_path: Option<PathBuf>,
}

/// Where the server is, for the commands that talk to one.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "SHS_URL", default_value_t = defaults::server_url(), value_name = "URL")]
    pub(crate) url: String,

    /// The API key, sent as `Authorization: Bearer KEY`, for a server started with one.
    #[arg(long, env = "SHS_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
}

/// `shs invoke`.
#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The function to invoke.
    pub(crate) name: String,

    /// The input: JSON text, `@FILE` to read it from a file, or `-` to read it from stdin
    /// [default: {}].
    #[arg(value_name = "JSON | @FILE | -")]
    pub(crate) input: Option<String>,

    /// Answer as soon as the invocation is stored (`Prefer: respond-async`), run it in the
    /// background with retries, and print its id (`shs invocations ID` shows the outcome).
    #[arg(long = "async")]
    pub(crate) asynchronous: bool,

    /// With --async: where the server POSTs the outcome when the invocation ends
    /// (`X-Callback-Url`).
    #[arg(long, value_name = "URL", requires = "asynchronous")]
    pub(crate) callback: Option<String>,

    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `shs invocations`.
#[derive(Debug, Args)]
pub(crate) struct InvocationsArgs {
    /// An invocation's id: print it whole (state, attempts, result or error).
    #[arg(value_name = "ID")]
    pub(crate) id: Option<String>,

    /// Only the invocations of this function.
    #[arg(long, value_name = "NAME")]
    pub(crate) function: Option<String>,

    /// Only the invocations in this state: queued, running, succeeded or failed.
    #[arg(long, value_name = "STATE")]
    pub(crate) state: Option<String>,

    /// At most this many (newest first).
    #[arg(long, default_value = "20", value_name = "N")]
    pub(crate) limit: u32,

    /// Print the server's answer as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `shs publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The event type, e.g. `user.created`.
    #[arg(value_name = "TYPE")]
    pub(crate) event_type: String,

    /// The payload: JSON text, `@FILE` to read it from a file, or `-` to read it from stdin
    /// [default: null].
    #[arg(value_name = "JSON | @FILE | -")]
    pub(crate) payload: Option<String>,

    /// Answer as soon as the event is stored, and deliver it in the background (with retries
    /// and dead letters) instead of waiting for the subscribers.
    #[arg(long = "async")]
    pub(crate) asynchronous: bool,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `shs list` and `shs subscriptions`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print the server's answer as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `shs logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The function whose log to print.
    pub(crate) name: String,

    /// Keep printing new lines as they come (over the server's live stream), until Ctrl-C.
    #[arg(short, long)]
    pub(crate) follow: bool,

    /// How many of the latest lines to print first [default: the server's].
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<usize>,

    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// How the event store commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Durability {
    /// Flush to disk on every commit (commits are grouped).
    Full,
    /// Leave flushing to the OS.
    Normal,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Every flag can also be set with an environment variable `SHS_<FLAG>`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Folder with one sub-folder per function; followed for changes while the server runs.
    #[arg(
        long,
        env = "SHS_FUNCTIONS_DIR",
        default_value = "./functions",
        value_name = "DIR"
    )]
    pub(crate) functions_dir: PathBuf,

    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, env = "SHS_LISTEN", default_value = defaults::LISTEN, value_name = "ADDR")]
    pub(crate) listen: String,

    /// Seconds a request may take, where a function's function.toml sets no `timeout`.
    #[arg(long, env = "SHS_TIMEOUT", default_value_t = defaults::TIMEOUT.as_secs_f64(), value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) timeout: f64,

    /// Largest request body, in bytes (suffixes K, M, KiB, MiB allowed).
    #[arg(long, env = "SHS_MAX_BODY", default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub(crate) max_body: usize,

    /// Log format.
    #[arg(long, env = "SHS_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub(crate) log_format: LogFormat,

    /// Most processes per function, where function.toml sets no `instances`.
    #[arg(long, env = "SHS_INSTANCES", default_value_t = defaults::INSTANCES, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) instances: usize,

    /// Most requests that wait for a busy function, per function, where function.toml sets no
    /// `queue`; past that, requests get 503 with Retry-After.
    #[arg(long, env = "SHS_QUEUE", default_value_t = defaults::QUEUE, value_name = "N")]
    pub(crate) queue: usize,

    /// Deliveries a chain of events may take before it is cut (loop protection).
    #[arg(long, env = "SHS_MAX_HOPS", default_value = "16", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_hops: u32,

    /// Processes a second that chain-aware prewarming may start: when a function runs, the
    /// functions down its known chains (what it publishes, who subscribes) that have no process
    /// get one. 0 turns it off.
    #[arg(long, env = "SHS_PREWARM_BUDGET", default_value_t = defaults::PREWARM_BUDGET, value_name = "N")]
    pub(crate) prewarm_budget: u32,

    /// Longest stdout line a function may write, in bytes (suffixes allowed); a longer one
    /// fails the request with 502 and the process is replaced.
    #[arg(long, env = "SHS_MAX_LINE", default_value = fmt_size(defaults::MAX_LINE), value_name = "BYTES", value_parser = parse_size)]
    pub(crate) max_line: usize,

    /// HTTP worker threads [default: the number of CPUs].
    #[arg(long, env = "SHS_WORKERS", value_name = "N")]
    pub(crate) workers: Option<usize>,

    /// Seconds in-flight requests get to finish on shutdown (SIGTERM, SIGINT).
    #[arg(long, env = "SHS_SHUTDOWN_GRACE", default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) shutdown_grace: f64,

    /// Pass the server's whole environment to functions (by default they get PATH, HOME,
    /// LANG, TZ, their function.toml `env`, SHS_FUNCTION and SHS_URL).
    #[arg(long, env = "SHS_INHERIT_ENV")]
    pub(crate) inherit_env: bool,

    /// The secrets folder: one file per secret, its value the file's contents (less one
    /// trailing newline). Refused when its group or others may read it; functions name the
    /// secrets they may read with `secrets = [...]` in function.toml.
    #[arg(long, env = "SHS_SECRETS_DIR", default_value = defaults::SECRETS_DIR, value_name = "DIR")]
    pub(crate) secrets_dir: PathBuf,

    /// Do not follow the functions folder for changes.
    #[arg(long, env = "SHS_NO_WATCH")]
    pub(crate) no_watch: bool,

    /// Seconds an unused process is kept before the function is scaled down to its
    /// `min_instances` (0: never), where function.toml sets no `idle_timeout`.
    #[arg(long, env = "SHS_IDLE_TIMEOUT", default_value_t = defaults::IDLE_TIMEOUT.map_or(0.0, |d| d.as_secs_f64()), value_name = "SECS", value_parser = parse_seconds_or_zero)]
    pub(crate) idle_timeout: f64,

    /// Default memory (data segment) limit of each function process (e.g. 512MiB).
    #[arg(long, env = "SHS_LIMIT_MEMORY", value_name = "BYTES", value_parser = parse_limit)]
    pub(crate) limit_memory: Option<u64>,

    /// Default CPU-seconds limit of each function process.
    #[arg(long, env = "SHS_LIMIT_CPU", value_name = "SECS")]
    pub(crate) limit_cpu: Option<u64>,

    /// Default open-files limit of each function process.
    #[arg(long, env = "SHS_LIMIT_FILES", value_name = "N")]
    pub(crate) limit_files: Option<u64>,

    /// Default limit on processes of the user a function runs as (not enforced for root).
    #[arg(long, env = "SHS_LIMIT_PROCESSES", value_name = "N")]
    pub(crate) limit_processes: Option<u64>,

    /// API key clients must send (X-API-Key or Authorization: Bearer) on every route but
    /// /health and /ready; repeat, or separate with commas, for several.
    #[arg(
        long = "api-key",
        env = "SHS_API_KEY",
        value_delimiter = ',',
        value_name = "KEY",
        hide_env_values = true
    )]
    pub(crate) api_keys: Vec<String>,

    /// Requests a second allowed per client address (token bucket); off when not set.
    #[arg(long, env = "SHS_RATE_LIMIT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate_limit: Option<u32>,

    /// Requests a client may make at once after a quiet spell [default: the rate limit].
    #[arg(long, env = "SHS_RATE_BURST", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate_burst: Option<u32>,

    /// Proxy (address or CIDR) whose X-Forwarded-For header is believed for rate limiting;
    /// repeat or separate with commas. By default it is never believed.
    #[arg(long = "trusted-proxy", env = "SHS_TRUSTED_PROXY", value_delimiter = ',', value_name = "ADDR", value_parser = parse_net)]
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,

    /// Where the callbacks of asynchronous invocations (`X-Callback-Url`) may go: a host name
    /// (or address) or a CIDR; repeat or separate with commas. By default anywhere: on a
    /// server others can reach, set it, or a client can make shs POST to hosts inside your
    /// network (server-side request forgery).
    #[arg(
        long = "callback-allow",
        env = "SHS_CALLBACK_ALLOW",
        value_delimiter = ',',
        value_name = "HOST|CIDR"
    )]
    pub(crate) callback_allow: Vec<String>,

    /// Origin allowed to call the API from a browser (CORS); `*` for any; repeat or separate
    /// with commas. By default no CORS headers are sent.
    #[arg(
        long = "cors-origin",
        env = "SHS_CORS_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub(crate) cors_origins: Vec<String>,

    /// The dashboard at /ui/ (its page holds no data; with --api-key it asks for a key).
    #[arg(
        long,
        env = "SHS_UI",
        value_enum,
        default_value = "on",
        value_name = "on|off"
    )]
    pub(crate) ui: Switch,

    /// The event bus: `local` (the embedded store in --data-dir), or a NATS server with
    /// JetStream, `nats://HOST:PORT`, shared by every supervisor with the same
    /// --bus-namespace.
    #[arg(
        long,
        env = "SHS_BUS",
        default_value = "local",
        value_name = "local|nats://HOST:PORT"
    )]
    pub(crate) bus: String,

    /// Prefix of the streams, buckets and subjects on NATS: supervisors with the same
    /// namespace share events.
    #[arg(
        long,
        env = "SHS_BUS_NAMESPACE",
        default_value = "shs",
        value_name = "NAME"
    )]
    pub(crate) bus_namespace: String,

    /// Folder of the embedded event store (asynchronous events, dead letters, history, saved
    /// subscriptions).
    #[arg(
        long,
        env = "SHS_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub(crate) data_dir: PathBuf,

    /// How the event store commits: `full` flushes to disk (survives power loss), `normal`
    /// leaves it to the OS (survives the process being killed).
    #[arg(long, env = "SHS_STORE_DURABILITY", value_enum, default_value = "full")]
    pub(crate) store_durability: Durability,

    /// Asynchronous invocations one function may have queued (`Prefer: respond-async` on
    /// `/run`); more are refused with 429.
    #[arg(long, env = "SHS_MAX_QUEUED_INVOCATIONS", default_value = "10000", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_queued_invocations: u64,

    /// Asynchronous invocations queued in all, across functions; more are refused with 503.
    #[arg(long, env = "SHS_MAX_QUEUED_INVOCATIONS_TOTAL", default_value = "100000", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_queued_invocations_total: u64,

    /// Seconds settled events (and finished invocations) are kept for `GET /events/{id}`
    /// (`GET /invocations/{id}`).
    #[arg(long, env = "SHS_EVENT_RETENTION", default_value = "86400", value_name = "SECS", value_parser = parse_seconds_long)]
    pub(crate) event_retention: f64,

    /// How long an `Idempotency-Key` is kept after its first use: seconds, or a duration such
    /// as `90m`, `24h`, `7d`.
    #[arg(long, env = "SHS_IDEMPOTENCY_TTL", default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) idempotency_ttl: Duration,

    /// Attempts of an asynchronous delivery before it becomes a dead letter, where
    /// function.toml sets no `max_attempts`.
    #[arg(long, env = "SHS_MAX_ATTEMPTS", default_value_t = defaults::MAX_ATTEMPTS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_attempts: u32,

    /// Seconds before the first retry of a failed asynchronous delivery (doubling after each
    /// failure, with jitter), where function.toml sets no `retry_backoff`.
    #[arg(long, env = "SHS_RETRY_BACKOFF", default_value_t = defaults::RETRY_BACKOFF.as_secs_f64(), value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) retry_backoff: f64,

    /// Seconds a stopping function process gets after its stdin closes, and again after
    /// SIGTERM, before it is killed.
    #[arg(long, env = "SHS_KILL_GRACE", default_value_t = defaults::KILL_GRACE.as_secs_f64(), value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) kill_grace: f64,
}

fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    if s.trim().trim_end_matches('s').parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_seconds(s)
}

/// An address (`10.0.0.1`) or a network (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a network (e.g. 10.0.0.1 or 10.0.0.0/8)"))
}

fn parse_seconds_long(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs <= 315_360_000.0 {
        Ok(secs)
    } else {
        Err(format!("{s:?} must be a positive number of seconds"))
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(secs)
    } else {
        Err(format!("{s:?} must be between 0 and 86400 seconds"))
    }
}

/// A duration: seconds (`3600`, `0.5s`) or humantime's form (`90m`, `24h`, `7d`, `1h 30m`);
/// more than 0, at most ten years.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = match parse_seconds_long(s) {
        Ok(secs) => Duration::from_secs_f64(secs),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration such as 3600, 90m, 24h or 7d ({e})"))?,
    };
    if duration.is_zero() || duration > Duration::from_secs(315_360_000) {
        return Err(format!("{s:?} must be more than 0 and at most ten years"));
    }
    Ok(duration)
}

/// A size in bytes that fits in memory: `1048576`, `512KiB`, `1MiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let size = shs_supervisor::spec::parse_size(s)?;
    usize::try_from(size).map_err(|_| format!("{s:?} is too large"))
}

/// A size in bytes, for a limit.
fn parse_limit(s: &str) -> Result<u64, String> {
    shs_supervisor::spec::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512K"), Ok(524_288));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("1T").is_err());
        assert_eq!(parse_limit("2G"), Ok(2 << 30));
        assert!(parse_net("10.0.0.0/8").is_ok());
        assert!(parse_net("127.0.0.1").is_ok());
        assert!(parse_net("::1").is_ok());
        assert!(parse_net("proxy").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("20y").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("30"), Ok(30.0));
        assert_eq!(parse_seconds("0.5s"), Ok(0.5));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert_eq!(parse_seconds_or_zero("0"), Ok(0.0));
        assert_eq!(parse_seconds_or_zero("2.5"), Ok(2.5));
    }

    /// The README's configuration table lists every flag of `shs serve`, with its variable and
    /// its default as `--help` shows it (the defaults come from `shs_supervisor::defaults`).
    #[test]
    fn the_readme_configuration_table_is_true() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let rows: Vec<Vec<&str>> = readme
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .map(|line| {
                line.split(" | ")
                    .map(|cell| cell.trim_matches(['|', ' ']))
                    .collect()
            })
            .collect();
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let flag = format!("`--{long}");
            let row = rows
                .iter()
                .find(|row| row[0] == format!("{flag}`") || row[0].starts_with(&format!("{flag} ")))
                .unwrap_or_else(|| panic!("--{long} is missing from the README's table"));
            let env = arg.get_env().map(|e| format!("`{}`", e.to_string_lossy()));
            assert_eq!(Some(row[1].to_owned()), env, "--{long}: its variable");
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            match defaults.as_slice() {
                // A switch: off unless given.
                [off] if off == "false" => assert_eq!(row[2], "off", "--{long}"),
                [default] => assert_eq!(row[2], format!("`{default}`"), "--{long}: its default"),
                _ => assert!(!row[2].starts_with('`'), "--{long} has no default"),
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
