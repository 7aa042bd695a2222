//! Property tests: no input makes the parser panic, generated messages read
//! back exactly, and escaping is undone by unescaping.

use proptest::prelude::*;

use passerelle_hl7v2::ack::{AckBuilder, AckCode, AckError, read_ack};
use passerelle_hl7v2::{Charset, Delimiters, Message, ParseOptions, Path, escape, unescape};

const PATHS: [&str; 8] = [
    "MSH-9.2",
    "PID-3[*].4.1",
    "PID-5.1",
    "OBX[*]-5",
    "OBX[2]-5[*]",
    "MSH-2",
    "ZZZ-1.1.1",
    "MSH-1",
];

/// Everything a consumer might do with a parsed message.
fn exercise(msg: &Message<'_>) {
    for p in PATHS {
        let path = Path::parse(p).unwrap();
        let _ = msg.get(&path);
        let _ = msg.get_all(&path);
    }
    let tree = msg.tree();
    assert_eq!(tree.len(), msg.segment_count());
    let h = msg.header();
    assert!(h.control_id.is_some());
    let ack = AckBuilder::new(Some(&h), AckCode::AE, "1", "2024")
        .error(AckError::error(
            passerelle_hl7v2::ErrorCode::DataTypeError,
            None,
            "x",
        ))
        .build();
    // Our own ACK must always parse back.
    let back = Message::parse_with(
        &ack,
        &ParseOptions {
            default_charset: h.charset(),
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "ACK does not parse: {e}: {:?}",
            String::from_utf8_lossy(&ack)
        )
    });
    assert!(read_ack(&back).is_some());
}

