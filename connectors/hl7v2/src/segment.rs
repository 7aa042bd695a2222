//! Borrowed views on one segment and on the parts of its fields.
//!
//! Field boundaries come from the message index; repetitions, components and
//! subcomponents are split lazily on access, which is cheap because values
//! are short and most of them are never looked at.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::escape::unescape;

/// What decoding a value needs to know about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ctx {
    pub delimiters: Delimiters,
    pub charset: Charset,
}

/// Position of one segment in the decoded text, and of its field separators
/// in the message's flat separator list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegEntry {
    pub start: u32,
    pub end: u32,
    pub seps_start: u32,
    pub seps_len: u32,
}

/// One segment of a parsed message.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m> {
    text: &'m str,
    entry: SegEntry,
    /// Absolute offsets of this segment's field separators.
    seps: &'m [u32],
    ctx: Ctx,
    position: usize,
}

impl<'m> Segment<'m> {
    pub(crate) fn new(
        text: &'m str,
        entry: SegEntry,
        all_seps: &'m [u32],
        ctx: Ctx,
        position: usize,
    ) -> Segment<'m> {
        let from = entry.seps_start as usize;
        let to = from.saturating_add(entry.seps_len as usize);
        Segment {
            text,
            entry,
            seps: all_seps.get(from..to).unwrap_or_default(),
            ctx,
            position,
        }
    }

    pub(crate) fn ctx(&self) -> Ctx {
        self.ctx
    }

    /// The segment id, e.g. `"PID"`.
    pub fn id(&self) -> &'m str {
        let start = self.entry.start as usize;
        self.text.get(start..start + 3).unwrap_or("")
    }

    /// The whole segment as received (escaped), without its terminator.
    pub fn raw(&self) -> &'m str {
        self.text
            .get(self.entry.start as usize..self.entry.end as usize)
            .unwrap_or("")
    }

    /// 1-based position of the segment in the message (MSH is 1).
    pub fn position(&self) -> usize {
        self.position + 1
    }

    /// Whether this is the MSH segment, whose field numbering is shifted by one
    /// (MSH-1 is the field separator itself).
    pub fn is_header(&self) -> bool {
        self.id() == "MSH"
    }

    /// The highest field number present (trailing empty fields included).
    pub fn field_count(&self) -> usize {
        if self.is_header() {
            self.seps.len() + 1
        } else {
            self.seps.len()
        }
    }

    /// The field with HL7 number `n` (1-based), or `None` past the last field.
    ///
    /// For MSH, field 1 is the field separator and field 2 the encoding
    /// characters; both are returned whole, never split or unescaped.
    pub fn field(&self, n: usize) -> Option<Field<'m>> {
        if n == 0 {
            return None;
        }
        if self.is_header() {
            match n {
                1 => {
                    let at = *self.seps.first()? as usize;
                    let raw = self.text.get(at..at + 1)?;
                    Some(Field::new(raw, self.ctx, true))
                }
                2 => Some(Field::new(self.element(1)?, self.ctx, true)),
                _ => Some(Field::new(self.element(n - 1)?, self.ctx, false)),
            }
        } else {
            Some(Field::new(self.element(n)?, self.ctx, false))
        }
    }

    /// All fields in order, numbered from 1.
    pub fn fields(&self) -> impl Iterator<Item = Field<'m>> + use<'m> {
        let seg = *self;
        // MSH-1 and MSH-2 are special; every other field is the text after a
        // separator, which is walked directly rather than through `field(n)`.
        let (head, first_element) = if self.is_header() {
            ([seg.field(1), seg.field(2)], 2)
        } else {
            ([None, None], 1)
        };
        head.into_iter().flatten().chain(
            (first_element..=self.seps.len())
                .filter_map(move |k| seg.element(k))
                .map(move |raw| Field::new(raw, seg.ctx, false)),
        )
    }

    /// The text after the k-th field separator (k >= 1).
    fn element(&self, k: usize) -> Option<&'m str> {
        let start = *self.seps.get(k - 1)? as usize + 1;
        let end = match self.seps.get(k) {
            Some(&next) => next as usize,
            None => self.entry.end as usize,
        };
        self.text.get(start..end)
    }
}

/// Splits `raw` at `sep` and returns the 1-based n-th part.
fn nth_part(raw: &str, sep: u8, n: usize) -> Option<&str> {
    if n == 0 {
        return None;
    }
    Parts::new(raw, Some(sep)).nth(n - 1)
}

/// Position of `b` in `hay`. Most values are a few bytes long, where a plain
/// loop beats memchr's call and dispatch overhead; long ones (text reports,
/// base64 documents) go to memchr.
#[inline]
fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < 32 {
        hay.iter().position(|&x| x == b)
    } else {
        memchr::memchr(b, hay)
    }
}

/// Splits a value at a one-byte ASCII delimiter (`None`: do not split).
///
/// Hand-written rather than `str::split` because values are short and many:
/// this keeps the per-part cost to one memchr call and two slice operations.
#[derive(Debug, Clone)]
struct Parts<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

