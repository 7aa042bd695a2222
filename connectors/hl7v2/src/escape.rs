//! HL7 escape sequences (`\F\`, `\X41\`, `\.br\`...), decoded on access.
//!
//! Decoding works on byte offsets of the escape character, which is always
//! ASCII, so slicing never falls inside a multi-byte character whatever text
//! precedes the escape (`Ééé\T\x` decodes to `Ééé&x`).

use std::borrow::Cow;

use memchr::memchr;

use crate::charset::{self, Charset};
use crate::delimiters::Delimiters;

/// Upper bound for repeat counts in `\.sp n\` and `\.sk n\`, so that a hostile
/// message cannot make a small field decode to megabytes.
const MAX_REPEAT: usize = 100;

/// Decodes the escape sequences of a raw value. Borrowed when the value holds
/// no escape character, which is the common case.
///
/// Hex escapes (`\Xhhhh\`) are bytes in the message charset; adjacent hex
/// escapes are joined before decoding, so a UTF-8 character split over two
/// of them still decodes. Highlighting (`\H\`, `\N\`) and formatting escapes
/// are rendered as plain text (`\.br\` as a newline). Unknown or unterminated
/// escapes are kept as they are.
pub fn unescape<'a>(raw: &'a str, d: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let bytes = raw.as_bytes();
    let Some(mut next) = memchr(d.escape, bytes) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        if next > pos {
            flush(&mut pending, charset, &mut out);
            out.push_str(&raw[pos..next]);
        }
        let body_start = next + 1;
        let Some(rel) = bytes
            .get(body_start..)
            .and_then(|rest| memchr(d.escape, rest))
        else {
            // Unterminated: keep the rest as it is.
            flush(&mut pending, charset, &mut out);
            out.push_str(&raw[next..]);
            return Cow::Owned(out);
        };
        let close = body_start + rel;
        match sequence(&raw[body_start..close], d) {
            Decoded::Bytes(hex) => pending.extend(hex),
            Decoded::Text(text) => {
                flush(&mut pending, charset, &mut out);
                out.push_str(&text);
            }
            Decoded::Unknown => {
                flush(&mut pending, charset, &mut out);
                out.push_str(&raw[next..=close]);
            }
        }
        pos = close + 1;
        match bytes.get(pos..).and_then(|rest| memchr(d.escape, rest)) {
            Some(rel) => next = pos + rel,
            None => break,
        }
    }
    flush(&mut pending, charset, &mut out);
    out.push_str(&raw[pos..]);
    Cow::Owned(out)
}

fn flush(pending: &mut Vec<u8>, charset: Charset, out: &mut String) {
    if !pending.is_empty() {
        charset::decode_lossy(pending, charset, out);
        pending.clear();
    }
}

enum Decoded {
    Text(Cow<'static, str>),
    Bytes(Vec<u8>),
    Unknown,
}

/// Interprets the text between two escape characters.
fn sequence(body: &str, d: &Delimiters) -> Decoded {
    let one = |b: u8| Decoded::Text(Cow::Owned(char::from(b).to_string()));
    match body {
        "F" => one(d.field),
        "S" => one(d.component),
        "T" => one(d.subcomponent),
        "R" => one(d.repetition),
        "E" => one(d.escape),
        // Without a declared truncation character, `#` is the standard one.
        "P" => one(d.truncation.unwrap_or(b'#')),
        // Highlight on/off: no meaning in plain text.
        "H" | "N" => Decoded::Text(Cow::Borrowed("")),
        ".br" => Decoded::Text(Cow::Borrowed("\n")),
        _ => {
            if let Some(hex) = body.strip_prefix('X') {
                return Decoded::Bytes(hex_bytes(hex));
            }
            if let Some(cmd) = body.strip_prefix('.') {
                return formatting(cmd);
            }
            Decoded::Unknown
        }
    }
}

/// Hex digits to bytes; a malformed escape yields bytes that decode to U+FFFD
/// (0xFF is invalid UTF-8), never a panic.
fn hex_bytes(hex: &str) -> Vec<u8> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return vec![0xFF];
    }
    digits
        .chunks_exact(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect()
}

