//! The names of everything a namespace owns on the NATS server: streams, subjects, consumers
//! and queue groups, all derived from `--bus-namespace` by [`Names`].

/// Names derived from the namespace.
pub(crate) struct Names {
    /// The namespace as it appears in subjects and consumer names.
    pub(crate) ns: String,
    /// The stream of asynchronous events (and retried dead letters).
    pub(crate) stream: String,
    /// The stream of dead letters.
    pub(crate) dead_stream: String,
    /// The stream holding the shared subscription table.
    pub(crate) subscriptions: String,
    /// The stream holding the failed attempts of deliveries not yet settled.
    pub(crate) attempts: String,
    /// The stream holding which consumer of a function delivers an event that several of the
    /// function's patterns match.
    pub(crate) claims: String,
}

// The subscription table and the attempt records are streams that keep the last message of
// each subject (a key-value store built by hand: the buckets of recent clients ask for
// features that older servers refuse).

impl Names {
    pub(crate) fn new(namespace: &str) -> Names {
        let ns: String = namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let upper = ns.to_ascii_uppercase();
        Names {
            stream: format!("{upper}_EVENTS"),
            dead_stream: format!("{upper}_DEAD"),
            subscriptions: format!("{upper}_SUBSCRIPTIONS"),
            attempts: format!("{upper}_ATTEMPTS"),
            claims: format!("{upper}_CLAIMS"),
            ns,
        }
    }

    /// Where an asynchronous event of `event_type` is published (with a pattern: what a
    /// consumer of that pattern filters on).
    pub(crate) fn event_subject(&self, event_type: &str) -> String {
        format!("{}.events.{event_type}", self.ns)
    }

    /// Where the retried dead letters of `function` are published.
    pub(crate) fn retry_subject(&self, function: &str) -> String {
        format!("{}.retry.{function}", self.ns)
    }

    /// Where synchronous deliveries to `function` are requested.
    pub(crate) fn sync_subject(&self, function: &str) -> String {
        format!("{}.sync.{function}", self.ns)
    }

    /// The queue group of the supervisors that run `function`.
    pub(crate) fn sync_group(&self, function: &str) -> String {
        format!("{}-{function}", self.ns)
    }

    /// Where the dead letters of `function` are kept.
    pub(crate) fn dead_subject(&self, function: &str) -> String {
        format!("{}.dead.{function}", self.ns)
    }

    /// The prefix of every dead-letter subject.
    pub(crate) fn dead_prefix(&self) -> String {
        format!("{}.dead.", self.ns)
    }

    /// The subject whose last message says whether `function` subscribes to `pattern`.
    pub(crate) fn subscription_subject(&self, function: &str, pattern: &str) -> String {
        format!("{}.subs.{function}.{}", self.ns, hex(pattern))
    }

    /// Every subscription subject.
    pub(crate) fn subscriptions_filter(&self) -> String {
        format!("{}.subs.>", self.ns)
    }

    /// The function and pattern of a subscription subject.
    pub(crate) fn subscription_of(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject.strip_prefix(&format!("{}.subs.", self.ns))?;
        let (function, pattern) = rest.split_once('.')?;
        Some((function.to_owned(), unhex(pattern)?))
    }

    /// The subject whose last message holds the failed attempts of delivering `event_id` to
    /// `function`.
    pub(crate) fn attempts_subject(&self, event_id: &str, function: &str) -> String {
        format!("{}.attempts.{}.{function}", self.ns, hex(event_id))
    }

    /// Every attempts subject.
    pub(crate) fn attempts_filter(&self) -> String {
        format!("{}.attempts.>", self.ns)
    }

    /// The subject whose first message names the consumer that delivers the message `seq` of
    /// the events stream to `function`.
    pub(crate) fn claim_subject(&self, function: &str, seq: u64) -> String {
        format!("{}.claims.{function}.{seq}", self.ns)
    }

    /// Every claim subject.
    pub(crate) fn claims_filter(&self) -> String {
        format!("{}.claims.>", self.ns)
    }

    /// The durable consumer of `function`'s events that match `pattern`.
    pub(crate) fn consumer(&self, function: &str, pattern: &str) -> String {
        format!("{}_{function}_{:016x}", self.ns, fnv(pattern))
    }

    /// The durable consumer of `function`'s retried dead letters.
    pub(crate) fn retry_consumer(&self, function: &str) -> String {
        format!("{}_{function}__retry", self.ns)
    }
}

/// FNV-1a, for stable short names of patterns.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_for_nats() {
        let names = Names::new("t.e st");
        assert_eq!(names.ns, "t_e_st");
        assert_eq!(names.stream, "T_E_ST_EVENTS");
        assert_eq!(
            names.event_subject("user.created"),
            "t_e_st.events.user.created"
        );
        let consumer = names.consumer("f-1", "orders.>");
        assert!(consumer.starts_with("t_e_st_f-1_"));
        assert!(!consumer.contains(['.', '*', '>', ' ']));
        assert_ne!(names.consumer("f", "a.*"), names.consumer("f", "a.>"));
    }

    #[test]
    fn hex_round_trips() {
        for text in ["orders.>", "user.*", "ü.x"] {
            assert_eq!(unhex(&hex(text)).as_deref(), Some(text));
        }
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_subscription_subject_reads_back() {
        let names = Names::new("shop");
        let subject = names.subscription_subject("billing", "order.*");
        assert_eq!(
            names.subscription_of(&subject),
            Some(("billing".to_owned(), "order.*".to_owned()))
        );
        assert_eq!(names.subscription_of("other.subs.f.61"), None);
    }
}
