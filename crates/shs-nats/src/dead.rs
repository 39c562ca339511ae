//! Failed attempts and dead letters on NATS: the attempts of a delivery not yet settled
//! (stream `<NS>_ATTEMPTS`, the last message per (event, function)), the dead letters (stream
//! `<NS>_DEAD`, one message each, its sequence number as id), and listing, retrying and
//! burying them.

use shs_bus::{Attempt, BusError, DeadLetter, DeadLetterFilter};

use crate::wire::DeadRecord;
use crate::{Inner, backend};

impl Inner {
    /// The failed attempts recorded so far of delivering `event_id` to `function`.
    async fn attempts_of(&self, event_id: &str, function: &str) -> Vec<Attempt> {
        let subject = self.names.attempts_subject(event_id, function);
        match self
            .attempts
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => serde_json::from_slice(&message.payload).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Stores the failed attempts of delivering `event_id` to `function`.
    async fn keep_attempts(&self, event_id: &str, function: &str, attempts: &[Attempt]) {
        let subject = self.names.attempts_subject(event_id, function);
        let stored = match serde_json::to_vec(attempts) {
            Ok(bytes) => self.put(subject, bytes.into()).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::warn!(function, event_id, "cannot record an attempt: {e}");
        }
    }

    /// Records a failed attempt, numbered after those recorded before; returns every attempt
    /// so far.
    pub(crate) async fn record_attempt(
        &self,
        event_id: &str,
        function: &str,
        attempt: Attempt,
    ) -> Vec<Attempt> {
        let mut attempts = self.attempts_of(event_id, function).await;
        attempts.push(Attempt {
            attempt: u32::try_from(attempts.len() + 1).unwrap_or(u32::MAX),
            ..attempt
        });
        self.keep_attempts(event_id, function, &attempts).await;
        attempts
    }

    /// Forgets the attempts of a delivery that is settled.
    pub(crate) async fn forget_attempts(&self, event_id: &str, function: &str) {
        let _ = self
            .attempts
            .purge()
            .filter(self.names.attempts_subject(event_id, function))
            .await;
    }

    /// Stores a dead letter; resolves once JetStream has acknowledged it.
    pub(crate) async fn bury(&self, record: &DeadRecord) -> Result<(), BusError> {
        let body = serde_json::to_vec(record).map_err(backend)?;
        self.put(self.names.dead_subject(&record.function), body.into())
            .await
            .map_err(BusError::Backend)
    }

    /// The dead letters that match `filter`, newest first.
    pub(crate) async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let mut letters = Vec::new();
        let mut dead = self.dead.clone();
        let info = dead.info().await.map_err(backend)?.clone();
        if info.state.messages == 0 {
            return Ok(letters);
        }
        let exact = filter.function.as_ref().map(|f| self.names.dead_subject(f));
        let prefix = self.names.dead_prefix();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(message) = self.dead.get_raw_message(seq).await else {
                continue;
            };
            let subject = message.subject.as_str();
            let wanted = match &exact {
                Some(exact) => subject == exact,
                None => subject.starts_with(&prefix),
            };
            if !wanted {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<DeadRecord>(&message.payload) else {
                continue;
            };
            if filter
                .event_type
                .as_ref()
                .is_some_and(|t| *t != record.event_type)
            {
                continue;
            }
            letters.push(record.into_letter(message.sequence.to_string()));
        }
        letters.reverse();
        letters.truncate(filter.limit.max(1));
        Ok(letters)
    }

    /// Delivers dead letter `seq` again, through its function's retry consumer, with a fresh
    /// count of attempts; the attempts of its first life stay in its record, and the new ones
    /// are numbered after them. False when there is no such dead letter.
    pub(crate) async fn retry_dead_letter(&self, seq: u64) -> Result<bool, BusError> {
        let Ok(message) = self.dead.get_raw_message(seq).await else {
            return Ok(false);
        };
        let record: DeadRecord = serde_json::from_slice(&message.payload).map_err(backend)?;
        self.keep_attempts(&record.event_id, &record.function, &record.attempts)
            .await;
        let event = record.event();
        self.store_event(
            self.names.retry_subject(&record.function),
            &event,
            &format!("{}.retry.{seq}", event.id),
        )
        .await?;
        self.dead.delete_message(seq).await.map_err(backend)?;
        Ok(true)
    }
}
