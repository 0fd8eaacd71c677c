//! `docs/FORMAT.md` documents every layout constant; this test parses its
//! field tables and checks each offset and size against the code.

use herald_core::log::format::*;

fn constants() -> Vec<(&'static str, usize, Option<usize>)> {
    // (name, offset, size of the field starting there)
    vec![
        ("SEG_MAGIC_OFF", SEG_MAGIC_OFF, Some(SEG_MAGIC.len())),
        ("SEG_VERSION_OFF", SEG_VERSION_OFF, Some(2)),
        ("SEG_HEADER_LEN_OFF", SEG_HEADER_LEN_OFF, Some(2)),
        ("SEG_FLAGS_OFF", SEG_FLAGS_OFF, Some(4)),
        ("SEG_BASE_SEQ_OFF", SEG_BASE_SEQ_OFF, Some(8)),
        ("SEG_SIZE_OFF", SEG_SIZE_OFF, Some(8)),
        ("SEG_CREATED_OFF", SEG_CREATED_OFF, Some(8)),
        (
            "SEG_RESERVED_OFF",
            SEG_RESERVED_OFF,
            Some(SEG_HEADER_CRC_OFF - SEG_RESERVED_OFF),
        ),
        ("SEG_HEADER_CRC_OFF", SEG_HEADER_CRC_OFF, Some(4)),
        ("SEG_HEADER_LEN", SEG_HEADER_LEN, Some(0)),
        ("REC_LEN_OFF", REC_LEN_OFF, Some(4)),
        ("REC_CRC_OFF", REC_CRC_OFF, Some(4)),
        ("REC_SEQ_OFF", REC_SEQ_OFF, Some(8)),
        ("REC_TOPIC_OFF", REC_TOPIC_OFF, Some(8)),
        ("REC_TOPIC_SEQ_OFF", REC_TOPIC_SEQ_OFF, Some(8)),
        ("REC_TIMESTAMP_OFF", REC_TIMESTAMP_OFF, Some(8)),
        ("REC_ORIGIN_OFF", REC_ORIGIN_OFF, Some(8)),
        ("REC_TYPE_LEN_OFF", REC_TYPE_LEN_OFF, Some(1)),
        ("REC_FLAGS_OFF", REC_FLAGS_OFF, Some(1)),
        ("REC_KEY_LEN_OFF", REC_KEY_LEN_OFF, Some(2)),
        ("REC_PAYLOAD_LEN_OFF", REC_PAYLOAD_LEN_OFF, Some(4)),
        ("REC_HEADER_LEN", REC_HEADER_LEN, Some(0)),
        ("HWM_MAGIC_OFF", HWM_MAGIC_OFF, Some(HWM_MAGIC.len())),
        ("HWM_VERSION_OFF", HWM_VERSION_OFF, Some(4)),
        ("HWM_COUNT_OFF", HWM_COUNT_OFF, Some(4)),
        ("HWM_ENTRIES_OFF", HWM_ENTRIES_OFF, Some(HWM_ENTRY_LEN)),
    ]
}

#[test]
fn format_md_offsets_match_the_code() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).unwrap();
    let mut rows = std::collections::HashMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if let (Ok(off), Ok(size)) = (cells[2].parse::<usize>(), cells[3].parse::<usize>()) {
            assert!(
                rows.insert(name.to_string(), (off, size)).is_none(),
                "{name} documented twice"
            );
        }
    }
    for (name, off, size) in constants() {
        let Some(&(doc_off, doc_size)) = rows.get(name) else {
            panic!("{name} is not documented in FORMAT.md")
        };
        assert_eq!(doc_off, off, "offset of {name}");
        if let Some(size) = size {
            assert_eq!(doc_size, size, "size of {name}");
        }
    }
    assert_eq!(
        rows.len(),
        constants().len(),
        "FORMAT.md documents a constant the test does not know"
    );
}

#[test]
fn fields_are_contiguous_and_aligned() {
    let c = constants();
    for w in c.windows(2) {
        let (a, off_a, size_a) = w[0];
        let (_, off_b, _) = w[1];
        if a == "SEG_HEADER_LEN" || a == "REC_HEADER_LEN" {
            continue;
        }
        assert_eq!(off_a + size_a.unwrap(), off_b, "gap or overlap after {a}");
    }
    assert_eq!(SEG_HEADER_LEN % RECORD_ALIGN, 0);
    assert_eq!(REC_HEADER_LEN % RECORD_ALIGN, 0);
    assert_eq!(SEG_MAGIC, *b"HRLDLOG\0");
}
