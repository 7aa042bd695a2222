//! Parsing rules, field numbering, paths, charsets and errors, through the
//! public API.

use std::borrow::Cow;

use passerelle_hl7v2::{
    Charset, Delimiters, ErrorCode, Location, Message, ParseError, ParseOptions, Path,
};

const ADT: &str = "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL^1.2.3^ISO|GHH LAB|ELAB-3|198808181126+0100|SECURITY|ADT^A01^ADT_A01|MSG00001|P|2.5.1|||AL|NE||8859/1\r\
EVN|A01|198808181123\r\
PID|1||PATID1234^5^M11^ADT1^MR^GOOD HEALTH HOSPITAL~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M||C|2222 HOME STREET^^GREENSBORO^NC^27401-1020|GL|(555) 555-2004|(555)555-2004||S||PATID12345001^2^M10^ADT1^AN^A|444333333|987654^NC\r\
NK1|1|NUCLEAR^NELDA^W|SPO^SPOUSE||||NK^NEXT OF KIN\r\
PV1|1|I|2000^2012^01||||004777^ATTEND^AARON^A|||SUR||||ADM|A0\r\
OBX|1|NM|GLU^Glucose^LN||5.4|mmol/L\r\
OBX|2|ST|NOTE^Note||first\\T\\second||\r\
OBX|3|TX|TXT^Text||line1\\.br\\line2~rep2\r\
ZBE|MOV1^CHU|20240101||INSERT|N\r";

fn parse(s: &str) -> Message<'_> {
    Message::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e} ({:?})", e.location))
}

fn path(s: &str) -> Path {
    Path::parse(s).unwrap()
}

fn get(msg: &Message<'_>, p: &str) -> Option<String> {
    msg.get(&path(p)).map(Cow::into_owned)
}

fn err(s: &[u8]) -> ParseError {
    match Message::parse(s) {
        Ok(_) => panic!("{:?} should not parse", String::from_utf8_lossy(s)),
        Err(e) => e,
    }
}

fn msh_loc(field: usize) -> Option<Location> {
    Some(Location::new("MSH", 1).with_field(field))
}

#[test]
fn segments_and_ids() {
    let msg = parse(ADT);
    let ids: Vec<&str> = msg.segments().map(|s| s.id()).collect();
    assert_eq!(
        ids,
        [
            "MSH", "EVN", "PID", "NK1", "PV1", "OBX", "OBX", "OBX", "ZBE"
        ]
    );
    assert_eq!(msg.segment_count(), 9);
    assert_eq!(msg.segment("OBX", 2).unwrap().position(), 7);
    assert!(msg.segment("OBX", 4).is_none());
    assert!(msg.segment("OBX", 0).is_none());
    assert!(msg.segment("AL1", 1).is_none());
    assert_eq!(
        msg.segment("NK1", 1).unwrap().raw(),
        "NK1|1|NUCLEAR^NELDA^W|SPO^SPOUSE||||NK^NEXT OF KIN"
    );
    assert_eq!(msg.segments_named("OBX").count(), 3);
    assert_eq!(msg.delimiters(), &Delimiters::default());
    assert_eq!(msg.text(), ADT);
}

