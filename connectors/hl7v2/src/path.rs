//! Compiled paths such as `PID-5.1`, `OBX[2]-5`, `PID-3[*].4.1`.
//!
//! Grammar: `SEG[occurrence]-FIELD[repetition].COMPONENT.SUBCOMPONENT`, where
//! the bracketed parts are optional and hold a 1-based number or `*`, and the
//! component and subcomponent are optional 1-based numbers. Paths are parsed
//! once and reused, so evaluating one never re-reads the path text.

use std::fmt;
use std::str::FromStr;

/// Which occurrences of a segment, or repetitions of a field, a path selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selector {
    /// The n-th one, 1-based.
    Nth(usize),
    /// All of them (`[*]`).
    All,
}

impl Selector {
    pub(crate) fn matches(self, n: usize) -> bool {
        match self {
            Selector::Nth(k) => k == n,
            Selector::All => true,
        }
    }
}

/// A parsed path. Equality is structural: `OBX-5` equals `OBX[1]-5[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    occurrence: Selector,
    field: usize,
    repetition: Selector,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

/// A path that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid path {:?}: {}", self.input, self.message)
    }
}

impl std::error::Error for PathError {}

impl Path {
    /// Parses a path. Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Path, PathError> {
        let fail = |message: String| PathError {
            input: input.to_string(),
            message,
        };
        let mut cur = Cursor {
            s: input.trim().as_bytes(),
            pos: 0,
        };
        if cur.s.is_empty() {
            return Err(fail("empty path; expected e.g. PID-5.1".into()));
        }

        let id_len = cur
            .s
            .iter()
            .take_while(|b| !matches!(b, b'-' | b'[' | b'.'))
            .count();
        let id = &cur.s[..id_len];
        let segment: [u8; 3] = match <[u8; 3]>::try_from(id) {
            Ok(seg)
                if seg
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
            {
                seg
            }
            _ => {
                return Err(fail(format!(
                    "segment id {:?} must be 3 upper-case letters or digits (e.g. PID, OBX, ZBE)",
                    String::from_utf8_lossy(id)
                )));
            }
        };
        cur.pos = 3;

        let occurrence = cur
            .selector("segment occurrence")
            .map_err(&fail)?
            .unwrap_or(Selector::Nth(1));

        match cur.peek() {
            Some(b'-') => cur.pos += 1,
            Some(b'.') => {
                return Err(fail(
                    "use '-' between the segment and the field (PID-5, not PID.5)".into(),
                ));
            }
            None => {
                return Err(fail(
                    "a field number is required after the segment (e.g. PID-3)".into(),
                ));
            }
            Some(_) => return Err(fail(cur.unexpected("'-' or '['"))),
        }

        let field = cur.number("field").map_err(&fail)?;
        let repetition = cur
            .selector("field repetition")
            .map_err(&fail)?
            .unwrap_or(Selector::Nth(1));

        let mut component = None;
        let mut subcomponent = None;
        if cur.eat(b'.') {
            component = Some(cur.number("component").map_err(&fail)?);
            if cur.eat(b'.') {
                subcomponent = Some(cur.number("subcomponent").map_err(&fail)?);
            }
        }
        if cur.peek().is_some() {
            let expected = if subcomponent.is_some() {
                "the end of the path (subcomponents are the deepest level)"
            } else {
                "'.' or the end of the path"
            };
            return Err(fail(cur.unexpected(expected)));
        }

        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }

    /// The segment id, e.g. `"PID"`.
    pub fn segment_id(&self) -> &str {
        // Built from ASCII alphanumerics in `parse`, so this never fails.
        std::str::from_utf8(&self.segment).unwrap_or("")
    }

    pub fn occurrence(&self) -> Selector {
        self.occurrence
    }

    /// HL7 field number (MSH-1 is the field separator).
    pub fn field(&self) -> usize {
        self.field
    }

    pub fn repetition(&self) -> Selector {
        self.repetition
    }

    pub fn component(&self) -> Option<usize> {
        self.component
    }

    pub fn subcomponent(&self) -> Option<usize> {
        self.subcomponent
    }

    /// Whether the path can select more than one value.
    pub fn is_multi(&self) -> bool {
        self.occurrence == Selector::All || self.repetition == Selector::All
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        Path::parse(s)
    }
}

impl fmt::Display for Path {
    /// Canonical form: default `[1]` selectors are omitted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sel = |f: &mut fmt::Formatter<'_>, s: Selector| match s {
            Selector::Nth(1) => Ok(()),
            Selector::Nth(n) => write!(f, "[{n}]"),
            Selector::All => f.write_str("[*]"),
        };
        f.write_str(self.segment_id())?;
        sel(f, self.occurrence)?;
        write!(f, "-{}", self.field)?;
        sel(f, self.repetition)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
            if let Some(s) = self.subcomponent {
                write!(f, ".{s}")?;
            }
        }
        Ok(())
    }
}

