//! Event data that is bytes: `data_base64`, decoded.

use crate::{Error, Event};

/// The bytes of an event whose data is bytes (neither JSON nor UTF-8 text, e.g.
/// `application/octet-stream`): the supervisor sends them as `data_base64`, in standard base64,
/// with `payload` `null`. `None` for an event whose data is JSON or text: read its `payload`.
///
/// ```
/// # let event: shs_sdk::Event = serde_json::from_value(serde_json::json!({
/// #     "id": "e", "type": "scan.done", "source": "/http", "time": "2026-01-01T00:00:00Z",
/// #     "payload": null, "datacontenttype": "image/png", "data_base64": "iVBORw0K"})).unwrap();
/// let bytes = shs_sdk::event_data(&event)?;
/// assert_eq!(bytes.as_deref(), Some(&b"\x89PNG\r\n"[..]));
/// # Ok::<(), shs_sdk::Error>(())
/// ```
pub fn event_data<P>(event: &Event<P>) -> Result<Option<Vec<u8>>, Error> {
    event
        .data_base64
        .as_deref()
        .map(|text| {
            decode(text).ok_or_else(|| {
                Error::invalid_params("the event's data_base64 is not standard base64")
            })
        })
        .transpose()
}

/// Decodes standard base64 (RFC 4648, `+` and `/`, padded to a multiple of four).
fn decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - padding] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * padding as u32;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn standard_base64() {
        assert_eq!(decode(""), Some(Vec::new()));
        assert_eq!(decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode("/wBoaQ=="), Some(vec![0xff, 0x00, b'h', b'i']));
        assert_eq!(decode("AAEC"), Some(vec![0, 1, 2]));
        for bad in [
            "a",
            "aGVsbG8",
            "aG=sbG8=",
            "aGVs====",
            "aGV-bG8=",
            "aGVs\nbG8=",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
