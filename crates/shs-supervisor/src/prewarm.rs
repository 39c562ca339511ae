//! Chain-aware prewarming: when a function runs, the processes of the functions further down
//! its known chains are started at once if they have none, so that a cold chain pays about
//! one cold start instead of one per step.
//!
//! The chains come from the publish graph: the event types each function publishes, learned
//! from what it publishes while it runs (and kept in the store, when there is one) or declared
//! with `publishes = [...]` in its `function.toml`, for a chain that has never run. A type
//! leads to the functions subscribed to it (the subscription table); the walk follows each
//! of those in turn, each function once, at most `max_hops` steps deep.
//!
//! The cost is bounded: nothing is started for a function that is not subscribed to anything
//! the invoked function's chain publishes, and at most `--prewarm-budget` processes a second
//! are started this way (a token bucket; 0 turns prewarming off). A function with no known
//! publishes costs one map lookup per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

/// One event type a function publishes, as `GET /functions` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishEdge {
    /// The event type.
    pub event_type: String,
    /// Listed in `publishes` of its `function.toml`.
    pub declared: bool,
    /// Seen published by the function.
    pub published: bool,
}

#[derive(Clone, Copy, Default)]
struct Flags {
    declared: bool,
    published: bool,
}

/// The most types remembered per function (declared and learned together): past it, new
/// types are not learned (a function publishing a type per request cannot grow the map).
pub(crate) const MAX_TYPES_PER_FUNCTION: usize = 256;

/// The publish graph and the budget of prewarm starts.
pub(crate) struct Prewarm {
    graph: RwLock<HashMap<Arc<str>, BTreeMap<String, Flags>>>,
    budget: Mutex<Bucket>,
    per_second: u32,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Prewarm {
    /// A graph with nothing learned, and a budget of `per_second` starts a second (bursts of as
    /// many).
    pub(crate) fn new(per_second: u32) -> Prewarm {
        Prewarm {
            graph: RwLock::new(HashMap::new()),
            budget: Mutex::new(Bucket {
                tokens: f64::from(per_second),
                at: Instant::now(),
            }),
            per_second,
        }
    }

    /// Whether prewarming is on (a budget above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.per_second > 0
    }

    /// Records that `function` published `event_type`; true when that is new (to be kept).
    pub(crate) fn learn(&self, function: &str, event_type: &str) -> bool {
        if let Some(types) = self.graph.read().get(function)
            && types.get(event_type).is_some_and(|f| f.published)
        {
            return false;
        }
        let mut graph = self.graph.write();
        let types = graph.entry(Arc::from(function)).or_default();
        if !types.contains_key(event_type) && types.len() >= MAX_TYPES_PER_FUNCTION {
            return false;
        }
        let flags = types.entry(event_type.to_owned()).or_default();
        let new = !flags.published;
        flags.published = true;
        new
    }

    /// Sets the types `function`'s `function.toml` declares (replacing the ones it declared
    /// before; what was learned stays).
    pub(crate) fn declare(&self, function: &str, declared: &[String]) {
        let mut graph = self.graph.write();
        let types = graph.entry(Arc::from(function)).or_default();
        types.retain(|_, flags| {
            flags.declared = false;
            flags.published
        });
        for event_type in declared.iter().take(MAX_TYPES_PER_FUNCTION) {
            types.entry(event_type.clone()).or_default().declared = true;
        }
        if types.is_empty() {
            graph.remove(function);
        }
    }

    /// Forgets a removed function.
    pub(crate) fn forget(&self, function: &str) {
        self.graph.write().remove(function);
    }

    /// The types `function` publishes, declared or learned, sorted.
    pub(crate) fn edges(&self, function: &str) -> Vec<PublishEdge> {
        self.graph
            .read()
            .get(function)
            .map_or_else(Vec::new, |types| {
                types
                    .iter()
                    .map(|(event_type, flags)| PublishEdge {
                        event_type: event_type.clone(),
                        declared: flags.declared,
                        published: flags.published,
                    })
                    .collect()
            })
    }

    /// The types `function` publishes, if it publishes any (the cheap check of every request).
    pub(crate) fn types_of(&self, function: &str) -> Option<Vec<String>> {
        let graph = self.graph.read();
        let types = graph.get(function)?;
        Some(types.keys().cloned().collect())
    }

    /// Takes one start from the budget, if one is left this second.
    pub(crate) fn take(&self) -> bool {
        let mut bucket = self.budget.lock();
        let now = Instant::now();
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_and_declared_types_are_kept_apart() {
        let p = Prewarm::new(8);
        assert!(p.types_of("a").is_none());
        assert!(p.learn("a", "x.done"));
        assert!(!p.learn("a", "x.done"), "known already");
        p.declare("a", &["y.done".to_owned(), "x.done".to_owned()]);
        let edges = p.edges("a");
        assert_eq!(edges.len(), 2);
        assert_eq!(
            (edges[0].declared, edges[0].published),
            (true, true),
            "{edges:?}"
        );
        assert_eq!((edges[1].declared, edges[1].published), (true, false));
        // A redeploy that declares nothing keeps what was learned only.
        p.declare("a", &[]);
        assert_eq!(p.types_of("a"), Some(vec!["x.done".to_owned()]));
        p.forget("a");
        assert!(p.edges("a").is_empty());
        // Declaring nothing for a function with nothing learned leaves no entry.
        p.declare("b", &[]);
        assert!(p.types_of("b").is_none());
    }

    #[test]
    fn a_function_publishing_a_new_type_each_time_cannot_grow_the_graph() {
        let p = Prewarm::new(8);
        for n in 0..10_000 {
            p.learn("noisy", &format!("t.{n}"));
        }
        assert_eq!(p.edges("noisy").len(), MAX_TYPES_PER_FUNCTION);
    }

    #[test]
    fn the_budget_allows_its_rate_and_no_more() {
        let p = Prewarm::new(3);
        assert!(p.enabled());
        let taken = (0..10).filter(|_| p.take()).count();
        assert_eq!(taken, 3, "a burst of the rate");
        assert!(!Prewarm::new(0).enabled());
        assert!(!Prewarm::new(0).take());
    }
}
