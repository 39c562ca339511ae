//! Query parameters: whole numbers of any size.

use serde::{Deserialize, Deserializer};

/// A query parameter that is a whole number, 0 or more, of any number of digits: one past
/// `u64::MAX` is `u64::MAX` (each parameter caps or clamps its value anyway, and a log line
/// number past every line means none). Anything but ASCII digits is an error (a 400).
pub(crate) fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse(&text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{:?} is not a whole number, 0 or more",
            text.chars().take(40).collect::<String>()
        ))
    })
}

fn parse(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn whole_numbers_saturate() {
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("007"), Some(7));
        assert_eq!(parse("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse("1234567890123456789012345678901"), Some(u64::MAX));
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "many", "١"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