#[test]
fn msh_field_numbering() {
    let msg = parse(ADT);
    let msh = msg.msh();
    assert_eq!(msh.field(1).unwrap().raw(), "|");
    assert_eq!(msh.field(2).unwrap().raw(), "^~\\&");
    // MSH-2 is never unescaped nor split.
    assert_eq!(msh.field(2).unwrap().value(), "^~\\&");
    assert_eq!(msh.field(2).unwrap().repetition_count(), 1);
    assert_eq!(msh.field(3).unwrap().raw(), "ADT1");
    assert_eq!(msh.field(9).unwrap().raw(), "ADT^A01^ADT_A01");
    assert_eq!(msh.field(10).unwrap().raw(), "MSG00001");
    assert_eq!(msh.field(18).unwrap().raw(), "8859/1");
    assert!(msh.field(19).is_none());
    assert!(msh.field(0).is_none());
    assert_eq!(msh.field_count(), 18);
    assert_eq!(get(&msg, "MSH-1").as_deref(), Some("|"));
    assert_eq!(get(&msg, "MSH-2").as_deref(), Some("^~\\&"));
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("ADT1"));
    assert_eq!(get(&msg, "MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(get(&msg, "MSH-4.2").as_deref(), Some("1.2.3"));
}

#[test]
fn other_segments_number_from_one() {
    let msg = parse(ADT);
    let pid = msg.segment("PID", 1).unwrap();
    assert_eq!(pid.field(1).unwrap().raw(), "1");
    assert_eq!(pid.field(2).unwrap().raw(), "");
    assert!(pid.field(2).unwrap().is_empty());
    assert_eq!(pid.field(5).unwrap().raw(), "EVERYMAN^ADAM^A^III");
    assert_eq!(pid.field_count(), 20);
    assert_eq!(pid.fields().count(), 20);
    let f3 = pid.field(3).unwrap();
    assert_eq!(f3.repetition_count(), 2);
    let reps: Vec<&str> = f3.repetitions().map(|r| r.raw()).collect();
    assert_eq!(
        reps,
        [
            "PATID1234^5^M11^ADT1^MR^GOOD HEALTH HOSPITAL",
            "123456789^^^USSSA^SS"
        ]
    );
    assert_eq!(f3.component(1).unwrap().raw(), "PATID1234");
    assert_eq!(
        f3.repetition(2).unwrap().component(4).unwrap().raw(),
        "USSSA"
    );
    assert!(f3.repetition(3).is_none());
    assert!(f3.repetition(0).is_none());
    let comps: Vec<&str> = f3.components().map(|c| c.raw()).collect();
    assert_eq!(comps.len(), 6);
    // A segment id alone has no field.
    let msg = parse("MSH|^~\\&|||||||ADT^A01|1|P|2.5\rZZZ\rPID|\r");
    assert_eq!(msg.segment("ZZZ", 1).unwrap().field_count(), 0);
    assert!(msg.segment("ZZZ", 1).unwrap().field(1).is_none());
    assert_eq!(msg.segment("PID", 1).unwrap().field_count(), 1);
    assert_eq!(msg.segment("PID", 1).unwrap().field(1).unwrap().raw(), "");
}

#[test]
fn subcomponents() {
    let msg = parse(
        "MSH|^~\\&|||||||ORU^R01|1|P|2.5\rPID|||277^^^ASIP&1.2.250&ISO^INS~88^^^X&9.9&L^PI\r",
    );
    let f = msg.segment("PID", 1).unwrap().field(3).unwrap();
    let c4 = f.component(4).unwrap();
    let subs: Vec<&str> = c4.subcomponents().map(|s| s.raw()).collect();
    assert_eq!(subs, ["ASIP", "1.2.250", "ISO"]);
    assert_eq!(c4.subcomponent(2).unwrap().value(), "1.2.250");
    assert!(c4.subcomponent(4).is_none());
    assert_eq!(get(&msg, "PID-3.4.2").as_deref(), Some("1.2.250"));
    assert_eq!(get(&msg, "PID-3[2].4.1").as_deref(), Some("X"));
    assert_eq!(
        msg.get_all(&path("PID-3[*].4.1")),
        [Cow::Borrowed("ASIP"), Cow::Borrowed("X")]
    );
}

#[test]
fn paths_select_values() {
    let msg = parse(ADT);
    assert_eq!(get(&msg, "PID-5.1").as_deref(), Some("EVERYMAN"));
    assert_eq!(get(&msg, "PID-5").as_deref(), Some("EVERYMAN^ADAM^A^III"));
    assert_eq!(get(&msg, "PID-5.9"), None);
    assert_eq!(get(&msg, "PID-2"), None, "empty is None");
    assert_eq!(get(&msg, "PID-99"), None);
    assert_eq!(get(&msg, "AL1-1"), None);
    assert_eq!(get(&msg, "OBX[2]-5").as_deref(), Some("first&second"));
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("5.4"));
    assert_eq!(get(&msg, "OBX[*]-5").as_deref(), Some("5.4"));
    assert_eq!(get(&msg, "OBX[4]-5"), None);
    assert_eq!(get(&msg, "PID-3[2].1").as_deref(), Some("123456789"));
    assert_eq!(get(&msg, "PID-3[3].1"), None);
    assert_eq!(get(&msg, "ZBE-1.2").as_deref(), Some("CHU"));
    assert_eq!(
        msg.get_all(&path("PID-3[*]")),
        [
            "PATID1234^5^M11^ADT1^MR^GOOD HEALTH HOSPITAL",
            "123456789^^^USSSA^SS"
        ]
    );
    assert_eq!(msg.get_all(&path("PID-3[*].1")), ["PATID1234", "123456789"]);
    assert_eq!(
        msg.get_all(&path("OBX[*]-5")),
        ["5.4", "first&second", "line1\nline2"]
    );
    // OBX-5 of the third OBX has two repetitions.
    assert_eq!(msg.get_all(&path("OBX[3]-5[*]")), ["line1\nline2", "rep2"]);
    assert_eq!(
        msg.get_all(&path("OBX[*]-5[*]")),
        ["5.4", "first&second", "line1\nline2", "rep2"]
    );
    // Aligned lists: one entry per OBX even where the value is absent.
    assert_eq!(msg.get_all(&path("OBX[*]-6")), ["mmol/L", "", ""]);
    assert_eq!(msg.get_all(&path("OBX[*]-5[2]")), ["", "", "rep2"]);
    assert!(msg.get_all(&path("AL1[*]-3")).is_empty());
    assert!(msg.get_all(&path("OBX[7]-3")).is_empty());
    // A path is compiled once and reused.
    let p = path("OBX-3.1");
    assert_eq!(msg.get(&p).as_deref(), Some("GLU"));
    assert_eq!(msg.get(&p).as_deref(), Some("GLU"));
}