fn nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Formatted-text commands (`.sp`, `.in`...) rendered as plain text: line
/// breaks stay line breaks, indentation and fill modes are dropped.
fn formatting(cmd: &str) -> Decoded {
    // Command names are two ASCII letters; anything else is unknown. Splitting
    // only at a char boundary keeps odd input like `\.aé\` from panicking.
    let (name, arg) = if cmd.is_char_boundary(2) {
        cmd.split_at(2)
    } else {
        (cmd, "")
    };
    let count = || {
        let arg = arg.trim().trim_start_matches('+');
        if arg.is_empty() {
            Some(1)
        } else {
            arg.parse::<usize>().ok().map(|n| n.min(MAX_REPEAT))
        }
    };
    let repeat = |s: &'static str| match count() {
        Some(n) => Decoded::Text(Cow::Owned(s.repeat(n))),
        None => Decoded::Unknown,
    };
    match name {
        "br" if arg.is_empty() => Decoded::Text(Cow::Borrowed("\n")),
        "sp" => repeat("\n"),
        "sk" => repeat(" "),
        "ce" if arg.is_empty() => Decoded::Text(Cow::Borrowed("\n")),
        "fi" | "nf" if arg.is_empty() => Decoded::Text(Cow::Borrowed("")),
        "in" | "ti" if is_signed_number(arg.trim()) => Decoded::Text(Cow::Borrowed("")),
        _ => Decoded::Unknown,
    }
}

