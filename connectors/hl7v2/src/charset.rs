//! Character sets named in MSH-18, and the small amount of transcoding HL7
//! needs: ISO 8859-1 and 8859-15 to UTF-8 on input, back again for ACKs.
//!
//! The two Latin tables are small enough to write out, which keeps the crate
//! free of a general-purpose encoding library.

use std::borrow::Cow;
use std::fmt;

/// Character set of a message (HL7 table 0211, the subset we accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    /// "ASCII". UTF-8 text is tolerated under this label (ASCII is a subset).
    Ascii,
    /// "UNICODE UTF-8" (also "UTF-8", "UTF8").
    #[default]
    Utf8,
    /// "8859/1" (ISO 8859-1, Latin-1).
    Latin1,
    /// "8859/15" (ISO 8859-15, Latin-9: Latin-1 with the euro sign and 7 letters).
    Latin9,
}

impl Charset {
    /// The charset for an MSH-18 value, or `None` when it is not supported.
    /// Matching ignores case and surrounding spaces. An empty value is not a
    /// charset: the caller decides the default.
    pub fn from_label(label: &str) -> Option<Charset> {
        let label = label.trim();
        let is = |name: &str| label.eq_ignore_ascii_case(name);
        if is("ASCII") {
            Some(Charset::Ascii)
        } else if is("UNICODE UTF-8") || is("UTF-8") || is("UTF8") {
            Some(Charset::Utf8)
        } else if is("8859/1") {
            Some(Charset::Latin1)
        } else if is("8859/15") {
            Some(Charset::Latin9)
        } else {
            None
        }
    }

    /// The HL7 table 0211 label, as written in MSH-18.
    pub fn label(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
            Charset::Latin9 => "8859/15",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The bytes 0xA0..=0xBF where 8859-15 differs from 8859-1, with the
/// character 8859-15 puts there.
const LATIN9_DIFF: [(u8, char); 8] = [
    (0xA4, '\u{20AC}'), // euro sign
    (0xA6, '\u{0160}'), // S caron
    (0xA8, '\u{0161}'), // s caron
    (0xB4, '\u{017D}'), // Z caron
    (0xB8, '\u{017E}'), // z caron
    (0xBC, '\u{0152}'), // OE ligature
    (0xBD, '\u{0153}'), // oe ligature
    (0xBE, '\u{0178}'), // Y diaeresis
];

fn latin9_char(b: u8) -> char {
    if (0xA4..=0xBE).contains(&b) {
        for (byte, c) in LATIN9_DIFF {
            if byte == b {
                return c;
            }
        }
    }
    char::from(b)
}

fn latin9_byte(c: char) -> Option<u8> {
    for (byte, mapped) in LATIN9_DIFF {
        if mapped == c {
            return Some(byte);
        }
    }
    match u8::try_from(u32::from(c)) {
        // The 8 code points 8859-15 replaced are not representable any more.
        Ok(b) if LATIN9_DIFF.iter().any(|(x, _)| *x == b) => None,
        Ok(b) => Some(b),
        Err(_) => None,
    }
}

/// Decoding failure: the byte offset of the first byte that is not valid in
/// the charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidByte {
    pub offset: usize,
}

/// Decodes a whole message. Borrowed when the bytes are already valid UTF-8
/// text in that charset (always the case for pure ASCII input).
pub(crate) fn decode(bytes: &[u8], charset: Charset) -> Result<Cow<'_, str>, InvalidByte> {
    match charset {
        Charset::Utf8 | Charset::Ascii => {
            std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|e| InvalidByte {
                    offset: e.valid_up_to(),
                })
        }
        Charset::Latin1 | Charset::Latin9 => {
            // Pure ASCII is identical in all three encodings: no copy needed.
            if bytes.is_ascii()
                && let Ok(s) = std::str::from_utf8(bytes)
            {
                return Ok(Cow::Borrowed(s));
            }
            let mut out = String::with_capacity(bytes.len() + bytes.len() / 8);
            decode_single_byte(bytes, charset, &mut out);
            Ok(Cow::Owned(out))
        }
    }
}

