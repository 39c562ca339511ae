//! The table `idempotency_keys`: claiming a key for a request, keeping its answer, releasing
//! it. Run by the writer thread, so that a claim (read, then insert) is atomic.

use rusqlite::{Connection, OptionalExtension, params};

use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};

/// A row of `idempotency_keys`.
struct Row {
    fingerprint: String,
    state: String,
    status: Option<u16>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
    expires_ms: i64,
}

/// Claims `claim.key` for a request: free (or expired) keys are taken, in flight until
/// [`settle`]; otherwise what the key holds.
pub(super) fn claim(tx: &Connection, claim: &KeyClaim, now: i64) -> rusqlite::Result<Claimed> {
    let found = tx
        .prepare_cached(
            "SELECT fingerprint, state, status, headers, body, expires_ms FROM idempotency_keys
             WHERE scope = ?1 AND key = ?2",
        )?
        .query_row(params![claim.scope, claim.key], |r| {
            Ok(Row {
                fingerprint: r.get(0)?,
                state: r.get(1)?,
                status: r.get(2)?,
                headers: r.get(3)?,
                body: r.get(4)?,
                expires_ms: r.get(5)?,
            })
        })
        .optional()?;
    if let Some(Row {
        fingerprint,
        state,
        status,
        headers,
        body,
        expires_ms,
    }) = found
        && expires_ms > now
    {
        if fingerprint != claim.fingerprint {
            return Ok(Claimed::Mismatch);
        }
        if state != "done" {
            return Ok(Claimed::InFlight);
        }
        let headers = headers
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_default();
        return Ok(Claimed::Done(KeptAnswer {
            status: status.unwrap_or(200),
            headers,
            body,
        }));
    }
    let ttl = i64::try_from(claim.ttl.as_millis()).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
         (scope, key, fingerprint, state, status, headers, body, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, 'in-flight', NULL, NULL, NULL, ?4, ?5)",
    )?
    .execute(params![
        claim.scope,
        claim.key,
        claim.fingerprint,
        now,
        now.saturating_add(ttl)
    ])?;
    Ok(Claimed::Fresh)
}

/// Keeps the answer to the request that holds a key (`Some`), or releases the key (`None`:
/// the request did not run, so a retry should).
pub(super) fn settle(
    tx: &Connection,
    scope: &str,
    key: &str,
    answer: Option<&KeptAnswer>,
) -> rusqlite::Result<()> {
    match answer {
        Some(answer) => {
            let headers =
                serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".to_owned());
            tx.prepare_cached(
                "UPDATE idempotency_keys SET state = 'done', status = ?3, headers = ?4, body = ?5
                 WHERE scope = ?1 AND key = ?2 AND state = 'in-flight'",
            )?
            .execute(params![scope, key, answer.status, headers, answer.body])?;
        }
        None => {
            tx.prepare_cached(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND state = 'in-flight'",
            )?
            .execute(params![scope, key])?;
        }
    }
    Ok(())
}

/// Deletes expired keys.
pub(super) fn sweep(tx: &Connection, now: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM idempotency_keys WHERE expires_ms <= ?1")?
        .execute(params![now])
}

/// Releases the keys of requests that were running when the store was last closed (the
/// supervisor stopped or crashed): they may not have run, so a retry runs them.
pub(super) fn release_abandoned(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM idempotency_keys WHERE state = 'in-flight'", [])
}
