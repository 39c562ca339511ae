//! Keeping the registry in step with the functions folder: a scan is compared with the
//! registry, and new functions are deployed, changed ones redeployed (subscriptions from
//! `function.toml` updated, the old deployment drained in the background) and removed ones
//! retired. A function whose `function.toml` cannot be read keeps the subscriptions its last
//! valid one gave it.
//!
//! Which rpc functions start at deploy ([`Plan`]): at start-up, with a store that keeps what
//! was learned, only those that need a process (`min_instances`, or subscriptions: from
//! `function.toml`, or saved from an earlier run), and once those whose deployment has never
//! run (to learn the subscriptions their start-up code makes; such a process is stopped
//! once it has answered `initialize` if the function then needs none). Every other function
//! starts on its first request or event. A deployment made while the server runs starts at
//! once, as before. Starts are spread: [`STARTS_AT_ONCE`] at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shs_bus::{Deployment, Learned};
use tokio::sync::Semaphore;

use super::{Function, Kind, Supervisor};
use crate::defaults::STARTS_AT_ONCE;
use crate::exec::ExecRunner;
use crate::logs::LogRing;
use crate::pool::Pool;
use crate::spec::{self, Found, Mode};
use crate::stats::Stats;

/// Why a reconciliation runs.
pub(super) enum Deploy {
    /// The server starts: with what earlier runs learned, if the bus keeps it.
    Initial(Option<Learned>),
    /// The folder changed while the server runs.
    Rescan,
}

/// What a deployment does with an rpc function's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Start a process and keep it (`min_instances`, subscriptions, or a deployment made
    /// while the server runs).
    Keep,
    /// Start a process to learn the function's start-up subscriptions; stop it once learned
    /// if the function needs none.
    Learn,
    /// Start nothing: the first request or event will.
    Wait,
}

/// What to do with `spec` at deploy (see the module doc).
fn plan(spec: &spec::FunctionSpec, deploy: &Deploy) -> Plan {
    let Deploy::Initial(Some(learned)) = deploy else {
        return Plan::Keep;
    };
    let needs = match spec.min_instances {
        Some(min) => min > 0,
        None => !spec.subscribe.is_empty() || learned.subscribed.contains(&spec.name),
    };
    if needs {
        Plan::Keep
    } else if learned.digests.get(&spec.name) != Some(&spec.fingerprint.digest()) {
        Plan::Learn
    } else {
        Plan::Wait
    }
}

impl Supervisor {
    /// Reads the functions folder again and applies what changed.
    pub async fn rescan(&self) {
        let dir = &self.inner.host.config.functions_dir;
        match spec::scan(dir, &self.inner.defaults) {
            Ok(found) => self.reconcile(found, Deploy::Rescan).await,
            Err(e) => tracing::warn!("cannot rescan the functions folder: {e}"),
        }
    }

