//! Hostile functions and clients: what one function (or client) sends must not hurt another
//! function, the supervisor, or an accepted event.
//!
//! - `stdin`: every line written to a function's stdin is one line for every common reader, so
//!   no function can forge messages on another's stdin.
//! - `isolation`: what a function can reach of the supervisor (session, descriptors,
//!   environment, zombies).
//! - `killed`: function processes killed with SIGKILL give back what the supervisor held.
//! - `rogue`: forged answers, 100,000 subscriptions, publish floods, megabytes in flight, a 1 GB
//!   line; the supervisor's memory, descriptors and the other functions checked after each.
//! - `input`: oversized, deeply nested and flooding input, at every boundary, with the
//!   supervisor's memory and log and the other functions checked afterwards.

mod input;
mod isolation;
mod killed;
mod rogue;
mod stdin;