#[test]
fn values_borrow_unless_escaped() {
    let msg = parse(ADT);
    assert!(matches!(msg.get(&path("PID-5.1")), Some(Cow::Borrowed(_))));
    assert!(matches!(msg.get(&path("OBX[2]-5")), Some(Cow::Owned(_))));
}

#[test]
fn header_fields() {
    let msg = parse(ADT);
    let h = msg.header();
    assert_eq!(h.sending_application.as_deref(), Some("ADT1"));
    assert_eq!(h.sending_facility.as_deref(), Some("GOOD HEALTH HOSPITAL"));
    assert_eq!(h.receiving_application.as_deref(), Some("GHH LAB"));
    assert_eq!(h.receiving_facility.as_deref(), Some("ELAB-3"));
    assert_eq!(h.datetime.as_deref(), Some("198808181126+0100"));
    assert_eq!(h.message_type.as_deref(), Some("ADT"));
    assert_eq!(h.trigger_event.as_deref(), Some("A01"));
    assert_eq!(h.message_structure.as_deref(), Some("ADT_A01"));
    assert_eq!(h.control_id.as_deref(), Some("MSG00001"));
    assert_eq!(h.processing_id.as_deref(), Some("P"));
    assert_eq!(h.version.as_deref(), Some("2.5.1"));
    assert_eq!(h.accept_ack_type.as_deref(), Some("AL"));
    assert_eq!(h.application_ack_type.as_deref(), Some("NE"));
    assert_eq!(h.charset_field.as_deref(), Some("8859/1"));
    assert_eq!(h.charset(), Charset::Latin1);
    assert_eq!(h.segment().id(), "MSH");

    let msg = parse("MSH|^~\\&|||||||ORU^R01|X\\F\\1|P^T|2.5^FRA^2.11\r");
    let h = msg.header();
    assert_eq!(h.sending_application, None);
    assert_eq!(h.message_structure, None);
    assert_eq!(h.control_id.as_deref(), Some("X|1"));
    assert_eq!(h.processing_id.as_deref(), Some("P"));
    assert_eq!(h.version.as_deref(), Some("2.5"));
    assert_eq!(h.accept_ack_type, None);
    assert_eq!(h.charset_field, None);
}