    pub(super) async fn reconcile(&self, mut found: BTreeMap<String, Found>, deploy: Deploy) {
        let initial = matches!(deploy, Deploy::Initial(_));
        let _one_at_a_time = self.inner.reconciling.lock().await;
        if self.inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let bus = &self.inner.host.bus;
        let mut retired = Vec::new();
        let mut deployed = Vec::new();
        {
            let mut registry = self.inner.registry.write();
            let removed: Vec<String> = registry
                .keys()
                .filter(|name| !found.contains_key(*name))
                .cloned()
                .collect();
            for name in removed {
                if let Some(old) = registry.remove(&name) {
                    bus.remove_function(&name);
                    self.inner.host.prewarm.forget(&name);
                    tracing::info!(function = %name, "function removed");
                    retired.push((old, "removed"));
                }
            }
            for (name, now) in std::mem::take(&mut found) {
                let old = registry.get(&name).cloned();
                if old.as_ref().is_some_and(|old| old.found.same_as(&now)) {
                    continue;
                }
                let old_subscriptions = old
                    .as_ref()
                    .map(|o| o.manifest_subscriptions.clone())
                    .unwrap_or_default();
                let logs = old.as_ref().map_or_else(Arc::default, |o| o.logs.clone());
                let stats = old
                    .as_ref()
                    .map_or_else(|| Arc::new(Stats::new(&name)), |o| o.stats.clone());
                // Processes of the deployment this one replaces subscribe no more.
                let deployment = bus.begin_deployment(&name);
                // Subscriptions from function.toml are in force before the process starts;
                // those a redeploy no longer lists are dropped. While function.toml cannot
                // be read, the last valid ones stay: events accepted meanwhile get a delivery,
                // retried until the file is fixed (or a dead letter), not dropped.
                let manifest_subscriptions = match &now {
                    Found::Function(spec) => spec.subscribe.clone(),
                    Found::Broken { .. } => old_subscriptions.clone(),
                };
                // The types it declares it publishes (what it was seen publishing stays).
                if let Found::Function(spec) = &now {
                    self.inner.host.prewarm.declare(&name, &spec.publishes);
                }
                for pattern in &old_subscriptions {
                    if !manifest_subscriptions.contains(pattern) {
                        bus.unsubscribe(&name, pattern);
                    }
                }
                for pattern in &manifest_subscriptions {
                    if let Err(e) = bus.subscribe(&name, pattern) {
                        tracing::warn!(function = %name, "ignoring a subscription: {e}");
                    }
                }
                let function =
                    Arc::new(self.build(now, logs, stats, deployment, manifest_subscriptions));
                match (&old, &function.kind) {
                    (_, Kind::Broken(reason)) => {
                        tracing::error!(function = %name, "function cannot be run: {reason}");
                    }
                    (Some(_), _) => tracing::info!(function = %name, "function redeployed"),
                    (None, _) => tracing::info!(function = %name, "function deployed"),
                }
                bus.deployed(&name);
                registry.insert(name, function.clone());
                if let Some(old) = old {
                    retired.push((old, super::REDEPLOYED));
                }
                deployed.push(function);
            }
        }
        for (old, what) in retired {
            let drain = old
                .spec()
                .map_or(self.inner.defaults.timeout, |s| s.timeout);
            self.inner
                .host
                .handle
                .spawn(async move { old.retire(what, drain).await });
        }
        let to_start: Vec<(Arc<Pool>, Plan)> = deployed
            .iter()
            .filter_map(|f| match &f.kind {
                Kind::Rpc(pool) => Some((pool.clone(), plan(pool.spec(), &deploy))),
                _ => None,
            })
            .filter(|(_, plan)| *plan != Plan::Wait)
            .collect();
        if initial {
            let waiting = deployed.len() - to_start.len();
            if waiting > 0 {
                tracing::info!(
                    functions = waiting,
                    "not started at deploy (no subscriptions, no min_instances): each starts on its first request"
                );
            }
            self.inner.starting.store(to_start.len(), Ordering::Release);
            if to_start.is_empty() {
                self.inner.ready.send_replace(true);
            }
        }
        let spread = Arc::new(Semaphore::new(STARTS_AT_ONCE));
        for (pool, plan) in to_start {
            let inner = self.inner.clone();
            let spread = spread.clone();
            self.inner.host.handle.spawn(async move {
                let started = {
                    let _permit = spread.acquire().await;
                    pool.start_now().await
                };
                if started.is_ok() {
                    let spec = pool.spec();
                    inner
                        .host
                        .bus
                        .save_learned(&spec.name, &spec.fingerprint.digest());
                    if plan == Plan::Learn {
                        pool.stop_unneeded();
                    }
                }
                if initial && inner.starting.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.ready.send_replace(true);
                    tracing::info!("ready: every function found at start-up has started");
                }
            });
        }
    }

    fn build(
        &self,
        found: Found,
        logs: Arc<LogRing>,
        stats: Arc<Stats>,
        deployment: Deployment,
        manifest_subscriptions: Vec<String>,
    ) -> Function {
        let host = &self.inner.host;
        let mut webhook = None;
        let mut private = None;
        let kind = match &found {
            Found::Function(spec) => {
                let secrets = host
                    .secrets
                    .webhook_key(spec)
                    .and_then(|key| Ok((key, host.secrets.private_copy(spec)?)));
                match secrets {
                    Ok((key, copy)) => {
                        webhook = key.map(Arc::new);
                        let mut spec = (**spec).clone();
                        spec.secrets_folder = copy.as_ref().map(|c| c.path().to_owned());
                        private = copy;
                        let spec = Arc::new(spec);
                        match spec.mode {
                            Mode::Rpc => {
                                Kind::Rpc(Pool::new(spec, host.clone(), logs.clone(), deployment))
                            }
                            Mode::Exec | Mode::Cgi => {
                                Kind::Exec(ExecRunner::new(spec, host.clone(), logs.clone()))
                            }
                        }
                    }
                    Err(error) => {
                        logs.push(0, None, "shs", &format!("cannot be run: {error}"));
                        Kind::Broken(error)
                    }
                }
            }
            Found::Broken { error, .. } => {
                logs.push(0, None, "shs", &format!("cannot be run: {error}"));
                Kind::Broken(error.to_string())
            }
        };
        let mut schedules = super::ScheduleTasks::default();
        if let (Found::Function(spec), false) = (&found, matches!(kind, Kind::Broken(_))) {
            for schedule in &spec.schedules {
                let task = host.handle.spawn(crate::schedule::run(
                    host.bus.clone(),
                    spec.name.clone(),
                    schedule.clone(),
                ));
                schedules.0.push(task.abort_handle());
            }
        }
        Function {
            found,
            kind,
            manifest_subscriptions,
            logs,
            stats,
            webhook,
            _secrets: private,
            schedules,
        }
    }
}
