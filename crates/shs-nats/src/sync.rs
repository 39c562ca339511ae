//! Synchronous events across supervisors, over core NATS request-reply: the publisher's side
//! ([`Inner::request_all`]: one request per subscribing function, every answer awaited) and
//! the side that serves them ([`serve_sync`]: a queue group per local function).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use shs_bus::{Causation, DeliveryError, Fanout, Publication};

use crate::Inner;
use crate::wire::{self, SyncReply};

impl Inner {
    /// Delivers a publication to each subscriber through whichever supervisor runs it, and
    /// waits for every answer (or its timeout).
    pub(crate) async fn request_all(&self, publication: &Publication, cause: &Causation) -> Fanout {
        let Publication { event, subscribers } = publication;
        let mut headers = match wire::headers_of(event) {
            Ok(headers) => headers,
            Err(e) => {
                let failed = || Err(DeliveryError::permanent(400, e.to_string()));
                return Fanout {
                    outcomes: subscribers.iter().map(|_| failed()).collect(),
                    nested: Vec::new(),
                };
            }
        };
        wire::set_waiting(&mut headers, cause.waiting());
        let body = wire::body_of(event);
        let replies = join_all(subscribers.iter().map(|function| {
            let request = async_nats::Request::new()
                .headers(headers.clone())
                .payload(body.clone())
                .timeout(Some(self.config.sync_timeout));
            self.client
                .send_request(self.names.sync_subject(function), request)
        }))
        .await;
        let mut fanout = Fanout::default();
        for (function, reply) in subscribers.iter().zip(replies) {
            let outcome = match reply {
                Ok(message) => match serde_json::from_slice::<SyncReply>(&message.payload) {
                    Ok(reply) => {
                        let (outcome, nested) = reply.into_outcome();
                        fanout.nested.extend(nested);
                        outcome
                    }
                    Err(e) => Err(DeliveryError::retryable(
                        502,
                        format!("a malformed answer from the supervisor that took it: {e}"),
                    )),
                },
                Err(e) => Err(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => DeliveryError::retryable(
                        503,
                        format!("no supervisor on the bus runs function {function:?}"),
                    ),
                    async_nats::RequestErrorKind::TimedOut => DeliveryError::retryable(
                        504,
                        format!(
                            "no answer within {:?} from the supervisor that took it",
                            self.config.sync_timeout
                        ),
                    ),
                    _ => DeliveryError::retryable(503, format!("cannot reach the bus: {e}")),
                }),
            };
            fanout.outcomes.push(outcome);
        }
        fanout
    }
}

/// Answers the synchronous delivery requests of one local function (a queue group shared
/// with the other supervisors that run it).
pub(crate) async fn serve_sync(inner: Arc<Inner>, function: String) {
    let subject = inner.names.sync_subject(&function);
    let group = inner.names.sync_group(&function);
    let mut requests = loop {
        match inner
            .client
            .queue_subscribe(subject.clone(), group.clone())
            .await
        {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(%function, "cannot take synchronous events, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let function: Arc<str> = Arc::from(function);
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let inner = inner.clone();
        let function = function.clone();
        tokio::spawn(async move {
            let headers = message.headers.as_ref();
            let answer = match wire::event_of(headers, &message.payload) {
                Some(event) => {
                    let waiting = wire::waiting_of(headers);
                    let (cause, failures) =
                        Causation::remote_delivery(event.hops, waiting, &event.id);
                    let result = inner.core.deliver(function, Arc::new(event), cause).await;
                    SyncReply::new(result, failures.take())
                }
                None => SyncReply::new(
                    Err(DeliveryError::permanent(
                        400,
                        "the request is not an shs event",
                    )),
                    Vec::new(),
                ),
            };
            if let Ok(body) = serde_json::to_vec(&answer) {
                let _ = inner.client.publish(reply, body.into()).await;
            }
        });
    }
}