#[test]
fn v27_five_encoding_characters() {
    let msg =
        parse("MSH|^~\\&#|APP|FAC|RAPP|RFAC|20240101||ADT^A01^ADT_A01|C1|P|2.7\rPID|1||X\\P\\Y\r");
    assert_eq!(msg.delimiters().truncation, Some(b'#'));
    assert_eq!(msg.msh().field(2).unwrap().raw(), "^~\\&#");
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("APP"));
    assert_eq!(get(&msg, "MSH-4").as_deref(), Some("FAC"));
    assert_eq!(get(&msg, "MSH-10").as_deref(), Some("C1"));
    assert_eq!(msg.header().sending_application.as_deref(), Some("APP"));
    assert_eq!(get(&msg, "PID-3").as_deref(), Some("X#Y"));
}

#[test]
fn custom_delimiters() {
    let msg = parse("MSH!@$/%!APP!!!!!!ADT@A01!1!P!2.5\rPID!1!!a@b$c@d!x/F/y\r");
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("APP"));
    assert_eq!(get(&msg, "MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(msg.get_all(&path("PID-3[*].2")), ["b", "d"]);
    assert_eq!(get(&msg, "PID-4").as_deref(), Some("x!y"));
}

#[test]
fn segment_terminators() {
    let base = [
        "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5",
        "PID|1||42",
        "ZPV|custom",
    ];
    for term in ["\r", "\n", "\r\n"] {
        for trailer in ["", term, "\r\n\r\n", "\n\n", "\r\r", "\n \n"] {
            let text = format!("{}{trailer}", base.join(term));
            let msg = parse(&text);
            let ids: Vec<&str> = msg.segments().map(|s| s.id()).collect();
            assert_eq!(ids, ["MSH", "PID", "ZPV"], "{text:?}");
            assert_eq!(get(&msg, "PID-3").as_deref(), Some("42"), "{text:?}");
            assert_eq!(get(&msg, "MSH-12").as_deref(), Some("2.5"), "{text:?}");
            assert_eq!(msg.segment("ZPV", 1).unwrap().raw(), "ZPV|custom");
        }
    }
    // Blank lines between segments are tolerated.
    let msg = parse("MSH|^~\\&|||||||ADT^A01|1|P|2.5\r\n\r\nPID|1\n\nPV1|1\r");
    assert_eq!(msg.segment_count(), 3);
}

#[test]
fn cr_terminated_messages_keep_line_feeds_as_data() {
    // The standard terminator is CR; a sender using it may carry LF in text.
    let msg = parse("MSH|^~\\&|||||||ORU^R01|1|P|2.5\rOBX|1|TX|||line1\nline2\rOBX|2\r\n");
    assert_eq!(msg.segment_count(), 3);
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("line1\nline2"));
    assert_eq!(get(&msg, "OBX[2]-1").as_deref(), Some("2"));
}

#[test]
fn z_segments_are_ordinary() {
    let msg = parse(ADT);
    let zbe = msg.segment("ZBE", 1).unwrap();
    assert_eq!(zbe.field(4).unwrap().raw(), "INSERT");
    assert_eq!(get(&msg, "ZBE-5").as_deref(), Some("N"));
}

#[test]
fn bom_is_tolerated() {
    let text = format!("\u{FEFF}{ADT}");
    let msg = Message::parse(text.as_bytes()).unwrap();
    assert_eq!(msg.header().control_id.as_deref(), Some("MSG00001"));
    assert!(msg.text().starts_with("MSH|"));
}

