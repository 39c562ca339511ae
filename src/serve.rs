//! `shs serve`: wires the bus, the supervisor and the HTTP server, and shuts them down in
//! order on SIGTERM or SIGINT.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shs_bus::{Bus, store};
use std::num::NonZeroU32;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shs_http::{AccessConfig, HttpConfig, RateLimit};
use shs_nats::NatsConfig;
use shs_supervisor::spec::Limits;
use shs_supervisor::{Config, Supervisor};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Durability, ServeArgs};

/// The event bus the flags ask for: the embedded store, or NATS JetStream.
async fn open_bus(args: &ServeArgs) -> anyhow::Result<Arc<Bus>> {
    if args.bus == "local" {
        let durability = match args.store_durability {
            Durability::Full => store::Durability::Full,
            Durability::Normal => store::Durability::Normal,
        };
        let store = store::Store::open(&args.data_dir, durability).with_context(|| {
            format!(
                "cannot open the event store in {} (--data-dir)",
                args.data_dir.display()
            )
        })?;
        tracing::info!(path = %store.path().display(), "event store open");
        let retention = Duration::from_secs_f64(args.event_retention);
        let limits = shs_bus::InvocationLimits {
            per_function: args.max_queued_invocations,
            total: args.max_queued_invocations_total,
        };
        return Ok(Arc::new(Bus::with_store_limits(
            args.max_hops,
            Arc::new(store),
            retention,
            limits,
        )));
    }
    if args.bus.starts_with("nats://") {
        let timeout = Duration::from_secs_f64(args.timeout);
        let config = NatsConfig {
            url: args.bus.clone(),
            namespace: args.bus_namespace.clone(),
            // A delivery takes at most the timeout, twice when it waits for a process first.
            sync_timeout: timeout * 2 + Duration::from_secs(5),
            ack_wait: shs_nats::DEFAULT_ACK_WAIT,
            max_hops: args.max_hops,
        };
        let bus = shs_nats::connect(config)
            .await
            .context("cannot use the NATS bus (--bus)")?;
        return Ok(Arc::new(bus));
    }
    anyhow::bail!(
        "--bus must be `local` or `nats://HOST:PORT`, not {:?}",
        args.bus
    )
}

/// How often the recorder folds the histogram samples recorded since into its buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder that `GET /metrics` renders, and a thread for its upkeep:
/// the recorder keeps every histogram sample until upkeep (or a scrape) folds it into the
/// buckets, so without it memory would grow with each request on a server nobody scrapes.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    const SECONDS: [f64; 15] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .context("cannot set up metrics")?
        .install_recorder()
        .context("cannot set up metrics")?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("shs-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    Ok(handle)
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shs-supervisor")
        .build()
        .context("cannot start the async runtime")?;
    // Under an actix System, so that each HTTP worker builds its app in the runtime it serves
    // from, and handles the pipes of the processes it calls.
    let system = shs_http::system(runtime);
    let result = system.block_on(serve(args));
    // Every function process is stopped by now, and the store flushed. Dropping the runtime
    // would wait, with no deadline, for any blocking task still running; the process is about
    // to exit, so leave that to the OS.
    std::mem::forget(system);
    result
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // First of all, so that a SIGTERM at any moment from here on is a clean shutdown.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // Before anything records a metric (handles taken before it would record nothing).
    let metrics = install_metrics()?;
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let url = format!("http://{addr}");

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut config = Config::new(&args.functions_dir);
    config.timeout = Duration::from_secs_f64(args.timeout);
    config.instances = args.instances;
    config.queue = args.queue;
    config.max_line = args.max_line;
    config.inherit_env = args.inherit_env;
    config.secrets_dir = args.secrets_dir.clone();
    config.server_url = url.clone();
    config.watch = !args.no_watch;
    config.idle_timeout =
        (args.idle_timeout > 0.0).then(|| Duration::from_secs_f64(args.idle_timeout));
    config.kill_grace = Duration::from_secs_f64(args.kill_grace);
    config.limits = Limits {
        memory: args.limit_memory,
        cpu_seconds: args.limit_cpu,
        open_files: args.limit_files,
        processes: args.limit_processes,
    };

    // The HTTP workers handle the processes' pipes.
    config.io_threads = workers.max(1);
    config.max_attempts = args.max_attempts;
    config.retry_backoff = Duration::from_secs_f64(args.retry_backoff);
    config.prewarm_budget = args.prewarm_budget;

    // Before the bus, which may create the data folder: a wrong folder changes nothing.
    std::fs::read_dir(&args.functions_dir).with_context(|| {
        format!(
            "cannot serve the functions folder {} (--functions-dir)",
            args.functions_dir.display()
        )
    })?;
    let bus = open_bus(&args).await?;
    let supervisor = Supervisor::start(config, bus.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve the functions folder {} (--functions-dir)",
                args.functions_dir.display()
            )
        })?;

    let grace = Duration::from_secs_f64(args.shutdown_grace);
    let access = AccessConfig {
        api_keys: args
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect(),
        rate_limit: args
            .rate_limit
            .and_then(NonZeroU32::new)
            .map(|per_second| RateLimit {
                per_second,
                burst: args
                    .rate_burst
                    .and_then(NonZeroU32::new)
                    .unwrap_or(per_second),
            }),
        trusted_proxies: args.trusted_proxies.clone(),
    };
    if !access.api_keys.is_empty() {
        tracing::info!(keys = access.api_keys.len(), "API keys required");
    }
    let callbacks =
        shs_http::CallbackPolicy::new(&args.callback_allow).map_err(|e| anyhow::anyhow!("{e}"))?;
    let http_config = HttpConfig {
        callbacks,
        metrics: Some(metrics),
        access,
        cors_origins: args.cors_origins.clone(),
        max_body: args.max_body,
        workers,
        shutdown_grace: grace,
        ui: args.ui == crate::cli::Switch::On,
        idempotency_ttl: args.idempotency_ttl,
    };
    let http = shs_http::server(listener, supervisor.clone(), &http_config)
        .context("cannot start the HTTP server")?;
    let handle = http.server.handle();
    let lifecycle = http.lifecycle;
    // On this thread, under the actix System (see `run`): the workers start from here.
    let mut running = tokio::task::spawn_local(http.server);
    tracing::info!(
        functions_dir = %args.functions_dir.display(),
        workers,
        "listening on {url}"
    );

    let stopped_early = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); None }
        result = &mut running => Some(result),
    };
    // One grace period for everything: requests in flight first, then the functions.
    let deadline = tokio::time::Instant::now() + grace;
    if stopped_early.is_none() {
        // Stop accepting, let in-flight requests finish (up to the grace period).
        lifecycle.drain(&handle, grace).await;
    }
    // The functions, before the HTTP workers: the workers handle their pipes.
    supervisor
        .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    let server_result = match stopped_early {
        None => {
            handle.stop(false).await;
            let _ = running.await;
            Ok(())
        }
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(anyhow::Error::from(e).context("the HTTP server failed")),
        Some(Err(e)) => Err(anyhow::Error::from(e).context("the HTTP server task failed")),
    };
    bus.flush().await;
    server_result?;
    tracing::info!("stopped");
    Ok(())
}
