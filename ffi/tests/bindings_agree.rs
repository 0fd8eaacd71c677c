//! What the Node and Java bindings copy from `include/herald.h` by hand
//! agrees with the header generated from the current source: the result
//! codes (names and numbers), the durability values, and the layout of
//! `herald_record_header`. Go takes its values from the header through cgo;
//! its list of result codes is checked for completeness.

use std::collections::BTreeMap;
use std::path::Path;

const HEADER: &str = include_str!(concat!(env!("OUT_DIR"), "/herald.h"));

fn binding_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"))
        + start.len();
    let len = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found after {start:?}"));
    &text[from..from + len]
}

/// The value of `#define name value` in the header.
fn define(name: &str) -> u64 {
    let line = between(HEADER, &format!("\n#define {name} "), "\n");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {line:?}"))
}

/// Every `name: value` or `name = value` pair (`value` an integer) in
/// `text`, in order.
fn pairs(text: &str, sep: char) -> Vec<(String, u64)> {
    text.split([',', ';', '\n'])
        .map(|item| item.split("//").next().unwrap().trim())
        .filter(|item| !item.is_empty())
        .filter_map(|item| {
            let (name, value) = item.split_once(sep)?;
            let name = name.split_whitespace().last()?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The fields of a struct of fixed-size integers in the header, in order:
/// `(C type, name, offset)`, and its size, laid out by the C rules (each
/// field at a multiple of its size; the struct padded to its largest).
fn c_struct(name: &str) -> (Vec<(String, String, usize)>, usize) {
    let body = between(HEADER, &format!("typedef struct {name} {{"), "}");
    let (mut fields, mut at, mut align) = (Vec::new(), 0usize, 1);
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let (ty, field) = line
            .trim_end_matches(';')
            .split_once(' ')
            .unwrap_or_else(|| panic!("{name}: {line:?}"));
        let size = match ty {
            "uint8_t" => 1,
            "uint16_t" => 2,
            "uint32_t" => 4,
            "uint64_t" => 8,
            other => panic!("{name}.{field}: type {other} is not handled here"),
        };
        at = at.next_multiple_of(size);
        fields.push((ty.to_owned(), field.to_owned(), at));
        at += size;
        align = align.max(size);
    }
    (fields, at.next_multiple_of(align))
}

#[test]
fn the_header_declares_the_record_header_the_rust_code_writes() {
    let (fields, size) = c_struct("herald_record_header");
    assert_eq!(size as u64, define("HERALD_RECORD_HEADER"));
    assert_eq!(size, std::mem::size_of::<herald::herald_record_header>());
    let names: Vec<&str> = fields.iter().map(|f| f.1.as_str()).collect();
    assert_eq!(
        names,
        [
            "kind",
            "record_len",
            "seq",
            "topic_seq",
            "timestamp_ns",
            "origin",
            "gap_from",
            "gap_to",
            "payload_len",
            "topic_len",
            "event_type_len",
            "correlation_len",
            "reserved"
        ]
    );
}

#[test]
fn node_declares_the_record_header_of_the_header() {
    let (fields, _) = c_struct("herald_record_header");
    let js = binding_file("bindings/node/index.js");
    let declared: Vec<(String, String)> = between(&js, "const RECORD_FIELDS = {", "};")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (name, ty) = f.split_once(':').unwrap();
            (
                ty.trim().trim_matches('\'').to_owned(),
                name.trim().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = fields.into_iter().map(|(t, n, _)| (t, n)).collect();
    // koffi lays the fields out by the C rules, as the header does.
    assert_eq!(declared, expected, "bindings/node/index.js RECORD_FIELDS");
    let consts = pairs(&js, '=');
    let value = |name: &str| consts.iter().find(|(n, _)| n == name).map(|p| p.1);
    assert_eq!(value("RECORD_HEADER"), Some(define("HERALD_RECORD_HEADER")));
    assert_eq!(value("DELIVERY_GAP"), Some(define("HERALD_DELIVERY_GAP")));
}

#[test]
fn java_record_header_offsets_are_the_header_s() {
    let (fields, size) = c_struct("herald_record_header");
    let java = binding_file("bindings/java/src/dev/herald/RecordHeader.java");
    let offsets = format!("KIND{}", between(&java, "static final int KIND", ";"));
    let declared: BTreeMap<String, u64> = pairs(&offsets, '=').into_iter().collect();
    let expected: BTreeMap<String, u64> = fields
        .iter()
        .map(|(_, name, offset)| (name.to_uppercase(), *offset as u64))
        .collect();
    assert_eq!(declared, expected, "RecordHeader.java field offsets");
    let consts = pairs(&java, '=');
    let value = |name: &str| consts.iter().find(|(n, _)| n == name).map(|p| p.1);
    assert_eq!(value("SIZE"), Some(size as u64));
    assert_eq!(value("DELIVERY_GAP"), Some(define("HERALD_DELIVERY_GAP")));
}

/// `herald_result`'s codes in the header, in order.
fn header_codes() -> Vec<(String, u64)> {
    let codes: Vec<(String, u64)> = pairs(between(HEADER, "\nenum herald_result", "};"), '=')
        .into_iter()
        .filter(|(name, _)| name.starts_with("HERALD_"))
        .collect();
    assert!(codes.len() > 20, "parsed {codes:?}");
    codes
}

/// A binding's list of `(name, value)`, named as in the header: `OK` is
/// `HERALD_OK`, `NULL` is `HERALD_E_NULL`.
fn as_header_codes(list: Vec<(String, u64)>) -> Vec<(String, u64)> {
    list.into_iter()
        .map(|(name, value)| match name.as_str() {
            "OK" => ("HERALD_OK".to_owned(), value),
            _ => (format!("HERALD_E_{name}"), value),
        })
        .collect()
}

#[test]
fn java_result_codes_are_the_header_s() {
    let java = binding_file("bindings/java/src/dev/herald/Codes.java");
    let list = format!("OK{}", between(&java, "public static final int OK", ";"));
    assert_eq!(
        as_header_codes(pairs(&list, '=')),
        header_codes(),
        "bindings/java/src/dev/herald/Codes.java"
    );
}

#[test]
fn node_result_codes_are_the_header_s() {
    let js = binding_file("bindings/node/index.js");
    let list = between(&js, "const codes = Object.freeze({", "});");
    assert_eq!(
        as_header_codes(pairs(list, ':')),
        header_codes(),
        "bindings/node/index.js codes"
    );
}

#[test]
fn go_names_every_result_code() {
    let go = binding_file("bindings/go/herald.go");
    let listed: Vec<String> = between(&go, "// The result codes of include/herald.h.", ")")
        .lines()
        .filter_map(|l| l.split_once("= C.").map(|(_, name)| name.trim().to_owned()))
        .collect();
    let expected: Vec<String> = header_codes().into_iter().map(|(name, _)| name).collect();
    assert_eq!(listed, expected, "bindings/go/herald.go result codes");
}

#[test]
fn java_and_node_durability_values_are_the_header_s() {
    let expected: Vec<(String, u64)> = HEADER
        .lines()
        .filter_map(|l| l.strip_prefix("#define HERALD_DURABILITY_"))
        .map(|l| {
            let (name, value) = l.split_once(' ').unwrap();
            (name.to_owned(), value.trim().parse().unwrap())
        })
        .collect();
    assert_eq!(expected.len(), 3, "{expected:?}");
    let java = binding_file("bindings/java/src/dev/herald/Codes.java");
    let list = format!(
        "DURABILITY_NEVER{}",
        between(&java, "public static final int DURABILITY_NEVER", ";")
    );
    let java: Vec<(String, u64)> = pairs(&list, '=')
        .into_iter()
        .map(|(name, value)| (name.trim_start_matches("DURABILITY_").to_owned(), value))
        .collect();
    assert_eq!(java, expected, "Codes.java durability values");
    let js = binding_file("bindings/node/index.js");
    let node = pairs(
        between(&js, "const Durability = Object.freeze({", "});"),
        ':',
    );
    assert_eq!(node, expected, "bindings/node/index.js Durability");
}