#[test]
fn escapes_in_message_values() {
    let msg = parse(
        "MSH|^~\\&|||||||ORU^R01|1|P|2.5\r\
         OBX|1|ST|||\\F\\\\S\\\\T\\\\R\\\\E\\|\r\
         OBX|2|ST|||\\X41\\BC\r\
         OBX|3|ST|||Ééé\\T\\x\r\
         OBX|4|FT|||a\\.br\\b\\H\\c\\N\\d\r\
         OBX|5|ST|||unknown \\Q\\ and \\unterminated\r",
    );
    assert_eq!(get(&msg, "OBX[1]-5").as_deref(), Some("|^&~\\"));
    assert_eq!(get(&msg, "OBX[2]-5").as_deref(), Some("ABC"));
    assert_eq!(get(&msg, "OBX[3]-5").as_deref(), Some("Ééé&x"));
    assert_eq!(get(&msg, "OBX[4]-5").as_deref(), Some("a\nbcd"));
    assert_eq!(
        get(&msg, "OBX[5]-5").as_deref(),
        Some("unknown \\Q\\ and \\unterminated")
    );
    // Escaped delimiters do not split.
    let f = msg.segment("OBX", 1).unwrap().field(5).unwrap();
    assert_eq!(f.repetition_count(), 1);
    assert_eq!(f.components().count(), 1);
}

#[test]
fn latin1_messages_are_transcoded() {
    let mut bytes = b"MSH|^~\\&|APP|H\xd4PITAL|||20240101||ADT^A01|1|P|2.5|||||FRA|8859/1\rPID|1||1||RIVI\xc8RE^Ren\xe9e\rOBX|1|ST|||caf\\XE9\\\r".to_vec();
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(get(&msg, "PID-5.1").as_deref(), Some("RIVIÈRE"));
    assert_eq!(get(&msg, "PID-5.2").as_deref(), Some("Renée"));
    assert_eq!(get(&msg, "MSH-4").as_deref(), Some("HÔPITAL"));
    assert_eq!(get(&msg, "OBX-5").as_deref(), Some("café"));
    assert!(msg.text().contains("RIVIÈRE"));

    // Same bytes declared 8859/15: 0xA4 is the euro sign.
    bytes = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5|||||FRA|8859/15\rNTE|1||5 \xa4\r".to_vec();
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.charset(), Charset::Latin9);
    assert_eq!(get(&msg, "NTE-3").as_deref(), Some("5 €"));

    // Pure ASCII latin-1 messages are not copied.
    let msg = Message::parse(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5|||||FRA|8859/1\r").unwrap();
    assert_eq!(msg.charset(), Charset::Latin1);
}

#[test]
fn charset_selection() {
    let with18 = |label: &str| format!("MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||{label}\rPID|1||é\r");
    for (label, cs) in [
        ("UNICODE UTF-8", Charset::Utf8),
        ("UTF-8", Charset::Utf8),
        ("UTF8", Charset::Utf8),
        ("ASCII", Charset::Ascii),
        ("UNICODE UTF-8~8859/1", Charset::Utf8),
    ] {
        let text = with18(label);
        let msg = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(msg.charset(), cs, "{label}");
        assert_eq!(get(&msg, "PID-3").as_deref(), Some("é"));
    }
    // Empty MSH-18: the default from the options.
    let text = "MSH|^~\\&|||||||ADT^A01|1|P|2.5\rPID|1||\u{e9}\r";
    assert_eq!(
        Message::parse(text.as_bytes()).unwrap().charset(),
        Charset::Utf8
    );
    let latin = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5\rPID|1||\xe9\r";
    let opts = ParseOptions {
        default_charset: Charset::Latin1,
    };
    let msg = Message::parse_with(latin, &opts).unwrap();
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(get(&msg, "PID-3").as_deref(), Some("é"));

    // Unsupported charset.
    let e = err(with18("ISO IR87").as_bytes());
    assert_eq!(e.code, ErrorCode::DataTypeError);
    assert_eq!(e.location, msh_loc(18));
    assert!(e.message.contains("unsupported character set"), "{e}");
    assert!(e.message.contains("ISO IR87"), "{e}");
}