fn charset() -> impl Strategy<Value = Charset> {
    prop_oneof![
        Just(Charset::Utf8),
        Just(Charset::Ascii),
        Just(Charset::Latin1),
        Just(Charset::Latin9),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = Message::parse(&bytes) {
            exercise(&msg);
        }
    }

    #[test]
    fn arbitrary_bodies_after_a_valid_header_never_panic(
        body in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                3 => proptest::sample::select(b"|^~\\&#\r\nXFSTRE.brsp".to_vec()),
            ],
            0..512,
        ),
        cs in charset(),
    ) {
        let mut bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\r".to_vec();
        bytes.extend(&body);
        if let Ok(msg) = Message::parse_with(&bytes, &ParseOptions { default_charset: cs }) {
            exercise(&msg);
            for seg in msg.segments() {
                for field in seg.fields() {
                    for rep in field.repetitions() {
                        for comp in rep.components() {
                            for sub in comp.subcomponents() {
                                let _ = sub.value();
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_headers_never_panic(
        head in proptest::collection::vec(
            prop_oneof![
                3 => any::<u8>(),
                5 => proptest::sample::select(b"MSH|^~\\&#\r\n8859/1UNICODE UTF-8".to_vec()),
            ],
            0..160,
        )
    ) {
        let mut bytes = b"MSH".to_vec();
        bytes.extend(&head);
        if let Ok(msg) = Message::parse(&bytes) {
            exercise(&msg);
        }
    }

    #[test]
    fn unescape_never_panics(s in any::<String>(), cs in charset()) {
        let d = Delimiters { truncation: Some(b'#'), ..Delimiters::default() };
        let _ = unescape(&s, &d, cs);
    }

    #[test]
    fn escape_then_unescape_is_identity(s in any::<String>(), v27 in any::<bool>()) {
        let d = Delimiters {
            truncation: v27.then_some(b'#'),
            ..Delimiters::default()
        };
        let escaped = escape(&s, &d);
        prop_assert!(!escaped.contains(['|', '^', '~', '&', '\r', '\n']));
        let back = unescape(&escaped, &d, Charset::Utf8);
        prop_assert_eq!(back.as_ref(), s.as_str());
    }

    #[test]
    fn path_parse_never_panics_and_display_roundtrips(s in "\\PC{0,24}") {
        if let Ok(p) = Path::parse(&s) {
            prop_assert_eq!(Path::parse(&p.to_string()).unwrap(), p);
        }
    }

    #[test]
    fn generated_paths_roundtrip(
        seg in "[A-Z][A-Z0-9]{2}",
        occ in proptest::option::of(prop_oneof![Just(0usize), 1usize..50]),
        field in 1usize..200,
        rep in proptest::option::of(prop_oneof![Just(0usize), 1usize..50]),
        comp in proptest::option::of((1usize..30, proptest::option::of(1usize..30))),
    ) {
        let sel = |s: Option<usize>| match s {
            None => String::new(),
            Some(0) => "[*]".to_string(),
            Some(n) => format!("[{n}]"),
        };
        let mut text = format!("{seg}{}-{field}{}", sel(occ), sel(rep));
        if let Some((c, sub)) = comp {
            text.push_str(&format!(".{c}"));
            if let Some(s) = sub {
                text.push_str(&format!(".{s}"));
            }
        }
        let p = Path::parse(&text).unwrap();
        prop_assert_eq!(p.segment_id(), seg.as_str());
        prop_assert_eq!(p.field(), field);
        prop_assert_eq!(Path::parse(&p.to_string()).unwrap(), p);
    }
}

/// A field as repetitions of components of subcomponents, all unescaped.
type FieldSpec = Vec<Vec<Vec<String>>>;

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9 .,:/-]{0,8}",
        1 => "[|^~&\\\\#é€日\r\n A-Z]{0,6}",
        1 => any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
}

fn field_spec() -> impl Strategy<Value = FieldSpec> {
    proptest::collection::vec(
        proptest::collection::vec(proptest::collection::vec(leaf(), 1..3), 1..4),
        1..3,
    )
}

fn segment_spec() -> impl Strategy<Value = (String, Vec<FieldSpec>)> {
    (
        "[A-Z][A-Z0-9]{2}".prop_filter("MSH is the header", |id| id != "MSH"),
        proptest::collection::vec(field_spec(), 0..8),
    )
}

fn join_field(f: &FieldSpec, d: &Delimiters) -> String {
    f.iter()
        .map(|rep| {
            rep.iter()
                .map(|comp| {
                    comp.iter()
                        .map(|s| escape(s, d).into_owned())
                        .collect::<Vec<_>>()
                        .join("&")
                })
                .collect::<Vec<_>>()
                .join("^")
        })
        .collect::<Vec<_>>()
        .join("~")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_messages_read_back(
        segments in proptest::collection::vec(segment_spec(), 0..6),
        control_id in "[A-Za-z0-9|^&]{1,10}",
        terminator in prop_oneof![Just("\r"), Just("\n"), Just("\r\n")],
        v27 in any::<bool>(),
    ) {
        let d = Delimiters { truncation: v27.then_some(b'#'), ..Delimiters::default() };
        let mut lines = vec![format!(
            "MSH|{}|APP|FAC|||20240101||ADT^A01^ADT_A01|{}|P|2.5",
            d.encoding_characters(),
            escape(&control_id, &d)
        )];
        for (id, fields) in &segments {
            let mut line = id.clone();
            for f in fields {
                line.push('|');
                line.push_str(&join_field(f, &d));
            }
            lines.push(line);
        }
        // A fixed last segment, so that trailing blanks of generated values
        // are not at the end of the message (where they are trimmed).
        lines.push("ZZZ|end".into());
        let text = lines.join(terminator) + terminator;

        let msg = Message::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))?;
        prop_assert_eq!(msg.segment_count(), segments.len() + 2);
        let header = msg.header();
        prop_assert_eq!(header.control_id.as_deref(), Some(control_id.as_str()));
        prop_assert_eq!(header.sending_application.as_deref(), Some("APP"));

        for (i, (id, fields)) in segments.iter().enumerate() {
            let seg = msg.segments().nth(i + 1).unwrap();
            prop_assert_eq!(seg.id(), id.as_str());
            prop_assert_eq!(seg.field_count(), fields.len());
            for (j, spec) in fields.iter().enumerate() {
                let field = seg.field(j + 1).unwrap();
                prop_assert_eq!(field.repetition_count(), spec.len());
                for (r, rep_spec) in spec.iter().enumerate() {
                    let rep = field.repetition(r + 1).unwrap();
                    prop_assert_eq!(rep.components().count(), rep_spec.len());
                    for (c, comp_spec) in rep_spec.iter().enumerate() {
                        let comp = rep.component(c + 1).unwrap();
                        prop_assert_eq!(comp.subcomponents().count(), comp_spec.len());
                        for (s, expected) in comp_spec.iter().enumerate() {
                            let sub = comp.subcomponent(s + 1).unwrap();
                            prop_assert_eq!(&sub.value(), expected);
                        }
                    }
                }
            }
        }
        // Path access agrees with the structural walk.
        for (i, (id, fields)) in segments.iter().enumerate() {
            let occurrence = segments[..=i].iter().filter(|(other, _)| other == id).count();
            for (j, spec) in fields.iter().enumerate() {
                let p = Path::parse(&format!("{id}[{occurrence}]-{}[*].1.1", j + 1)).unwrap();
                let expected: Vec<&str> = spec.iter().map(|rep| rep[0][0].as_str()).collect();
                prop_assert_eq!(msg.get_all(&p), expected);
            }
        }
    }
}
