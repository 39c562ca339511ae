//! Idempotency keys (`Idempotency-Key`, draft-ietf-httpapi-idempotency-key-header): the first
//! answer to a request, kept under its key so that a retry of the same request gets it again
//! instead of running it twice.
//!
//! The HTTP layer decides what a request is (its [`KeyClaim::fingerprint`]) and what of an
//! answer is kept ([`KeptAnswer`]); the bus keeps the keys durably ([`crate::Bus::claim_key`],
//! [`crate::Bus::settle_key`]), in the embedded store (table `idempotency_keys`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest key accepted (the draft leaves it to the server; Stripe takes 255).
pub const MAX_KEY_LEN: usize = 255;

/// A request that carries an idempotency key.
#[derive(Clone, Debug)]
pub struct KeyClaim {
    /// Whose key it is: a hash of the API key the request used, or empty without API keys. Two
    /// clients with different API keys never share a key.
    pub scope: String,
    /// The key, as the client sent it (at most [`MAX_KEY_LEN`] characters, no control
    /// characters).
    pub key: String,
    /// What identifies the request (the SHA-256 of its function, method, path and body, in
    /// hex): the same key with another fingerprint is another request.
    pub fingerprint: String,
    /// How long the key is kept after its first use.
    pub ttl: Duration,
}

/// An answer kept under a key, to be given again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The headers worth giving again (name, value as bytes).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body; `None` when it was too large to keep.
    pub body: Option<Vec<u8>>,
}

/// What a key holds when a request claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The key was free (or expired): it is now held for this request, which runs.
    Fresh,
    /// A request with this key is still running.
    InFlight,
    /// The key was used for another request (another fingerprint).
    Mismatch,
    /// The same request ran: its answer.
    Done(KeptAnswer),
}