#[test]
fn invalid_utf8_is_explained() {
    let bytes = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5\rPID|1||RIVI\xc8RE\r";
    let offset = bytes.iter().position(|&b| b == 0xC8).unwrap();
    let e = err(bytes);
    assert_eq!(e.code, ErrorCode::DataTypeError);
    assert!(e.message.contains(&format!("offset {offset}")), "{e}");
    assert!(e.message.contains("MSH-18"), "{e}");
    assert!(e.message.contains("0xC8"), "{e}");
}

#[test]
fn small_tilde_repetition_separator_is_normalized() {
    // Seen in published samples: U+02DC declared (and used) as repetition separator.
    let msg = parse("MSH|^\u{2DC}\\&|A|B|||2024||ORU^R01|1|P|2.5\rPID|||a\u{2DC}b\r");
    assert_eq!(msg.delimiters().repetition, b'~');
    assert_eq!(msg.get_all(&path("PID-3[*]")), ["a", "b"]);
    assert_eq!(get(&msg, "MSH-3").as_deref(), Some("A"));
    let e = err("MSH|^\u{2DC}\\&|A|B|||2024||ORU^R01|1|P|2.5\rPID|||a~b\r".as_bytes());
    assert_eq!(e.code, ErrorCode::DataTypeError);
}

#[test]
fn start_of_message_errors() {
    for input in [&b""[..], b"\r\n", b"   "] {
        let e = err(input);
        assert_eq!(e.code, ErrorCode::SegmentSequenceError);
        assert!(e.message.contains("empty message"), "{e}");
        assert_eq!(e.location, Some(Location::new("MSH", 1)));
    }
    let e = err(b"junk\rMSH|^~\\&|||||||ADT^A01|1|P|2.5\r");
    assert_eq!(e.code, ErrorCode::SegmentSequenceError);
    assert!(e.message.contains("no MSH segment"), "{e}");
    assert_eq!(e.location, Some(Location::new("MSH", 1)));
    let e = err(b"PID|1\r");
    assert!(e.message.contains("no MSH segment"), "{e}");
    let e = err(b"\x0bMSH|^~\\&|||||||ADT^A01|1|P|2.5\r\x1c\r");
    assert_eq!(e.code, ErrorCode::SegmentSequenceError);

    for batch in [&b"FHS|^~\\&|A\rBHS|^~\\&\r"[..], b"BHS|^~\\&|A\r"] {
        let e = err(batch);
        assert_eq!(e.code, ErrorCode::UnsupportedMessageType);
        assert!(e.message.contains("batch"), "{e}");
    }
}

#[test]
fn field_separator_errors() {
    for input in [
        &b"MSH"[..],
        b"MSHA^~\\&",
        b"MSH ^~\\&",
        b"MSH\r",
        b"MSH\xc3\xa9",
    ] {
        let e = err(input);
        assert_eq!(e.code, ErrorCode::DataTypeError, "{e}");
        assert_eq!(e.location, msh_loc(1), "{e}");
        assert_eq!(e.location.as_ref().unwrap().erl_parts(), ["MSH", "1", "1"]);
    }
}

#[test]
fn encoding_character_errors() {
    for enc in [
        "",
        "^~",
        "^~\\",
        "^~\\&#@",
        "^~\\A",
        "^~\\1",
        "^^\\&",
        "^~|&",
        "^ \\&",
        "^~\\&\u{e9}",
    ] {
        let text = format!("MSH|{enc}|APP|||||ADT^A01|1|P|2.5\r");
        let e = err(text.as_bytes());
        assert_eq!(e.code, ErrorCode::DataTypeError, "{enc:?}: {e}");
        assert_eq!(e.location, msh_loc(2), "{enc:?}: {e}");
    }
    // Encoding characters running into the terminator.
    let e = err(b"MSH|^~\\&\r");
    assert_eq!(e.code, ErrorCode::RequiredFieldMissing, "{e}");
}