fn decode_single_byte(bytes: &[u8], charset: Charset, out: &mut String) {
    match charset {
        Charset::Latin9 => out.extend(bytes.iter().map(|&b| latin9_char(b))),
        _ => out.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

/// Decodes bytes given by a `\X..\` escape, in the message charset. Never
/// fails: bytes that make no sense in the charset become U+FFFD.
pub(crate) fn decode_lossy(bytes: &[u8], charset: Charset, out: &mut String) {
    match charset {
        Charset::Utf8 => out.push_str(&String::from_utf8_lossy(bytes)),
        Charset::Ascii => out.extend(bytes.iter().map(|&b| {
            if b.is_ascii() {
                char::from(b)
            } else {
                char::REPLACEMENT_CHARACTER
            }
        })),
        Charset::Latin1 | Charset::Latin9 => decode_single_byte(bytes, charset, out),
    }
}

/// Encodes text for the wire in `charset`. Characters the charset cannot
/// represent become `?`, which is what a human reading an ACK would expect
/// rather than a failure to acknowledge at all.
pub fn encode(text: &str, charset: Charset) -> Cow<'_, [u8]> {
    if charset == Charset::Utf8 || text.is_ascii() {
        return Cow::Borrowed(text.as_bytes());
    }
    let bytes = text
        .chars()
        .map(|c| {
            let b = match charset {
                Charset::Latin1 => u8::try_from(u32::from(c)).ok(),
                Charset::Latin9 => latin9_byte(c),
                _ => u8::try_from(u32::from(c)).ok().filter(u8::is_ascii),
            };
            b.unwrap_or(b'?')
        })
        .collect();
    Cow::Owned(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Charset::from_label("ASCII"), Some(Charset::Ascii));
        assert_eq!(Charset::from_label("UNICODE UTF-8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_label("utf-8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_label("UTF8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_label(" 8859/1 "), Some(Charset::Latin1));
        assert_eq!(Charset::from_label("8859/15"), Some(Charset::Latin9));
        assert_eq!(Charset::from_label("8859/2"), None);
        assert_eq!(Charset::from_label("ISO IR87"), None);
        assert_eq!(Charset::from_label(""), None);
        for c in [
            Charset::Ascii,
            Charset::Utf8,
            Charset::Latin1,
            Charset::Latin9,
        ] {
            assert_eq!(Charset::from_label(c.label()), Some(c));
        }
        assert_eq!(Charset::default(), Charset::Utf8);
    }

    #[test]
    fn latin1_decodes_every_byte() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let text = decode(&bytes, Charset::Latin1).unwrap();
        assert_eq!(text.chars().count(), 256);
        assert!(text.chars().zip(0u32..).all(|(c, i)| u32::from(c) == i));
        assert_eq!(decode(b"caf\xe9", Charset::Latin1).unwrap(), "café");
    }

    #[test]
    fn latin9_differs_from_latin1_at_eight_points() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let l1 = decode(&bytes, Charset::Latin1).unwrap();
        let l9 = decode(&bytes, Charset::Latin9).unwrap();
        let diffs: Vec<(char, char)> = l1.chars().zip(l9.chars()).filter(|(a, b)| a != b).collect();
        assert_eq!(diffs.len(), 8);
        assert_eq!(decode(b"\xa4 \xbd", Charset::Latin9).unwrap(), "€ œ");
        assert_eq!(decode(b"\xa4", Charset::Latin1).unwrap(), "¤");
    }

    #[test]
    fn ascii_input_is_borrowed_in_every_charset() {
        for c in [
            Charset::Ascii,
            Charset::Utf8,
            Charset::Latin1,
            Charset::Latin9,
        ] {
            assert!(matches!(decode(b"MSH|x", c).unwrap(), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn invalid_utf8_reports_offset() {
        assert_eq!(
            decode(b"abc\xe9def", Charset::Utf8),
            Err(InvalidByte { offset: 3 })
        );
    }

    #[test]
    fn encode_roundtrips_latin() {
        assert_eq!(&*encode("café", Charset::Latin1), b"caf\xe9");
        assert_eq!(&*encode("€œ", Charset::Latin9), b"\xa4\xbd");
        assert_eq!(&*encode("€", Charset::Latin1), b"?");
        assert_eq!(&*encode("¤", Charset::Latin9), b"?");
        assert_eq!(&*encode("é", Charset::Ascii), b"?");
        assert_eq!(&*encode("é", Charset::Utf8), "é".as_bytes());
        let all: Vec<u8> = (0..=255u8).collect();
        for c in [Charset::Latin1, Charset::Latin9] {
            let text = decode(&all, c).unwrap();
            assert_eq!(&*encode(&text, c), &all[..]);
        }
    }

    #[test]
    fn lossy_decoding_of_escaped_bytes() {
        let mut out = String::new();
        decode_lossy(&[0xC3, 0xA9, 0xFF], Charset::Utf8, &mut out);
        assert_eq!(out, "é\u{FFFD}");
        out.clear();
        decode_lossy(&[0xE9, 0x41], Charset::Ascii, &mut out);
        assert_eq!(out, "\u{FFFD}A");
        out.clear();
        decode_lossy(&[0xE9, 0xA4], Charset::Latin9, &mut out);
        assert_eq!(out, "é€");
    }
}
