//! How deeply a JSON text nests, checked without parsing it.
//!
//! shs keeps request bodies and event payloads as raw JSON (`RawValue`), which serde_json
//! checks for syntax but not for depth: a 100,000-deep array passes, and then crashes the
//! function that parses it (Python's `json` with a `RecursionError`, for one). Every body and
//! payload that reaches a function is therefore checked here first, and refused when it nests
//! deeper than [`MAX_DEPTH`], serde_json's own limit: whatever shs accepts, serde_json (and so
//! the Rust SDK) can parse, and so can the usual parsers of other languages.
//!
//! The scan is one pass over the bytes that knows strings and their escapes (a `[` inside a
//! string does not nest), and stops as soon as the limit is passed.

/// The deepest nesting of arrays and objects accepted: 127, the most serde_json parses (its
/// recursion limit of 128 refuses the 128th level). A scalar is depth 0, `[]` and `{}` are 1,
/// `[{}]` is 2.
pub const MAX_DEPTH: usize = 127;

/// A JSON text nests deeper than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("JSON nested deeper than {max} levels of arrays and objects (the limit)")]
pub struct TooDeep {
    /// The deepest nesting allowed.
    pub max: usize,
}

/// The deepest nesting of arrays and objects in `json`, or the first depth past `stop_above`
/// if it goes that deep (the scan stops there).
///
/// `json` should be valid JSON; anything else gives some number and never panics.
pub fn nesting(json: &[u8], stop_above: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = 0;
    while let Some(&byte) = json.get(i) {
        match byte {
            b'"' => {
                // Skip the string: its brackets and quotes after a backslash are text.
                i += 1;
                while let Some(&b) = json.get(i) {
                    match b {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > stop_above {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Refuses `json` when it nests deeper than [`MAX_DEPTH`].
pub fn check(json: &str) -> Result<(), TooDeep> {
    check_max(json, MAX_DEPTH)
}

/// Refuses `json` when it nests deeper than `max`.
pub fn check_max(json: &str, max: usize) -> Result<(), TooDeep> {
    if nesting(json.as_bytes(), max) > max {
        Err(TooDeep { max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn counts_arrays_and_objects_not_strings() {
        assert_eq!(nesting(b"1", 1000), 0);
        assert_eq!(nesting(b"\"[[[{{{\"", 1000), 0);
        assert_eq!(nesting(b"[]", 1000), 1);
        assert_eq!(nesting(br#"{"a":[{"b":"]]]\"[[["}]}"#, 1000), 3);
        assert_eq!(nesting(br#"["\\", ["\\\"[", {}]]"#, 1000), 3);
        assert_eq!(nesting(br#"[[1],[[2]],3]"#, 1000), 3);
        // Stops as soon as the limit is passed.
        assert_eq!(nesting(nested(100_000).as_bytes(), 127), 128);
        // Broken input: some answer, no panic.
        for junk in [&b"\"\\"[..], b"]]]]", b"[\"", b"\\", b""] {
            let _ = nesting(junk, 10);
        }
    }

    #[test]
    fn the_limit_is_serde_jsons() {
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            check(&nested(MAX_DEPTH + 1)),
            Err(TooDeep { max: MAX_DEPTH })
        );
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
        assert!(check(&nested(100_000)).is_err());
    }

    /// A JSON scalar, with strings full of what would nest outside a string.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i32>().prop_map(|n| n.to_string()),
            proptest::collection::vec(
                prop_oneof![
                    Just('['),
                    Just(']'),
                    Just('{'),
                    Just('}'),
                    Just('"'),
                    Just('\\'),
                    Just('a'),
                    Just('\n'),
                    Just('\u{2028}'),
                ],
                0..12,
            )
            .prop_map(|chars| {
                serde_json::to_string(&chars.into_iter().collect::<String>())
                    .unwrap_or_else(|_| unreachable!("a string serializes"))
            }),
        ]
    }

    /// How one level wraps the value inside it, with scalars beside it.
    #[derive(Clone, Debug)]
    enum Wrap {
        Array {
            before: Vec<String>,
            after: Vec<String>,
        },
        Object {
            key: String,
            sibling: Option<String>,
        },
    }

    fn wrap() -> impl Strategy<Value = Wrap> {
        prop_oneof![
            (
                proptest::collection::vec(scalar(), 0..3),
                proptest::collection::vec(scalar(), 0..3)
            )
                .prop_map(|(before, after)| Wrap::Array { before, after }),
            (scalar(), proptest::option::of(scalar())).prop_map(|(key, sibling)| {
                Wrap::Object {
                    key: serde_json::to_string(&key).unwrap_or_default(),
                    sibling,
                }
            }),
        ]
    }

    /// Valid JSON nested as deep as the number of wraps (one more when the leaf is `[]` or `{}`).
    fn build(leaf: &str, wraps: &[Wrap], spaced: bool) -> String {
        let sep = if spaced { " \n\t" } else { "" };
        wraps
            .iter()
            .fold(leaf.to_owned(), |inner, wrap| match wrap {
                Wrap::Array { before, after } => {
                    let mut items: Vec<&str> = before.iter().map(String::as_str).collect();
                    items.push(&inner);
                    items.extend(after.iter().map(String::as_str));
                    format!("[{sep}{}{sep}]", items.join(&format!(",{sep}")))
                }
                Wrap::Object { key, sibling } => match sibling {
                    Some(value) => format!("{{{key}:{sep}{inner},{sep}\"z\":{value}}}"),
                    None => format!("{{{sep}{key}{sep}:{inner}}}"),
                },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The scanner accepts exactly what serde_json parses, around the limit and far from it.
        #[test]
        fn agrees_with_serde_json(
            leaf in prop_oneof![scalar(), Just("[]".to_owned()), Just("{}".to_owned())],
            wraps in prop_oneof![
                proptest::collection::vec(wrap(), 0..200),
                proptest::collection::vec(wrap(), 122..134),
            ],
            spaced in any::<bool>(),
        ) {
            let json = build(&leaf, &wraps, spaced);
            let parsed = serde_json::from_str::<Value>(&json);
            if let Err(e) = &parsed {
                prop_assert!(e.to_string().contains("recursion limit"), "{e}: {json}");
            }
            prop_assert_eq!(check(&json).is_ok(), parsed.is_ok(), "{}", json);
            let depth = wraps.len() + usize::from(leaf == "[]" || leaf == "{}");
            prop_assert_eq!(nesting(json.as_bytes(), usize::MAX), depth);
        }

        /// Any bytes at all: an answer, never a panic, and never deeper than the brackets.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let opening = bytes.iter().filter(|b| **b == b'[' || **b == b'{').count();
            prop_assert!(nesting(&bytes, usize::MAX) <= opening);
        }
    }
}