impl<'a> Parts<'a> {
    fn new(raw: &'a str, sep: Option<u8>) -> Parts<'a> {
        Parts {
            rest: Some(raw),
            sep,
        }
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let found = self.sep.and_then(|sep| find_byte(sep, rest.as_bytes()));
        match found {
            // The delimiter is ASCII, so both slices are on char boundaries.
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

macro_rules! value_methods {
    () => {
        /// The value as received, with escape sequences.
        pub fn raw(&self) -> &'m str {
            self.raw
        }

        /// The value with escape sequences decoded. Borrowed unless the value
        /// holds an escape sequence. On a composite value the component
        /// separators stay in the text: use the component accessors to split.
        pub fn value(&self) -> Cow<'m, str> {
            if self.atomic {
                Cow::Borrowed(self.raw)
            } else {
                unescape(self.raw, &self.ctx.delimiters, self.ctx.charset)
            }
        }

        /// Whether the value is empty (`""`). HL7's explicit null `""` (two
        /// double quotes) is not empty: it means "delete this value".
        pub fn is_empty(&self) -> bool {
            self.raw.is_empty()
        }
    };
}

/// One field (all its repetitions).
#[derive(Debug, Clone, Copy)]
pub struct Field<'m> {
    raw: &'m str,
    ctx: Ctx,
    /// MSH-1 and MSH-2 hold delimiters: they are never split or unescaped.
    atomic: bool,
}

impl<'m> Field<'m> {
    fn new(raw: &'m str, ctx: Ctx, atomic: bool) -> Field<'m> {
        Field { raw, ctx, atomic }
    }

    value_methods!();

    /// The repetitions; an empty field has one empty repetition.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'m>> + use<'m> {
        let (ctx, atomic) = (self.ctx, self.atomic);
        let sep = (!atomic).then_some(ctx.delimiters.repetition);
        Parts::new(self.raw, sep).map(move |raw| Repetition { raw, ctx, atomic })
    }

    /// The 1-based n-th repetition.
    pub fn repetition(&self, n: usize) -> Option<Repetition<'m>> {
        if self.atomic {
            return (n == 1).then_some(Repetition {
                raw: self.raw,
                ctx: self.ctx,
                atomic: true,
            });
        }
        nth_part(self.raw, self.ctx.delimiters.repetition, n).map(|raw| Repetition {
            raw,
            ctx: self.ctx,
            atomic: false,
        })
    }

    /// Number of repetitions (at least 1).
    pub fn repetition_count(&self) -> usize {
        if self.atomic {
            1
        } else {
            memchr::memchr_iter(self.ctx.delimiters.repetition, self.raw.as_bytes()).count() + 1
        }
    }

    /// The 1-based n-th component of the first repetition.
    pub fn component(&self, n: usize) -> Option<Component<'m>> {
        self.repetition(1)?.component(n)
    }

    /// The components of the first repetition.
    pub fn components(&self) -> impl Iterator<Item = Component<'m>> + use<'m> {
        self.repetition(1)
            .into_iter()
            .flat_map(|rep| rep.components())
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'m> {
    raw: &'m str,
    ctx: Ctx,
    atomic: bool,
}

impl<'m> Repetition<'m> {
    value_methods!();

    /// The components; an empty repetition has one empty component.
    pub fn components(&self) -> impl Iterator<Item = Component<'m>> + use<'m> {
        let (ctx, atomic) = (self.ctx, self.atomic);
        let sep = (!atomic).then_some(ctx.delimiters.component);
        Parts::new(self.raw, sep).map(move |raw| Component { raw, ctx, atomic })
    }

    /// The 1-based n-th component.
    pub fn component(&self, n: usize) -> Option<Component<'m>> {
        if self.atomic {
            return (n == 1).then_some(Component {
                raw: self.raw,
                ctx: self.ctx,
                atomic: true,
            });
        }
        nth_part(self.raw, self.ctx.delimiters.component, n).map(|raw| Component {
            raw,
            ctx: self.ctx,
            atomic: false,
        })
    }
}

/// One component of a repetition.
#[derive(Debug, Clone, Copy)]
pub struct Component<'m> {
    raw: &'m str,
    ctx: Ctx,
    atomic: bool,
}

impl<'m> Component<'m> {
    value_methods!();

    /// The subcomponents; an empty component has one empty subcomponent.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'m>> + use<'m> {
        let (ctx, atomic) = (self.ctx, self.atomic);
        let sep = (!atomic).then_some(ctx.delimiters.subcomponent);
        Parts::new(self.raw, sep).map(move |raw| Subcomponent { raw, ctx, atomic })
    }

    /// The 1-based n-th subcomponent.
    pub fn subcomponent(&self, n: usize) -> Option<Subcomponent<'m>> {
        if self.atomic {
            return (n == 1).then_some(Subcomponent {
                raw: self.raw,
                ctx: self.ctx,
                atomic: true,
            });
        }
        nth_part(self.raw, self.ctx.delimiters.subcomponent, n).map(|raw| Subcomponent {
            raw,
            ctx: self.ctx,
            atomic: false,
        })
    }
}

/// One subcomponent: the leaf level.
#[derive(Debug, Clone, Copy)]
pub struct Subcomponent<'m> {
    raw: &'m str,
    ctx: Ctx,
    atomic: bool,
}

impl<'m> Subcomponent<'m> {
    value_methods!();
}
