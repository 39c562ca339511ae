//! The rules of publishing, written once for every backend: where a publish stands in its
//! causal context ([`place`]), where a chain of events is cut and what the cut says
//! ([`hop_cut`]), and what a synchronous publish answers ([`publish_result`]).
//!
//! Only [`crate::Bus`] calls these: a backend never sees an event that was not placed, nor
//! decides a cut, so the embedded store and NATS cannot disagree on them.

use std::sync::Arc;

use shs_protocol::methods::{DeliveryFailure, PublishResult};

use crate::causation::Causation;
use crate::deliver::DeliveryError;
use crate::event::Event;

/// The status of a delivery cut by the hop limit (HTTP's "Loop Detected").
pub const LOOP_DETECTED: u16 = 508;

/// Sets the hop count and the cause of `event` from the context it is published in.
///
/// - The hop count is the greater of the event's own (an HTTP publisher may pass `shshops`)
///   and the context's: a count given by the publisher never lowers the one shs keeps.
/// - The cause is the event being delivered in that context. A cause the publisher gave
///   (`shscause`) is kept only where the context has none (a publish over HTTP): lineage is
///   shs's record of what each delivery published, so nothing published inside a chain can
///   claim to come from elsewhere.
pub(crate) fn place(mut event: Event, cause: &Causation) -> Event {
    event.hops = event.hops.max(cause.hops());
    if let Some(delivered) = cause.event() {
        event.cause = Some(delivered.to_owned());
    }
    event
}

/// Whether a publish at `hops` is cut by the hop limit `max_hops`.
pub(crate) fn is_cut(hops: u32, max_hops: u32) -> bool {
    hops >= max_hops
}

/// The failure each would-be subscriber of a cut publish gets: never attempted, never retried.
pub(crate) fn hop_cut(max_hops: u32, event_type: &str) -> DeliveryError {
    DeliveryError::permanent(
        LOOP_DETECTED,
        format!(
            "hop limit of {max_hops} reached: event {event_type:?} was not delivered (does a chain of events loop?)"
        ),
    )
}

/// What a synchronous publish answers: how many subscribers took the event, then each
/// subscriber's failure (in the order of `subscribers`), then the failures further down the
/// chain of events it caused (`nested`).
pub(crate) fn publish_result(
    event_id: &str,
    subscribers: &[Arc<str>],
    outcomes: &[Result<(), DeliveryError>],
    nested: Vec<DeliveryFailure>,
) -> PublishResult {
    let mut errors: Vec<DeliveryFailure> = subscribers
        .iter()
        .zip(outcomes)
        .filter_map(|(function, outcome)| {
            outcome.as_ref().err().map(|e| DeliveryFailure {
                function: function.to_string(),
                message: e.message.clone(),
            })
        })
        .collect();
    errors.extend(nested);
    PublishResult {
        published: true,
        event_id: event_id.to_owned(),
        delivered: outcomes.iter().filter(|o| o.is_ok()).count(),
        errors,
        accepted: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::new("t.one".to_owned(), "/test".to_owned(), None).expect("valid type")
    }

    #[test]
    fn placement_keeps_the_higher_hop_count_and_the_context_s_cause() {
        let given = event()
            .with_extension(crate::event::HOPS_ATTRIBUTE, serde_json::json!(7))
            .and_then(|e| e.with_extension(crate::event::CAUSE_ATTRIBUTE, "claimed".into()))
            .expect("valid attributes");
        let (delivery, _) = Causation::remote_delivery(2, Vec::new(), "parent");
        let placed = place(given, &delivery);
        assert_eq!(placed.hops, 7, "a given count is never lowered");
        assert_eq!(
            placed.cause.as_deref(),
            Some("parent"),
            "the context's cause wins"
        );

        let given = event()
            .with_extension(crate::event::CAUSE_ATTRIBUTE, "claimed".into())
            .expect("valid attribute");
        let placed = place(given, &Causation::at_hops(4));
        assert_eq!(placed.hops, 4, "the context's count when it is higher");
        assert_eq!(
            placed.cause.as_deref(),
            Some("claimed"),
            "a given cause stands where the context has none"
        );
    }

    #[test]
    fn the_cut_is_at_the_limit_and_says_so() {
        assert!(!is_cut(3, 4));
        assert!(is_cut(4, 4));
        let cut = hop_cut(4, "a.b");
        assert_eq!(cut.status, LOOP_DETECTED);
        assert!(!cut.retryable);
        assert_eq!(
            cut.message,
            "hop limit of 4 reached: event \"a.b\" was not delivered (does a chain of events loop?)"
        );
    }

    #[test]
    fn a_result_lists_own_failures_before_those_down_the_chain() {
        let subscribers: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let outcomes = [
            Ok(()),
            Err(DeliveryError::retryable(500, "b broke")),
            Ok(()),
        ];
        let nested = vec![DeliveryFailure {
            function: "d".to_owned(),
            message: "d broke".to_owned(),
        }];
        let result = publish_result("e-1", &subscribers, &outcomes, nested);
        assert_eq!(result.delivered, 2);
        let failed: Vec<_> = result.errors.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(failed, ["b", "d"]);
        assert_eq!(result.errors[0].message, "b broke");
        assert_eq!(result.event_id, "e-1");
        assert_eq!(result.accepted, None);
    }
}
