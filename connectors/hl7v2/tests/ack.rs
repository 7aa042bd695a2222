//! ACK building (exact output), acknowledgment rules, and reading a peer's ACK.

use passerelle_hl7v2::ack::{
    AckBuilder, AckCode, AckError, AckMode, accept_ack_wanted, ack_mode, application_ack_wanted,
    read_ack,
};
use passerelle_hl7v2::{Charset, Delimiters, ErrorCode, Location, Message, ParseOptions, escape};

const TS: &str = "20240101120000+0100";

const ADT: &[u8] = b"MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL^1.2.3^ISO|GHH LAB|ELAB-3|198808181126+0100|SECURITY|ADT^A01^ADT_A01|MSG00001|P|2.5.1\rPID|1||42\r";

#[test]
fn application_accept() {
    let msg = Message::parse(ADT).unwrap();
    let h = msg.header();
    let ack = AckBuilder::new(Some(&h), AckCode::AA, "ACK0001", TS).build_string();
    assert_eq!(
        ack,
        "MSH|^~\\&|GHH LAB|ELAB-3|ADT1|GOOD HEALTH HOSPITAL^1.2.3^ISO|20240101120000+0100||ACK^A01^ACK|ACK0001|P|2.5.1\r\
         MSA|AA|MSG00001\r"
    );
    assert_eq!(
        AckBuilder::new(Some(&h), AckCode::AA, "ACK0001", TS).build(),
        ack.as_bytes()
    );
}

#[test]
fn application_error_with_err_segments() {
    let msg = Message::parse(ADT).unwrap();
    let h = msg.header();
    let ack = AckBuilder::new(Some(&h), AckCode::AE, "ACK0002", TS)
        .text("rejected")
        .error(AckError::error(
            ErrorCode::RequiredFieldMissing,
            Some(Location::new("PID", 1).with_field(3)),
            "PID-3 is required | see spec",
        ))
        .error(AckError::warning(
            ErrorCode::TableValueNotFound,
            Some(Location::new("PV1", 1).with_field(2).with_component(1)),
            "unknown class",
        ))
        .error(AckError::error(
            ErrorCode::ApplicationInternalError,
            None,
            "line1\nline2",
        ))
        .build_string();
    assert_eq!(
        ack,
        "MSH|^~\\&|GHH LAB|ELAB-3|ADT1|GOOD HEALTH HOSPITAL^1.2.3^ISO|20240101120000+0100||ACK^A01^ACK|ACK0002|P|2.5.1\r\
         MSA|AE|MSG00001|rejected\r\
         ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 is required \\F\\ see spec\r\
         ERR||PV1^1^2^^1|103^Table value not found^HL70357|W||||unknown class\r\
         ERR|||207^Application internal error^HL70357|E||||line1\\X0A\\line2\r"
    );
}

#[test]
fn copies_msh_18_and_encodes_in_the_original_charset() {
    let bytes = b"MSH|^~\\&|SIL|labo|PFI|Org|202106060931||ORU^R01^ORU_R01|015|T|2.5^FRA^2.11|||||FRA|8859/1\rPID|1||R\xc9NE\r";
    let msg = Message::parse(bytes).unwrap();
    let h = msg.header();
    let builder = AckBuilder::new(Some(&h), AckCode::AE, "016", TS).error(AckError::error(
        ErrorCode::DataTypeError,
        Some(Location::new("PID", 1).with_field(3)),
        "valeur refusée",
    ));
    assert_eq!(builder.charset(), Charset::Latin1);
    let out = builder.build();
    assert_eq!(
        out,
        b"MSH|^~\\&|PFI|Org|SIL|labo|20240101120000+0100||ACK^R01^ACK|016|T|2.5^FRA^2.11||||||8859/1\r\
          MSA|AE|015\r\
          ERR||PID^1^3|102^Data type error^HL70357|E||||valeur refus\xe9e\r"
    );
    // The ACK parses back with the same charset.
    let back = Message::parse(&out).unwrap();
    assert_eq!(back.charset(), Charset::Latin1);
    let (code, control_id, text) = read_ack(&back).unwrap();
    assert_eq!(code, AckCode::AE);
    assert_eq!(control_id.as_deref(), Some("015"));
    assert_eq!(text.as_deref(), Some("valeur refusée"));
}

