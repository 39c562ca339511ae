//! The shared subscription table: each supervisor publishes its subscription changes to the
//! stream `<NS>_SUBSCRIPTIONS` (the last message per subject says "1" or "0"), reads the
//! whole table at start, and follows every change into its bus's table.

use async_nats::jetstream::consumer;
use bytes::Bytes;
use futures::StreamExt;
use shs_bus::BusError;

use crate::{Inner, backend};

impl Inner {
    /// Shares a subscription change made here with every supervisor.
    pub(crate) async fn share_subscription(&self, function: &str, pattern: &str, present: bool) {
        let subject = self.names.subscription_subject(function, pattern);
        let body = Bytes::from_static(if present { b"1" } else { b"0" });
        if let Err(e) = self.put(subject, body).await {
            tracing::error!(
                function,
                pattern,
                "cannot share the subscription change: {e}"
            );
        }
    }

    /// Reads the shared table into the bus's table, then follows its changes (in a task).
    pub(crate) async fn follow_table(&self) -> Result<(), BusError> {
        let consumer = self
            .subscriptions
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.names.subscriptions_filter(),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let mut changes = consumer.messages().await.map_err(backend)?;
        let mut subscriptions = self.subscriptions.clone();
        let mut to_load = subscriptions.info().await.map_err(backend)?.state.messages;
        while to_load > 0 {
            let Some(Ok(message)) = changes.next().await else {
                break;
            };
            if let Some((function, pattern, present)) = self.change_of(&message) {
                if present {
                    self.core.insert(&function, &pattern);
                } else {
                    self.core.remove(&function, &pattern);
                }
            }
            to_load = message.info().map_or(0, |i| i.pending);
        }
        let weak = self.me.clone();
        tokio::spawn(async move {
            while let Some(message) = changes.next().await {
                let (Ok(message), Some(inner)) = (message, weak.upgrade()) else {
                    continue;
                };
                if let Some((function, pattern, present)) = inner.change_of(&message) {
                    inner.table_changed(&function, &pattern, present);
                }
            }
        });
        Ok(())
    }

    /// The change of the table a message of the subscriptions stream carries.
    fn change_of(&self, message: &async_nats::Message) -> Option<(String, String, bool)> {
        let (function, pattern) = self.names.subscription_of(&message.subject)?;
        Some((function, pattern, message.payload.as_ref() == b"1"))
    }

    /// Applies a change of the shared table (from this node or another).
    fn table_changed(&self, function: &str, pattern: &str, present: bool) {
        if present {
            if self.core.insert(function, pattern) && self.is_local(function) {
                self.take_events(function);
            }
        } else {
            self.core.remove(function, pattern);
            self.stop_pattern(function, pattern);
        }
    }
}
