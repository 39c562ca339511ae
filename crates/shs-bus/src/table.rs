//! The subscription table: which functions take which event types.
//!
//! A subscription is a pair (function, pattern). A pattern is an event type, or an event type
//! with NATS-style wildcards: `*` stands for exactly one dot-separated token and `>`, as the last
//! token, for one or more. `user.*` matches `user.created` but not `user` or `user.a.b`;
//! `orders.>` matches `orders.paid` and `orders.eu.paid` but not `orders`.
//!
//! Patterns live in a token trie, so matching an event type costs one walk down the trie per
//! token (plus the wildcard branches), whatever the number of subscriptions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::BusError;

/// The longest event type or pattern accepted, in characters (as JSON Schema's `maxLength`
/// counts them, so that the OpenAPI description can say it exactly).
pub const MAX_TYPE_LEN: usize = 255;

/// The most patterns one function may be subscribed to: a function cannot grow the table (and
/// the work of every publish) without bound.
pub const MAX_SUBSCRIPTIONS_PER_FUNCTION: usize = 1000;

/// Checks that `event_type` can be published: 1 to [`MAX_TYPE_LEN`] characters, no whitespace or
/// control characters, dot-separated tokens that are not empty, and no wildcard tokens.
pub fn validate_type(event_type: &str) -> Result<(), BusError> {
    validate(event_type, false)
}

/// Checks that `pattern` can be subscribed to: an event type in which a token may be `*`, and
/// the last token may be `>`.
pub fn validate_pattern(pattern: &str) -> Result<(), BusError> {
    validate(pattern, true)
}