#[test]
fn keeps_the_original_delimiters() {
    let msg = Message::parse(b"MSH!@$/%#!APP!FAC!!!2024!!ADT@A04!C9!P!2.7\r").unwrap();
    let h = msg.header();
    let ack = AckBuilder::new(Some(&h), AckCode::CR, "A1", TS)
        .error(AckError::error(
            ErrorCode::UnsupportedEventCode,
            Some(Location::new("MSH", 1).with_field(9).with_component(2)),
            "A04! not #handled",
        ))
        .build_string();
    assert_eq!(
        ack,
        "MSH!@$/%#!!!APP!FAC!20240101120000+0100!!ACK@A04@ACK!A1!P!2.7\r\
         MSA!CR!C9\r\
         ERR!!MSH@1@9@@2!201@Unsupported event code@HL70357!E!!!!A04/F/ not /P/handled\r"
    );
}

#[test]
fn without_an_original_message() {
    let err = Message::parse(b"MSHA^~\\&|").unwrap_err();
    let ack = AckBuilder::new(None, AckCode::AR, "X1", TS)
        .error(AckError::from(&err))
        .build_string();
    assert_eq!(
        ack,
        format!(
            "MSH|^~\\&|||||20240101120000+0100||ACK|X1|P|2.5\r\
             MSA|AR|\r\
             ERR||MSH^1^1|102^Data type error^HL70357|E||||{}\r",
            escape(&err.message, &Delimiters::default())
        )
    );
    assert!(ack.contains("such as '\\F\\'"), "{ack}");
    let no_loc = AckBuilder::new(None, AckCode::AR, "X2", TS)
        .error(AckError::from(Message::parse(b"").unwrap_err()))
        .build_string();
    assert!(
        no_loc.contains("ERR||MSH^1|100^Segment sequence error^HL70357|E||||empty message"),
        "{no_loc}"
    );
}

#[test]
fn refusal_of_a_header_in_an_undeclared_charset_echoes_it_byte_for_byte() {
    // Latin-1 in MSH-4 of a message that does not declare it (UTF-8 by default).
    let bytes = b"MSH|^~\\&|HIS|CH\xc2TEAU|EHR|CHBM|2024||ADT^A01|C-1|P|2.5\rPID|1\r";
    let err = Message::parse(bytes).unwrap_err();
    assert_eq!(err.code, ErrorCode::DataTypeError);
    let msh = Message::parse_header_lenient(bytes, &ParseOptions::default()).unwrap();
    let h = msh.header();
    assert_eq!(h.charset(), Charset::Latin1);
    assert_eq!(h.control_id.as_deref(), Some("C-1"));
    assert_eq!(h.sending_facility.as_deref(), Some("CH\u{c2}TEAU"));
    assert_eq!(msh.segment_count(), 1, "the first line only");
    let ack = AckBuilder::new(Some(&h), AckCode::AR, "A1", TS)
        .error(AckError::from(&err))
        .build();
    let expected: &[u8] = b"MSH|^~\\&|EHR|CHBM|HIS|CH\xc2TEAU|20240101120000+0100||ACK^A01^ACK|A1|P|2.5\rMSA|AR|C-1\r";
    assert_eq!(&ack[..expected.len()], expected);

    // An unsupported MSH-18 is read the same way, keeping its label.
    let jis = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|C-2|P|2.5||||||ISO IR87\r";
    assert!(Message::parse(jis).is_err());
    let msh = Message::parse_header_lenient(jis, &ParseOptions::default()).unwrap();
    let ack = AckBuilder::new(Some(&msh.header()), AckCode::AR, "A2", TS).build_string();
    assert!(ack.ends_with("|P|2.5||||||ISO IR87\rMSA|AR|C-2\r"), "{ack}");

    // A header lacking required fields still gives its control id.
    let short = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|C-3|P\r";
    assert!(Message::parse(short).is_err());
    let msh = Message::parse_header_lenient(short, &ParseOptions::default()).unwrap();
    assert_eq!(msh.header().control_id.as_deref(), Some("C-3"));

    // Without readable delimiters there is no header.
    assert!(Message::parse_header_lenient(b"MSH|^~|A\r", &ParseOptions::default()).is_err());
    assert!(Message::parse_header_lenient(b"PID|1\r", &ParseOptions::default()).is_err());
}

#[test]
fn ack_without_trigger_and_with_escaped_control_id() {
    let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ACK|X\\F\\Y|P|2.3\r").unwrap();
    let h = msg.header();
    let ack = AckBuilder::new(Some(&h), AckCode::AA, "N|1", "2024").build_string();
    assert_eq!(
        ack,
        "MSH|^~\\&|C|D|A|B|2024||ACK|N\\F\\1|P|2.3\rMSA|AA|X\\F\\Y\r"
    );
    let back = Message::parse(ack.as_bytes()).unwrap();
    assert_eq!(read_ack(&back).unwrap().1.as_deref(), Some("X|Y"));
}

fn header_with(msh15: &str, msh16: &str) -> Vec<u8> {
    format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5|||{msh15}|{msh16}\r").into_bytes()
}

