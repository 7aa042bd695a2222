//! The message's own delimiters, read from MSH-1 and MSH-2.

use std::fmt;

/// Delimiters declared by a message (MSH-1 and MSH-2).
///
/// All of them are single ASCII punctuation bytes, which is what lets the
/// parser slice the decoded text at delimiter positions without ever landing
/// inside a multi-byte character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: u8,
    pub subcomponent: u8,
    /// v2.7 truncation character (5th encoding character), usually `#`.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// `|^~\&`, the delimiters nearly every sender uses.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// The encoding characters as written in MSH-2 (`^~\&` or `^~\&#`).
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        for b in [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ] {
            s.push(char::from(b));
        }
        if let Some(t) = self.truncation {
            s.push(char::from(t));
        }
        s
    }

    /// Reads MSH-2 given the field separator. `Err` says what is wrong, for a
    /// DataTypeError on MSH-2.
    pub(crate) fn from_encoding_characters(field: u8, enc: &[u8]) -> Result<Delimiters, String> {
        let shown = String::from_utf8_lossy(enc);
        let (component, repetition, escape, subcomponent, truncation) = match *enc {
            [c, r, e, s] => (c, r, e, s, None),
            [c, r, e, s, t] => (c, r, e, s, Some(t)),
            _ => {
                return Err(format!(
                    "encoding characters (MSH-2) must be 4 characters (^~\\&) or 5 in v2.7 (^~\\&#), found {:?}",
                    shown
                ));
            }
        };
        let d = Delimiters {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        };
        let all = d.all();
        for (i, &b) in all.iter().enumerate().skip(1) {
            if !is_valid_delimiter(b) {
                return Err(format!(
                    "encoding characters (MSH-2) {:?} contain an invalid delimiter {}: delimiters must be ASCII punctuation, not letters, digits, spaces or control characters",
                    shown,
                    DisplayByte(b)
                ));
            }
            if b == field {
                return Err(format!(
                    "encoding characters (MSH-2) {:?} repeat the field separator {}",
                    shown,
                    DisplayByte(b)
                ));
            }
            if all[1..i].contains(&b) {
                return Err(format!(
                    "encoding characters (MSH-2) {:?} use {} twice",
                    shown,
                    DisplayByte(b)
                ));
            }
        }
        Ok(d)
    }

    /// Field separator first, then MSH-2 in order.
    fn all(&self) -> Vec<u8> {
        let mut v = vec![
            self.field,
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ];
        v.extend(self.truncation);
        v
    }

    /// Whether `b` is one of the structural separators (not escape/truncation).
    #[inline]
    pub(crate) fn is_separator(&self, b: u8) -> bool {
        b == self.field || b == self.component || b == self.repetition || b == self.subcomponent
    }
}

/// Delimiters must be visible ASCII punctuation: anything else is either data
/// (letters, digits) or would be confused with segment terminators.
pub(crate) fn is_valid_delimiter(b: u8) -> bool {
    b.is_ascii_punctuation()
}

/// Shows a byte in an error message without emitting control characters.
pub(crate) struct DisplayByte(pub u8);

impl fmt::Display for DisplayByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "byte 0x{:02X}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_v27() {
        let d = Delimiters::from_encoding_characters(b'|', b"^~\\&").unwrap();
        assert_eq!(d, Delimiters::default());
        assert_eq!(d.encoding_characters(), "^~\\&");
        let d = Delimiters::from_encoding_characters(b'|', b"^~\\&#").unwrap();
        assert_eq!(d.truncation, Some(b'#'));
        assert_eq!(d.encoding_characters(), "^~\\&#");
    }

    #[test]
    fn custom_delimiters() {
        let d = Delimiters::from_encoding_characters(b'!', b"@$/%").unwrap();
        assert_eq!(
            (d.field, d.component, d.repetition, d.escape, d.subcomponent),
            (b'!', b'@', b'$', b'/', b'%')
        );
    }

    #[test]
    fn rejects_bad_encoding_characters() {
        let cases: [&[u8]; 9] = [
            b"",
            b"^~\\",
            b"^~\\&#$",
            b"^~\\a",
            b"^~\\1",
            b"^~\\|",
            b"^^\\&",
            b"^~ &",
            b"^~\\\xc3",
        ];
        for enc in cases {
            assert!(
                Delimiters::from_encoding_characters(b'|', enc).is_err(),
                "{enc:?} should be rejected"
            );
        }
        let err = Delimiters::from_encoding_characters(b'|', b"^~\\|").unwrap_err();
        assert!(err.contains("field separator"), "{err}");
        let err = Delimiters::from_encoding_characters(b'|', b"^^\\&").unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