fn validate(text: &str, wildcards: bool) -> Result<(), BusError> {
    let invalid = |reason: &'static str| BusError::InvalidType {
        event_type: text.chars().take(80).collect(),
        reason,
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if text.chars().count() > MAX_TYPE_LEN {
        return Err(invalid("it is longer than 255 characters"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace or control characters"));
    }
    let mut tokens = text.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        match token {
            "" => {
                return Err(invalid(
                    "it has an empty token (a leading, trailing or double dot)",
                ));
            }
            "*" if !wildcards => {
                return Err(invalid("a published type cannot contain the wildcard `*`"));
            }
            ">" if !wildcards => {
                return Err(invalid("a published type cannot contain the wildcard `>`"));
            }
            ">" if !last => return Err(invalid("`>` must be the last token")),
            t if t.len() > 1 && (t.contains('*') || t.contains('>')) => {
                return Err(invalid("`*` and `>` must be whole tokens"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `pattern` has a wildcard token.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

#[derive(Default, Debug)]
struct Node {
    /// Functions whose pattern ends at this node.
    here: BTreeSet<Arc<str>>,
    /// Functions whose pattern continues with `>` from this node.
    rest: BTreeSet<Arc<str>>,
    /// Literal next tokens.
    children: HashMap<Box<str>, Node>,
    /// The `*` next token.
    star: Option<Box<Node>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.rest.is_empty()
            && self.children.is_empty()
            && self.star.is_none()
    }

    fn collect<'a>(&'a self, tokens: &[&str], out: &mut Vec<&'a Arc<str>>) {
        let Some((first, rest)) = tokens.split_first() else {
            out.extend(self.here.iter());
            return;
        };
        out.extend(self.rest.iter());
        if let Some(child) = self.children.get(*first) {
            child.collect(rest, out);
        }
        if let Some(star) = &self.star {
            star.collect(rest, out);
        }
    }

    /// Removes `function` from the pattern `tokens` below this node; prunes empty nodes.
    fn remove(&mut self, tokens: &[&str], function: &str) -> bool {
        let Some((first, rest)) = tokens.split_first() else {
            return self.here.remove(function);
        };
        match *first {
            ">" if rest.is_empty() => self.rest.remove(function),
            "*" => {
                let Some(star) = self.star.as_mut() else {
                    return false;
                };
                let removed = star.remove(rest, function);
                if star.is_empty() {
                    self.star = None;
                }
                removed
            }
            token => {
                let Some(child) = self.children.get_mut(token) else {
                    return false;
                };
                let removed = child.remove(rest, function);
                if child.is_empty() {
                    self.children.remove(token);
                }
                removed
            }
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    /// The event type or pattern.
    pub pattern: String,
    /// The subscribing function.
    pub function: String,
}

/// The set of (function, pattern) subscriptions, indexed both ways.
///
/// Not synchronised: the bus keeps it behind a lock.
#[derive(Default, Debug)]
pub struct SubscriptionTable {
    root: Node,
    by_function: BTreeMap<Arc<str>, BTreeSet<String>>,
}

impl SubscriptionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `function` to `pattern`. Returns `false` when it was subscribed already. A
    /// function at [`MAX_SUBSCRIPTIONS_PER_FUNCTION`] gets [`BusError::TooManySubscriptions`].
    pub fn insert(&mut self, function: &str, pattern: &str) -> Result<bool, BusError> {
        validate_pattern(pattern)?;
        let name: Arc<str> = match self.by_function.get_key_value(function) {
            Some((_, patterns)) if patterns.contains(pattern) => return Ok(false),
            Some((_, patterns)) if patterns.len() >= MAX_SUBSCRIPTIONS_PER_FUNCTION => {
                return Err(BusError::TooManySubscriptions {
                    function: function.to_owned(),
                    limit: MAX_SUBSCRIPTIONS_PER_FUNCTION,
                });
            }
            Some((name, _)) => name.clone(),
            None => Arc::from(function),
        };
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            match token {
                ">" if tokens.peek().is_none() => {
                    node.rest.insert(name.clone());
                    self.by_function
                        .entry(name)
                        .or_default()
                        .insert(pattern.to_owned());
                    return Ok(true);
                }
                "*" => node = node.star.get_or_insert_with(Box::default),
                literal => node = node.children.entry(literal.into()).or_default(),
            }
        }
        node.here.insert(name.clone());
        self.by_function
            .entry(name)
            .or_default()
            .insert(pattern.to_owned());
        Ok(true)
    }

    /// Drops the subscription of `function` to `pattern`. Returns whether there was one.
    pub fn remove(&mut self, function: &str, pattern: &str) -> bool {
        let Some(patterns) = self.by_function.get_mut(function) else {
            return false;
        };
        if !patterns.remove(pattern) {
            return false;
        }
        if patterns.is_empty() {
            self.by_function.remove(function);
        }
        let tokens: Vec<&str> = pattern.split('.').collect();
        self.root.remove(&tokens, function)
    }

    /// Drops every subscription of `function`; returns its patterns.
    pub fn remove_function(&mut self, function: &str) -> Vec<String> {
        let patterns: Vec<String> = self
            .by_function
            .get(function)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default();
        for pattern in &patterns {
            self.remove(function, pattern);
        }
        patterns
    }

    /// The functions subscribed to a pattern that matches `event_type`, each once, sorted.
    pub fn matching(&self, event_type: &str) -> Vec<Arc<str>> {
        let tokens: Vec<&str> = event_type.split('.').collect();
        let mut found = Vec::new();
        self.root.collect(&tokens, &mut found);
        let mut out: Vec<Arc<str>> = found.into_iter().cloned().collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether one pattern matches an event type (the same rules as the table).
    pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
        let mut tokens = event_type.split('.');
        let mut parts = pattern.split('.').peekable();
        while let Some(part) = parts.next() {
            match part {
                ">" if parts.peek().is_none() => return tokens.next().is_some(),
                "*" => {
                    if tokens.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if tokens.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        tokens.next().is_none()
    }

    /// The patterns `function` is subscribed to, sorted.
    pub fn patterns_of(&self, function: &str) -> Vec<String> {
        self.by_function
            .get(function)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every subscription, sorted by pattern, then function.
    pub fn all(&self) -> Vec<Subscription> {
        let mut rows: Vec<Subscription> = self
            .by_function
            .iter()
            .flat_map(|(function, patterns)| {
                patterns.iter().map(move |pattern| Subscription {
                    pattern: pattern.clone(),
                    function: function.to_string(),
                })
            })
            .collect();
        rows.sort();
        rows
    }

    /// How many (function, pattern) pairs there are.
    pub fn len(&self) -> usize {
        self.by_function.values().map(BTreeSet::len).sum()
    }

    /// Whether there are no subscriptions at all.
    pub fn is_empty(&self) -> bool {
        self.by_function.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<Arc<str>>) -> Vec<String> {
        v.into_iter().map(|s| s.to_string()).collect()
    }

    fn table(rows: &[(&str, &str)]) -> SubscriptionTable {
        let mut t = SubscriptionTable::new();
        for (function, pattern) in rows {
            t.insert(function, pattern).expect("valid pattern");
        }
        t
    }

    #[test]
    fn exact_types_match_exactly() {
        let t = table(&[
            ("a", "user.created"),
            ("b", "user.created"),
            ("c", "user.deleted"),
        ]);
        assert_eq!(names(t.matching("user.created")), ["a", "b"]);
        assert_eq!(names(t.matching("user.deleted")), ["c"]);
        assert!(t.matching("user").is_empty());
        assert!(t.matching("user.created.x").is_empty());
        assert!(t.matching("other").is_empty());
    }

    #[test]
    fn a_function_gets_an_event_once_however_often_it_subscribed() {
        let mut t = table(&[
            ("a", "user.created"),
            ("a", "user.*"),
            ("a", "user.>"),
            ("a", ">"),
        ]);
        assert_eq!(
            t.insert("a", "user.created").ok(),
            Some(false),
            "duplicate insert is a no-op"
        );
        assert_eq!(names(t.matching("user.created")), ["a"]);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn star_matches_one_token() {
        let t = table(&[("a", "user.*"), ("b", "*.created"), ("c", "*")]);
        assert_eq!(names(t.matching("user.created")), ["a", "b"]);
        assert_eq!(names(t.matching("user.x")), ["a"]);
        assert_eq!(names(t.matching("order.created")), ["b"]);
        assert_eq!(names(t.matching("user")), ["c"]);
        assert!(t.matching("user.a.b").is_empty());
    }

    #[test]
    fn gt_matches_one_or_more_tokens() {
        let t = table(&[("a", "orders.>"), ("b", ">"), ("c", "orders.*.paid")]);
        assert_eq!(names(t.matching("orders.paid")), ["a", "b"]);
        assert_eq!(names(t.matching("orders.eu.paid")), ["a", "b", "c"]);
        assert_eq!(names(t.matching("orders")), ["b"]);
        assert_eq!(names(t.matching("x")), ["b"]);
    }

    #[test]
    fn removing_prunes_and_keeps_the_rest() {
        let mut t = table(&[("a", "x.y"), ("b", "x.y"), ("a", "x.*"), ("a", "x.>")]);
        assert!(t.remove("a", "x.y"));
        assert!(!t.remove("a", "x.y"), "second removal finds nothing");
        assert_eq!(
            names(t.matching("x.y")),
            ["a", "b"],
            "a still matches through x.*"
        );
        assert!(t.remove("a", "x.*"));
        assert!(t.remove("a", "x.>"));
        assert_eq!(names(t.matching("x.y")), ["b"]);
        assert!(t.remove("b", "x.y"));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "the trie is pruned back to nothing");
    }

    #[test]
    fn remove_function_drops_everything_of_one_function() {
        let mut t = table(&[("a", "p"), ("a", "q.*"), ("b", "p")]);
        let mut gone = t.remove_function("a");
        gone.sort();
        assert_eq!(gone, ["p", "q.*"]);
        assert_eq!(names(t.matching("p")), ["b"]);
        assert!(t.matching("q.z").is_empty());
        assert!(t.patterns_of("a").is_empty());
    }

    #[test]
    fn listing_is_sorted_by_pattern_then_function() {
        let t = table(&[("b", "t2"), ("a", "t2"), ("c", "t1")]);
        let rows: Vec<(String, String)> = t
            .all()
            .into_iter()
            .map(|s| (s.pattern, s.function))
            .collect();
        assert_eq!(
            rows,
            [
                ("t1".into(), "c".into()),
                ("t2".into(), "a".into()),
                ("t2".into(), "b".into())
            ]
        );
        assert_eq!(t.patterns_of("a"), ["t2"]);
    }

    #[test]
    fn one_pattern_matches_like_the_table() {
        let cases = [
            ("user.*", "user.created", true),
            ("user.*", "user", false),
            ("user.*", "user.a.b", false),
            ("orders.>", "orders.eu.paid", true),
            ("orders.>", "orders", false),
            (">", "x", true),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("*.created", "order.created", true),
        ];
        for (pattern, event_type, expected) in cases {
            assert_eq!(
                SubscriptionTable::pattern_matches(pattern, event_type),
                expected,
                "{pattern} ~ {event_type}"
            );
            let t = table(&[("f", pattern)]);
            assert_eq!(
                !t.matching(event_type).is_empty(),
                expected,
                "table: {pattern} ~ {event_type}"
            );
        }
    }

    #[test]
    fn validation() {
        for ok in [
            "a",
            "user.created",
            "com.example.v2",
            "a-b_c/d:e",
            "ünïcode.ok",
        ] {
            assert!(validate_type(ok).is_ok(), "{ok} is a valid type");
            assert!(validate_pattern(ok).is_ok(), "{ok} is a valid pattern");
        }
        // 255 characters, whatever their size in UTF-8 (here 1020 bytes).
        let widest = "😍".repeat(255);
        assert!(validate_type(&widest).is_ok());
        assert!(validate_type(&"😍".repeat(256)).is_err());
        for ok in ["*", ">", "a.*", "a.>", "*.b.>", "a.*.c"] {
            assert!(validate_pattern(ok).is_ok(), "{ok} is a valid pattern");
            assert!(validate_type(ok).is_err(), "{ok} is not a publishable type");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a\tb",
            "a\nb",
            "a.>.b",
            "a*",
            "a.b>",
            long.as_str(),
        ] {
            assert!(
                validate_pattern(bad).is_err(),
                "{bad:?} is not a valid pattern"
            );
            assert!(validate_type(bad).is_err(), "{bad:?} is not a valid type");
        }
    }

    #[test]
    fn ten_thousand_subscriptions_and_a_wildcard() {
        let mut t = SubscriptionTable::new();
        for i in 0..10_000 {
            t.insert(&format!("f{i}"), &format!("svc{}.event{}", i % 100, i))
                .expect("valid");
        }
        t.insert("wild", "svc7.*").expect("valid");
        assert_eq!(names(t.matching("svc7.event7")), ["f7", "wild"]);
        assert_eq!(names(t.matching("svc7.nothing")), ["wild"]);
        assert_eq!(t.len(), 10_001);
    }

    #[test]
    fn a_function_has_at_most_max_subscriptions() {
        let mut table = SubscriptionTable::new();
        for i in 0..MAX_SUBSCRIPTIONS_PER_FUNCTION {
            assert_eq!(table.insert("f", &format!("t.{i}")).ok(), Some(true));
        }
        // Past the limit: refused, clearly; again the same one: fine, nothing new.
        let error = table.insert("f", "t.more").expect_err("over the limit");
        assert!(
            error.to_string().contains("subscribed to 1000 patterns"),
            "{error}"
        );
        assert_eq!(table.insert("f", "t.0").ok(), Some(false));
        // Another function is not held back, and one freed place can be used again.
        assert_eq!(table.insert("g", "t.more").ok(), Some(true));
        assert!(table.remove("f", "t.0"));
        assert_eq!(table.insert("f", "t.more").ok(), Some(true));
        assert_eq!(table.len(), MAX_SUBSCRIPTIONS_PER_FUNCTION + 1);
    }
}