struct Cursor<'s> {
    s: &'s [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self, expected: &str) -> String {
        let rest = String::from_utf8_lossy(self.s.get(self.pos..).unwrap_or_default());
        format!(
            "expected {expected} at position {}, found {:?}",
            self.pos + 1,
            rest
        )
    }

    /// A 1-based number.
    fn number(&mut self, what: &str) -> Result<usize, String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.s.get(start..self.pos).unwrap_or_default();
        if digits.is_empty() {
            return Err(self.unexpected(&format!("a {what} number")));
        }
        let n: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .filter(|&n| n <= 100_000)
            .ok_or_else(|| format!("{what} number is too large"))?;
        if n == 0 {
            return Err(format!("{what} numbers start at 1, not 0"));
        }
        Ok(n)
    }

    /// An optional `[n]` or `[*]`.
    fn selector(&mut self, what: &str) -> Result<Option<Selector>, String> {
        if !self.eat(b'[') {
            return Ok(None);
        }
        let sel = if self.eat(b'*') {
            Selector::All
        } else {
            Selector::Nth(self.number(what)?)
        };
        if !self.eat(b']') {
            return Err(self.unexpected("']'"));
        }
        Ok(Some(sel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_the_documented_forms() {
        let path = p("PID-5.1");
        assert_eq!(path.segment_id(), "PID");
        assert_eq!(path.occurrence(), Selector::Nth(1));
        assert_eq!(path.field(), 5);
        assert_eq!(path.repetition(), Selector::Nth(1));
        assert_eq!(path.component(), Some(1));
        assert_eq!(path.subcomponent(), None);

        let path = p("OBX[2]-5");
        assert_eq!(path.occurrence(), Selector::Nth(2));
        assert_eq!(path.component(), None);

        let path = p("PID-3[*]");
        assert_eq!(path.repetition(), Selector::All);
        assert!(path.is_multi());

        let path = p("PID-3[2].1");
        assert_eq!(path.repetition(), Selector::Nth(2));
        assert_eq!(path.component(), Some(1));

        let path = p("PID-3[*].4.1");
        assert_eq!(path.component(), Some(4));
        assert_eq!(path.subcomponent(), Some(1));

        let path = p("MSH-9.2");
        assert_eq!((path.segment_id(), path.field()), ("MSH", 9));
        assert!(!path.is_multi());

        let path = p("OBX[*]-5");
        assert_eq!(path.occurrence(), Selector::All);

        let path = p("ZBE-1");
        assert_eq!(path.segment_id(), "ZBE");
        assert_eq!(p(" PV1-19 ").segment_id(), "PV1");
    }

    #[test]
    fn display_is_canonical_and_roundtrips() {
        for s in [
            "PID-5.1",
            "OBX[2]-5",
            "PID-3[*]",
            "PID-3[2].1",
            "PID-3[*].4.1",
            "MSH-9.2",
            "OBX[*]-5",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
        assert_eq!(p("OBX[1]-5[1]").to_string(), "OBX-5");
        assert_eq!(p("OBX[1]-5[1]"), p("OBX-5"));
        assert_eq!("PID-5".parse::<Path>().unwrap(), p("PID-5"));
    }

    #[test]
    fn errors_are_explained() {
        let err = |s: &str| Path::parse(s).unwrap_err().to_string();
        assert!(err("").contains("empty path"));
        assert!(err("PID-0").contains("start at 1"), "{}", err("PID-0"));
        assert!(err("PID-3.0").contains("start at 1"));
        assert!(err("OBX[0]-5").contains("start at 1"));
        assert!(err("PI-5").contains("3 upper-case"));
        assert!(err("PIDX-5").contains("3 upper-case"));
        assert!(err("pid-5").contains("3 upper-case"));
        assert!(err("P!D-5").contains("3 upper-case"));
        assert!(err("PID").contains("field number is required"));
        assert!(err("PID.5").contains("use '-'"));
        assert!(err("PID-").contains("field number"));
        assert!(err("PID-x").contains("field number"));
        assert!(err("PID-5.").contains("component number"));
        assert!(err("PID-5..1").contains("component number"));
        assert!(err("PID-5.1.2.3").contains("deepest"));
        assert!(err("PID-5[").contains("field repetition number"));
        assert!(err("PID-5[2").contains("']'"));
        assert!(err("PID-5[a]").contains("repetition"));
        assert!(err("PID-5 x").contains("end of the path"));
        assert!(err("PID-99999999999999999999999").contains("too large"));
        assert!(err("PIDé-5").contains("3 upper-case"));
        assert!(err("PID-5é").contains("end of the path"));
        let e = Path::parse("PID-0").unwrap_err();
        assert_eq!(e.input, "PID-0");
    }
}