#[test]
fn acknowledgment_modes() {
    let bytes = header_with("", "");
    let msg = Message::parse(&bytes).unwrap();
    let h = msg.header();
    assert_eq!(ack_mode(&h), AckMode::Original);
    assert!(accept_ack_wanted(&h, true));
    assert!(accept_ack_wanted(&h, false));
    assert!(application_ack_wanted(&h, true));

    let cases = [
        // (MSH-15, MSH-16, success, accept wanted, application wanted)
        ("AL", "NE", true, true, false),
        ("AL", "NE", false, true, false),
        ("NE", "AL", true, false, true),
        ("NE", "AL", false, false, true),
        ("ER", "SU", true, false, true),
        ("ER", "SU", false, true, false),
        ("SU", "ER", true, true, false),
        ("SU", "ER", false, false, true),
        ("", "AL", true, true, true),
        ("", "AL", false, true, true),
        ("AL", "", false, true, true),
    ];
    for (m15, m16, success, accept, app) in cases {
        let bytes = header_with(m15, m16);
        let msg = Message::parse(&bytes).unwrap();
        let h = msg.header();
        assert_eq!(ack_mode(&h), AckMode::Enhanced, "{m15}/{m16}");
        assert_eq!(
            accept_ack_wanted(&h, success),
            accept,
            "MSH-15={m15} success={success}"
        );
        assert_eq!(
            application_ack_wanted(&h, success),
            app,
            "MSH-16={m16} success={success}"
        );
    }
}

#[test]
fn ack_codes() {
    for code in [
        AckCode::AA,
        AckCode::AE,
        AckCode::AR,
        AckCode::CA,
        AckCode::CE,
        AckCode::CR,
    ] {
        assert_eq!(code.as_str().parse::<AckCode>(), Ok(code));
        assert_eq!(code.to_string(), code.as_str());
    }
    assert!("XX".parse::<AckCode>().is_err());
    assert!(AckCode::AA.is_accept() && AckCode::CA.is_accept());
    assert!(!AckCode::AE.is_accept());
    assert!(AckCode::CE.is_commit() && !AckCode::AE.is_commit());
}

#[test]
fn reading_peer_acks() {
    let read = |s: &str| read_ack(&Message::parse(s.as_bytes()).unwrap());
    let msh = "MSH|^~\\&|PFI-X|Org|SIL-Y|labo|202106060931||ACK^R01^ACK|016|P|2.5";

    assert_eq!(
        read(&format!("{msh}\rMSA|AA|015\r")),
        Some((AckCode::AA, Some("015".into()), None))
    );
    assert_eq!(
        read(&format!("{msh}\rMSA|AE|015|From MSA-3\r")),
        Some((AckCode::AE, Some("015".into()), Some("From MSA-3".into())))
    );
    assert_eq!(
        read(&format!(
            "{msh}\rMSA|AE|015|From MSA-3\rERR||OBX^1^5|102^Data type error^HL70357|E||||From ERR-8\r"
        )),
        Some((AckCode::AE, Some("015".into()), Some("From ERR-8".into())))
    );
    assert_eq!(
        read(&format!(
            "{msh}\rMSA|AR|015\rERR||OBX^1^5|102^Data type error^HL70357|E\r"
        )),
        Some((
            AckCode::AR,
            Some("015".into()),
            Some("Data type error".into())
        ))
    );
    // v2.3 layout: ERR-1 is an ELD with the error code in component 4.
    assert_eq!(
        read(&format!(
            "{msh}\rMSA|AE|\rERR|PID^1^3^101&Required field missing&HL70357\r"
        )),
        Some((AckCode::AE, None, Some("Required field missing".into())))
    );
    assert_eq!(read(&format!("{msh}\rMSA|ZZ|015\r")), None);
    assert_eq!(read(&format!("{msh}\r")), None);
}

#[test]
fn built_acks_read_back() {
    let msg = Message::parse(ADT).unwrap();
    let h = msg.header();
    let bytes = AckBuilder::new(Some(&h), AckCode::AE, "Z1", TS)
        .error(AckError::error(
            ErrorCode::RequiredFieldMissing,
            Some(Location::new("PID", 1).with_field(3)),
            "PID-3 ^ missing",
        ))
        .build();
    let ack = Message::parse(&bytes).unwrap();
    assert_eq!(ack.header().message_type.as_deref(), Some("ACK"));
    assert_eq!(ack.header().trigger_event.as_deref(), Some("A01"));
    assert_eq!(ack.header().sending_application.as_deref(), Some("GHH LAB"));
    assert_eq!(
        read_ack(&ack),
        Some((
            AckCode::AE,
            Some("MSG00001".into()),
            Some("PID-3 ^ missing".into())
        ))
    );
}