#[test]
fn required_header_fields() {
    let cases = [
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5", None),
        ("MSH|^~\\&|A|B|C|D|2024", Some(9)),
        ("MSH|^~\\&|A|B|C|D|2024||", Some(9)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01", Some(10)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5", Some(10)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1", Some(11)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1||2.5", Some(11)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P", Some(12)),
        ("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|", Some(12)),
        ("MSH|^~\\&", Some(9)),
    ];
    for (text, missing) in cases {
        let full = format!("{text}\rPID|1\r");
        let result = Message::parse(full.as_bytes());
        match missing {
            None => assert!(result.is_ok(), "{text}"),
            Some(n) => {
                let e = result.unwrap_err();
                assert_eq!(e.code, ErrorCode::RequiredFieldMissing, "{text}: {e}");
                assert_eq!(e.location, msh_loc(n), "{text}: {e}");
                assert!(e.message.contains(&format!("MSH-{n}")), "{e}");
            }
        }
    }
    let e = err(b"MSH|^~\\&|A|B|C|D|2024\r");
    assert!(e.message.contains("ends after MSH-7"), "{e}");
}

#[test]
fn segment_id_errors() {
    for bad in [
        "pid|1",
        "PI|1",
        "PIDX|1",
        "P-D|1",
        " PID|1",
        "PID1",
        "\u{e9}PD|1",
    ] {
        let text = format!("MSH|^~\\&|||||||ADT^A01|1|P|2.5\rEVN|A01\r{bad}\rPV1|1\r");
        let e = err(text.as_bytes());
        assert_eq!(e.code, ErrorCode::SegmentSequenceError, "{bad:?}: {e}");
        let loc = e.location.clone().unwrap();
        assert_eq!(loc.sequence, 3, "{bad:?}");
        assert_eq!(loc.field, None);
        assert!(e.message.contains("segment 3"), "{e}");
    }
    let e = err(b"MSH|^~\\&|||||||ADT^A01|1|P|2.5\rMSH|^~\\&|||||||ADT^A01|2|P|2.5\r");
    assert_eq!(e.code, ErrorCode::SegmentSequenceError);
    assert!(e.message.contains("second MSH"), "{e}");
}

#[test]
fn tree_view() {
    let msg = parse("MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rPID|1||a&b^c~d||x\\T\\y\r");
    let tree = msg.tree();
    assert_eq!(tree.len(), 2);
    assert_eq!(tree[0].id, "MSH");
    assert_eq!(tree[0].fields[0].number, 1);
    assert_eq!(tree[0].fields[0].value, "|");
    assert_eq!(tree[0].fields[1].value, "^~\\&");
    assert_eq!(tree[0].fields[1].repetitions.len(), 1);
    assert_eq!(tree[0].fields[2].number, 3);
    assert_eq!(tree[0].fields[2].value, "A");
    let pid = &tree[1];
    assert_eq!((pid.id.as_str(), pid.position), ("PID", 2));
    assert_eq!(pid.fields.len(), 5);
    let f3 = &pid.fields[2];
    assert_eq!(f3.number, 3);
    assert_eq!(f3.repetitions.len(), 2);
    assert_eq!(f3.repetitions[0].components.len(), 2);
    assert_eq!(f3.repetitions[0].components[0].subcomponents, ["a", "b"]);
    assert_eq!(f3.repetitions[0].components[1].value, "c");
    assert_eq!(f3.repetitions[1].value, "d");
    assert_eq!(pid.fields[4].value, "x&y");
    assert_eq!(
        pid.fields[4].repetitions[0].components[0].subcomponents,
        ["x&y"]
    );
}

#[test]
fn owned_message_outlives_input() {
    let msg = {
        let bytes = ADT.as_bytes().to_vec();
        Message::parse(&bytes).unwrap().into_owned()
    };
    assert_eq!(get(&msg, "PID-5.2").as_deref(), Some("ADAM"));
}
