//! The JSON toolkit (`herald_core::json`): the string escaper against an
//! independent decoder, the validator's accepts and rejects, compaction.

use herald_core::json::{compact, validate, value_len, write_compact, write_string};
use proptest::prelude::*;

/// An independent decoder for one JSON string literal (the test's oracle).
fn decode_json_string(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    let hex4 = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
        let h: String = chars.by_ref().take(4).collect();
        (h.len() == 4).then(|| u32::from_str_radix(&h, 16).ok())?
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return None, // unescaped quote inside
            c if (c as u32) < 0x20 => return None,
            '\\' => match chars.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let u = hex4(&mut chars)?;
                    if (0xD800..0xDC00).contains(&u) {
                        if chars.next()? != '\\' || chars.next()? != 'u' {
                            return None;
                        }
                        let lo = hex4(&mut chars)?;
                        out.push(char::from_u32(
                            0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00),
                        )?);
                    } else {
                        out.push(char::from_u32(u)?);
                    }
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn escaped(s: &str) -> String {
    let mut v = Vec::new();
    write_string(&mut v, s);
    String::from_utf8(v).unwrap()
}

#[test]
fn json_escaper_handles_tricky_strings() {
    assert_eq!(escaped(""), r#""""#);
    assert_eq!(escaped("plain"), r#""plain""#);
    assert_eq!(escaped("a\"b"), r#""a\"b""#);
    assert_eq!(escaped("back\\slash"), r#""back\\slash""#);
    assert_eq!(escaped("\\\""), r#""\\\"""#);
    assert_eq!(escaped("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
    assert_eq!(escaped("\u{8}\u{c}"), r#""\b\f""#);
    assert_eq!(
        escaped("\0\u{1}\u{1f}\u{7f}"),
        r#""\u0000\u0001\u001f\u007f""#
    );
    assert_eq!(escaped("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
    assert_eq!(escaped("/"), r#""/""#);
    assert_eq!(escaped("héllo ✓ 😀 中文"), "\"héllo ✓ 😀 中文\"");
    assert_eq!(escaped("</script>"), r#""</script>""#);
    for s in [
        "",
        "\"",
        "\\",
        "\n\0",
        "😀\"\\\u{1}x",
        "\u{10ffff}",
        "\u{fffd}",
    ] {
        let e = escaped(s);
        assert_eq!(decode_json_string(e.as_bytes()).as_deref(), Some(s), "{e}");
        validate(&e).unwrap();
    }
}

#[test]
fn json_validator_accepts_and_rejects() {
    for good in [
        "null",
        "true",
        " false ",
        "0",
        "-0",
        "12.5e-3",
        "1E+2",
        "\"\"",
        r#""\u00e9\ud83d\ude00\/""#,
        "[]",
        "{}",
        " [ 1 , { \"a\" : [ null ] } ] ",
        "\n{\"k\":\"v\",\"n\":-1.0}\t",
    ] {
        validate(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    for bad in [
        "",
        " ",
        "nul",
        "True",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "0x10",
        "NaN",
        "\"",
        "\"\\x\"",
        "\"\\u12\"",
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        "\"tab\there\"",
        "[",
        "[1,]",
        "[,1]",
        "{\"a\"}",
        "{\"a\":1,}",
        "{a:1}",
        "{\"a\":1 \"b\":2}",
        "[] []",
        "'x'",
    ] {
        assert!(validate(bad).is_err(), "{bad:?} should be rejected");
    }
    let deep_ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    validate(&deep_ok).unwrap();
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert!(validate(&deep).is_err());
    // A very deep input is rejected without recursing deep.
    assert!(validate(&"[".repeat(1 << 20)).is_err());
    assert_eq!(
        compact(" { \"a b\" : [ 1 , \"x y\" ] ,\n \"c\" : { } } ").unwrap(),
        r#"{"a b":[1,"x y"],"c":{}}"#
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any string survives escaping: the output is valid JSON, has no raw
    /// control character, and decodes back to the input.
    #[test]
    fn json_escaping_round_trips(s in any::<String>()) {
        let e = escaped(&s);
        prop_assert!(!e.chars().any(|c| (c as u32) < 0x20));
        prop_assert!(validate(&e).is_ok());
        prop_assert_eq!(decode_json_string(e.as_bytes()), Some(s));
    }


    /// The validator never panics, and whatever it accepts compacts to a
    /// text it accepts too (without whitespace outside strings).
    #[test]
    fn json_validator_never_panics(s in "[\\[\\]{}\":,0-9a-z\\\\. \\-+eE\u{1}é]{0,40}") {
        if validate(&s).is_ok() {
            let c = compact(&s).unwrap();
            prop_assert!(validate(&c).is_ok());
            prop_assert!(c.len() <= s.len());
        } else {
            prop_assert!(compact(&s).is_err());
        }
    }

    /// `value_len` finds where a leading value ends exactly when that value
    /// validates on its own: a document split at the length it gives holds
    /// a valid value, and a valid `s` is measured to its end.
    #[test]
    fn value_len_splits_where_validate_agrees(
        s in "[\\[\\]{}\":,0-9a-z\\\\. \\-+eE\u{1}é]{0,40}",
        rest in "[ ,}\\]x]{0,3}",
    ) {
        let doc = format!("{s}{rest}");
        match value_len(&doc) {
            Ok(n) => {
                prop_assert!(validate(&doc[..n]).is_ok());
                if validate(&s).is_ok() {
                    prop_assert_eq!(n, s.trim_end().len());
                }
            }
            // No leading value: `s` starts with a space or is no value.
            Err(_) => prop_assert!(s.starts_with(' ') || validate(&s).is_err()),
        }
    }
}

#[test]
fn value_len_measures_the_leading_value() {
    assert_eq!(value_len(r#"{"a":"x\"y"} ,"b""#), Ok(12));
    assert_eq!(value_len("123,"), Ok(3));
    assert_eq!(value_len(r#""\u00e9"}"#), Ok(8));
    assert_eq!(value_len("[1,[2]]]"), Ok(7));
    assert!(value_len(" 1").is_err(), "no leading whitespace");
    assert!(value_len(r#""a\u0001""#).is_ok());
    assert!(value_len("\"a\u{1}\"").is_err(), "a raw control character");
    assert!(value_len(r#""\ud800""#).is_err(), "an unpaired surrogate");
    let deep = "[".repeat(65) + &"]".repeat(65);
    assert!(
        value_len(&deep).is_err(),
        "nested as deep as validate refuses"
    );
}

#[test]
fn write_compact_appends_or_leaves_the_buffer_alone() {
    let mut out = b"[".to_vec();
    write_compact(&mut out, " { \"a\" : [ 1 , 2 ] } ").unwrap();
    assert_eq!(out, br#"[{"a":[1,2]}"#);
    // An error after some output was written takes it back.
    assert!(write_compact(&mut out, "{\"b\": [1, 2,").is_err());
    assert_eq!(out, br#"[{"a":[1,2]}"#);
}
