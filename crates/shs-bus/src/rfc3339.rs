//! RFC 3339 timestamps (`date-time`), as CloudEvents `time` and JSON Schema's `date-time`
//! format define them: `2026-01-02T03:04:05Z`, `2026-01-02t03:04:05.123+02:00`.
//!
//! The grammar of RFC 3339 section 5.6, checked exactly: a four-digit year; a month and a day
//! that exist in it (29 February only in leap years); `T` or `t`; hours 00-23, minutes 00-59,
//! seconds 00-59, or 60 for a leap second (only at 23:59:60 UTC, the offset applied); an
//! optional fraction of one digit or more; and `Z`, `z` or an offset `+hh:mm` / `-hh:mm`
//! (hours 00-23, minutes 00-59). Nothing else: no space for `T`, no missing offset.

/// Whether `text` is an RFC 3339 `date-time`.
pub(crate) fn is_date_time(text: &str) -> bool {
    parse(text.as_bytes()).is_some()
}

/// `n` ASCII digits at `at`, as a number.
fn digits(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let slice = bytes.get(at..at + n)?;
    slice.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn expect(bytes: &[u8], at: usize, wanted: u8) -> Option<()> {
    (bytes.get(at) == Some(&wanted)).then_some(())
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse(b: &[u8]) -> Option<()> {
    // full-date: YYYY-MM-DD
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in(year, month) {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't')) {
        return None;
    }
    // partial-time: hh:mm:ss[.frac]
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        let fraction = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    // time-offset: Z / z / (+|-)hh:mm
    let offset_minutes: i64 = match b.get(at)? {
        b'Z' | b'z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let hours = digits(b, at + 1, 2)?;
            expect(b, at + 3, b':')?;
            let minutes = digits(b, at + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            at += 6;
            let total = i64::from(hours * 60 + minutes);
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    if at != b.len() {
        return None;
    }
    if second == 60 {
        // A leap second is inserted at the end of a UTC day: 23:59:60Z.
        let utc = (i64::from(hour * 60 + minute) - offset_minutes).rem_euclid(24 * 60);
        if utc != 23 * 60 + 59 {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{days_in, is_date_time};

    #[test]
    fn valid_timestamps() {
        for ok in [
            "2026-01-02T03:04:05Z",
            "2026-01-02t03:04:05z",
            "2026-01-02T03:04:05.1Z",
            "2026-01-02T03:04:05.123456789+02:00",
            "2026-12-05T09:12:06.890358+00:00",
            "2026-01-02T03:04:05-23:59",
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "1998-12-31T23:59:60Z",
            "1998-12-31T15:59:60.123-08:00",
            "1999-01-01T00:59:60+01:00",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
    }

    #[test]
    fn invalid_timestamps() {
        for bad in [
            "",
            "yesterday",
            "2026-01-02",
            "2026-01-02T03:04:05",
            "2026-01-02 03:04:05Z",
            "2026-01-02T03:04Z",
            "2026-13-02T03:04:05Z",
            "2026-00-02T03:04:05Z",
            "2026-01-00T03:04:05Z",
            "2026-04-31T03:04:05Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T23:60:00Z",
            "2026-01-02T23:59:61Z",
            "1998-12-31T22:59:60Z",
            "1998-12-31T23:58:60Z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05+0200",
            "2026-01-02T03:04:05+24:00",
            "2026-01-02T03:04:05+02:60",
            "2026-01-02T03:04:05Zjunk",
            "2026-01-02T03:04:05ZZ",
            "+2026-01-02T03:04:05Z",
            "２０２６-01-02T03:04:05Z",
            "2026-01-02T03:04:05\u{0}Z",
        ] {
            assert!(!is_date_time(bad), "{bad:?}");
        }
    }

    /// A timestamp made of parts in range, in any of the spellings RFC 3339 allows.
    fn timestamps() -> impl Strategy<Value = String> {
        (
            (
                0u32..=9999,
                1u32..=12,
                1u32..=31,
                0u32..=23,
                0u32..=59,
                0u32..=59,
            ),
            prop::option::of("[0-9]{1,9}"),
            prop::option::of((any::<bool>(), 0u32..=23, 0u32..=59)),
            any::<bool>(),
        )
            .prop_map(|((y, mo, d, h, mi, s), fraction, offset, lower)| {
                let d = d.min(days_in(y, mo));
                let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
                let offset = match offset {
                    None if lower => "z".to_owned(),
                    None => "Z".to_owned(),
                    Some((plus, oh, om)) => {
                        format!("{}{oh:02}:{om:02}", if plus { '+' } else { '-' })
                    }
                };
                let t = if lower { 't' } else { 'T' };
                format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{fraction}{offset}")
            })
    }

    proptest! {
        #[test]
        fn every_timestamp_in_range_is_valid(ts in timestamps()) {
            prop_assert!(is_date_time(&ts), "{}", ts);
        }

        /// A timestamp ends with its offset, so no strict prefix of one is a timestamp.
        #[test]
        fn no_prefix_of_a_timestamp_is_one(ts in timestamps(), cut in 0usize..40) {
            let cut = cut.min(ts.len() - 1);
            prop_assert!(!is_date_time(&ts[..cut]), "{}", &ts[..cut]);
        }

        /// Any text at all is judged without panicking; what passes has the shape of one.
        #[test]
        fn any_text_is_judged(text in any::<String>()) {
            if is_date_time(&text) {
                prop_assert!(text.len() >= 20 && text.is_ascii());
            }
        }
    }
}
