//! Streamed answers: the `stream` notifications a function sends while it handles an invoke
//! (`{"id": <the invoke's id>, "chunk": str | "chunk_base64": str, "status"?, "headers"?}`),
//! carried to whoever made the call.
//!
//! [`http_stream`] makes the two ends. The sending end ([`StreamTx`]) goes with the call
//! ([`crate::Supervisor::invoke_http_streaming`]) into the process's pending entry; the reader
//! hands each chunk to it and waits while the channel is full, so a slow client slows the
//! function down (its stdout pipe fills) instead of shs buffering: memory per stream is
//! bounded by [`STREAM_CHUNKS`] chunks (each at most `--max-line`). The receiving end
//! ([`HttpStream`]) ends when the call does (the answer to the invoke ends the stream); dropped
//! before that (the client went away), it sends the function `cancel` with the call's id.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::process::Process;

/// Chunks that may wait between the function and the client, per stream.
pub const STREAM_CHUNKS: usize = 4;

/// One `stream` notification, decoded.
#[derive(Debug)]
pub struct StreamChunk {
    /// `status`, as the function wrote it (only the first chunk's counts).
    pub status: Option<Value>,
    /// `headers`, as the function wrote them (only the first chunk's count).
    pub headers: Option<Value>,
    /// The bytes: `chunk` as UTF-8, or `chunk_base64` decoded.
    pub data: Bytes,
    /// Whether the bytes came as `chunk_base64` (for the default content type).
    pub binary: bool,
}

/// Where the call's process and id are, once it is made: what `cancel` needs.
#[derive(Default)]
struct CancelTarget(Mutex<Option<(Weak<Process>, u64)>>);

/// The sending end of a stream: goes with the call (a clone goes with each try of it; only
/// the one a call was made with clears the cancel target when dropped).
pub struct StreamTx {
    tx: mpsc::Sender<Box<StreamChunk>>,
    target: Arc<CancelTarget>,
    bound: std::sync::atomic::AtomicBool,
}

impl Clone for StreamTx {
    fn clone(&self) -> Self {
        StreamTx {
            tx: self.tx.clone(),
            target: self.target.clone(),
            bound: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// The receiving end of a stream: chunks in order; `None` once the call has ended.
pub struct HttpStream {
    rx: mpsc::Receiver<Box<StreamChunk>>,
    target: Arc<CancelTarget>,
}

/// A new stream's two ends. Every request over HTTP makes one, most never use it: its chunks
/// are boxed, so the channel's first block of slots is a small allocation (32 boxes rather
/// than 32 chunks of about 100 bytes).
pub fn http_stream() -> (StreamTx, HttpStream) {
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    let target = Arc::new(CancelTarget::default());
    (
        StreamTx {
            tx,
            target: target.clone(),
            bound: std::sync::atomic::AtomicBool::new(false),
        },
        HttpStream { rx, target },
    )
}

impl std::fmt::Debug for StreamTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTx").finish_non_exhaustive()
    }
}

impl StreamTx {
    /// The call is made: `id` on `process`.
    pub(crate) fn bind(&self, process: &Arc<Process>, id: u64) {
        self.bound.store(true, std::sync::atomic::Ordering::Relaxed);
        *self.target.0.lock() = Some((Arc::downgrade(process), id));
    }

    /// A sender for the reader.
    pub(crate) fn sender(&self) -> mpsc::Sender<Box<StreamChunk>> {
        self.tx.clone()
    }
}

impl Drop for StreamTx {
    /// The call has ended (answered, failed or given up): nothing left to cancel.
    fn drop(&mut self) {
        if *self.bound.get_mut() {
            self.target.0.lock().take();
        }
    }
}

impl HttpStream {
    /// The next chunk; `None` once the call has ended.
    pub async fn recv(&mut self) -> Option<StreamChunk> {
        self.rx.recv().await.map(|chunk| *chunk)
    }
}

impl Drop for HttpStream {
    /// Dropped while the call goes on (the client went away): the function gets `cancel`.
    fn drop(&mut self) {
        let target = self.target.0.lock().take();
        if let Some((process, id)) = target
            && let Some(process) = process.upgrade()
        {
            process.cancel(id);
        }
    }
}

/// Decodes the params of a `stream` notification: the call id and the chunk.
pub(crate) fn decode(
    params: Option<&serde_json::value::RawValue>,
) -> Result<(u64, StreamChunk), String> {
    use base64::Engine as _;
    let params: serde_json::Map<String, Value> = params
        .map(|p| serde_json::from_str(p.get()))
        .transpose()
        .map_err(|e| format!("its params are not an object: {e}"))?
        .ok_or("it has no params")?;
    let id = params
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("\"id\" must be the id of the invoke it streams for")?;
    let (data, binary) = match (params.get("chunk"), params.get("chunk_base64")) {
        (Some(Value::String(text)), None) => (Bytes::from(text.clone().into_bytes()), false),
        (None, Some(Value::String(encoded))) => (
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map(Bytes::from)
                .map_err(|e| format!("\"chunk_base64\" is not valid base64: {e}"))?,
            true,
        ),
        (None, None) if params.contains_key("status") || params.contains_key("headers") => {
            (Bytes::new(), false)
        }
        _ => return Err("it needs one of \"chunk\" (a string) and \"chunk_base64\"".into()),
    };
    Ok((
        id,
        StreamChunk {
            status: params.get("status").cloned(),
            headers: params.get("headers").cloned(),
            data,
            binary,
        },
    ))
}
