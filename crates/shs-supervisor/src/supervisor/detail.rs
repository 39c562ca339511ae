//! Everything known about one function, for the dashboard's function page and
//! `GET /functions/{name}`: its state, the configuration in force, its live processes, what it
//! has done, and its activity over the last 15 minutes.

use super::{Kind, Supervisor};
use crate::error::InvokeError;
use crate::spec::{Found, FunctionSpec};
use crate::stats::{Activity, FunctionStats, ProcessInfo};
use crate::supervisor::FunctionInfo;

/// One function, in full.
#[derive(Clone, Debug)]
pub struct FunctionDetail {
    /// What `GET /functions` shows of it.
    pub info: FunctionInfo,
    /// The configuration in force (none while its folder cannot be run).
    pub spec: Option<FunctionSpec>,
    /// The `function.toml` text it was deployed with, if it has one.
    pub manifest: Option<String>,
    /// The processes kept even when idle: its `min_instances`, or without one 1 if it has
    /// subscriptions and 0 if not.
    pub min_instances: usize,
    /// Its live processes (rpc only; an exec function's are not listed).
    pub processes: Vec<ProcessInfo>,
    /// Its counts since the supervisor started.
    pub stats: FunctionStats,
    /// The last 15 minutes.
    pub activity: Activity,
}

/// One function, in brief: for the dashboard's list of functions.
#[derive(Clone, Debug)]
pub struct FunctionSummary {
    /// What `GET /functions` shows of it.
    pub info: FunctionInfo,
    /// Its `instances` and `concurrency` in force (none while it cannot be run).
    pub instances: Option<(usize, usize)>,
    /// Its counts since the supervisor started.
    pub stats: FunctionStats,
    /// The last 15 minutes.
    pub activity: Activity,
}

impl Supervisor {
    /// Every deployed function, in brief, by name.
    pub fn summaries(&self) -> Vec<FunctionSummary> {
        let infos = self.functions();
        let registry = self.inner.registry.read();
        infos
            .into_iter()
            .filter_map(|info| {
                let function = registry.get(&info.name)?;
                let cold_starts = info.pool.as_ref().map_or(0, |p| p.cold_starts);
                Some(FunctionSummary {
                    instances: match (&function.kind, function.spec()) {
                        (Kind::Rpc(pool), _) => {
                            let sizing = pool.sizing();
                            Some((sizing.instances, sizing.concurrency))
                        }
                        (_, spec) => spec.map(|s| (s.instances, s.concurrency)),
                    },
                    stats: function.stats.summary(cold_starts),
                    activity: function.stats.activity(),
                    info,
                })
            })
            .collect()
    }

    /// Everything about function `name`.
    pub fn detail(&self, name: &str) -> Result<FunctionDetail, InvokeError> {
        let function = self.lookup(name)?;
        let info = self
            .functions()
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| InvokeError::NotFound {
                function: name.to_owned(),
            })?;
        let (processes, cold_starts) = match &function.kind {
            Kind::Rpc(pool) => (pool.processes(), pool.status().cold_starts),
            Kind::Exec(_) | Kind::Broken(_) => (Vec::new(), 0),
        };
        let manifest = match &function.found {
            Found::Function(spec) => spec.fingerprint.manifest(),
            Found::Broken { fingerprint, .. } => fingerprint.manifest(),
        }
        .map(str::to_owned);
        let spec = function.spec().cloned();
        let min_instances = spec.as_ref().map_or(0, |s| {
            s.min_instances
                .unwrap_or(usize::from(!info.subscriptions.is_empty()))
        });
        Ok(FunctionDetail {
            info,
            spec,
            manifest,
            min_instances,
            processes,
            stats: function.stats.summary(cold_starts),
            activity: function.stats.activity(),
        })
    }
}