fn is_signed_number(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Encodes text for use as a value: delimiters become `\F\ \S\ \R\ \T\ \E\`
/// (and `\P\` when the message has a truncation character), CR and LF become
/// `\X0D\` and `\X0A\` so that the value cannot end a segment. Borrowed when
/// nothing needs escaping.
pub fn escape<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let special = |b: u8| {
        d.is_separator(b) || b == d.escape || Some(b) == d.truncation || b == b'\r' || b == b'\n'
    };
    if !text.bytes().any(special) {
        return Cow::Borrowed(text);
    }
    let esc = char::from(d.escape);
    let mut out = String::with_capacity(text.len() + 16);
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if !special(b) {
            continue;
        }
        out.push_str(&text[start..i]);
        start = i + 1;
        let code = if b == d.field {
            "F"
        } else if b == d.component {
            "S"
        } else if b == d.repetition {
            "R"
        } else if b == d.subcomponent {
            "T"
        } else if b == d.escape {
            "E"
        } else if b == b'\r' {
            "X0D"
        } else if b == b'\n' {
            "X0A"
        } else {
            "P"
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    out.push_str(&text[start..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        unescape(s, &Delimiters::default(), Charset::Utf8).into_owned()
    }

    #[test]
    fn no_escape_is_borrowed() {
        assert!(matches!(
            unescape("plain text", &Delimiters::default(), Charset::Utf8),
            Cow::Borrowed("plain text")
        ));
        assert!(matches!(
            escape("plain text", &Delimiters::default()),
            Cow::Borrowed("plain text")
        ));
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(un(r"a\F\b"), "a|b");
        assert_eq!(un(r"a\S\b"), "a^b");
        assert_eq!(un(r"a\T\b"), "a&b");
        assert_eq!(un(r"a\R\b"), "a~b");
        assert_eq!(un(r"a\E\b"), r"a\b");
        assert_eq!(un(r"\F\\S\\T\\R\\E\"), r"|^&~\");
    }

    #[test]
    fn truncation_escape() {
        assert_eq!(un(r"a\P\b"), "a#b");
        let d = Delimiters {
            truncation: Some(b'!'),
            ..Delimiters::default()
        };
        assert_eq!(unescape(r"a\P\b", &d, Charset::Utf8), "a!b");
    }

    #[test]
    fn hex_escapes() {
        assert_eq!(un(r"\X41\"), "A");
        assert_eq!(un(r"x\X414243\y"), "xABCy");
        assert_eq!(un(r"\XC3A9\"), "é");
        assert_eq!(un(r"\Xc3a9\"), "é");
        // One UTF-8 character split over two escapes.
        assert_eq!(un(r"\XC3\\XA9\"), "é");
        assert_eq!(un(r"\X0D0A\"), "\r\n");
        assert_eq!(un(r"\X\"), "");
        // Malformed or invalid: replacement character, no panic.
        assert_eq!(un(r"\X4\"), "\u{FFFD}");
        assert_eq!(un(r"\XZZ\"), "\u{FFFD}");
        assert_eq!(un(r"\XE9\"), "\u{FFFD}");
        assert_eq!(un(r"\XC3\x"), "\u{FFFD}x");
    }

    #[test]
    fn hex_escapes_follow_the_charset() {
        let d = Delimiters::default();
        assert_eq!(unescape(r"caf\XE9\", &d, Charset::Latin1), "café");
        assert_eq!(unescape(r"\XA4\", &d, Charset::Latin9), "€");
        assert_eq!(unescape(r"\XA4\", &d, Charset::Latin1), "¤");
        assert_eq!(unescape(r"\XE9\", &d, Charset::Ascii), "\u{FFFD}");
    }

    #[test]
    fn non_ascii_before_escape() {
        assert_eq!(un(r"Ééé\T\x"), "Ééé&x");
        assert_eq!(un(r"日本\F\語\X41\é"), "日本|語Aé");
    }

    #[test]
    fn highlighting_and_formatting() {
        assert_eq!(un(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(un(r"a\H\bold\N\b"), "aboldb");
        assert_eq!(un(r"a\.sp\b"), "a\nb");
        assert_eq!(un(r"a\.sp 2\b"), "a\n\nb");
        assert_eq!(
            un(r"a\.sp 99999999999999999999\b"),
            r"a\.sp 99999999999999999999\b"
        );
        assert_eq!(un(r"a\.sk 3\b"), "a   b");
        assert_eq!(un(r"a\.sp 1000\b").len(), 2 + MAX_REPEAT);
        assert_eq!(un(r"a\.in +4\b"), "ab");
        assert_eq!(un(r"a\.ti -2\b"), "ab");
        assert_eq!(un(r"\.ce\Title"), "\nTitle");
        assert_eq!(un(r"\.fi\a\.nf\b"), "ab");
    }

    #[test]
    fn unknown_and_unterminated_kept() {
        assert_eq!(un(r"a\Zcustom\b"), r"a\Zcustom\b");
        assert_eq!(un(r"a\.xx\b"), r"a\.xx\b");
        assert_eq!(un(r"a\.aé\b"), r"a\.aé\b");
        assert_eq!(un(r"a\.é\b"), r"a\.é\b");
        assert_eq!(un(r"a\C2842\b"), r"a\C2842\b");
        assert_eq!(un(r"C:\temp"), r"C:\temp");
        assert_eq!(un(r"a\F"), r"a\F");
        assert_eq!(un(r"\"), r"\");
        assert_eq!(un(r"\\"), r"\\");
        assert_eq!(un(r"é\"), r"é\");
        assert_eq!(un(r"\F\\"), r"|\");
    }

    #[test]
    fn custom_escape_character() {
        let d = Delimiters {
            field: b'!',
            component: b'@',
            repetition: b'$',
            escape: b'/',
            subcomponent: b'%',
            truncation: None,
        };
        assert_eq!(unescape("a/F/b/S/c", &d, Charset::Utf8), "a!b@c");
        assert_eq!(escape("a!b@c/d", &d), "a/F/b/S/c/E/d");
    }

    #[test]
    fn escape_encoder() {
        let d = Delimiters::default();
        assert_eq!(escape("a|b^c~d&e\\f", &d), r"a\F\b\S\c\R\d\T\e\E\f");
        assert_eq!(escape("l1\r\nl2", &d), r"l1\X0D\\X0A\l2");
        assert_eq!(escape("a#b", &d), "a#b");
        let d7 = Delimiters {
            truncation: Some(b'#'),
            ..d
        };
        assert_eq!(escape("a#b", &d7), r"a\P\b");
        assert_eq!(escape("é|è", &d), r"é\F\è");
    }

    #[test]
    fn escape_then_unescape_is_identity() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        };
        for s in ["", "x", "|^~\\&#", "a\r\nb", "Ééé&x", "\\X41\\", "\\.br\\"] {
            assert_eq!(unescape(&escape(s, &d), &d, Charset::Utf8), s);
        }
    }
}
