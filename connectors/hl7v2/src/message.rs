//! Parsing a message into its decoded text plus a flat index of segment and
//! field boundaries, and looking values up by path.

use std::borrow::Cow;

use memchr::{memchr2_iter, memchr3, memchr3_iter};

use crate::charset::{self, Charset};
use crate::delimiters::{Delimiters, DisplayByte, is_valid_delimiter};
use crate::error::{ErrorCode, Location, ParseError};
use crate::header::Header;
use crate::path::{Path, Selector};
use crate::segment::{Ctx, Field, SegEntry, Segment};

/// Parsing options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// Charset assumed when MSH-18 is empty (default UTF-8).
    pub default_charset: Charset,
}

/// A parsed message: the decoded text (borrowed from the input when it was
/// already UTF-8) and the positions of every segment and field separator,
/// found in one pass. Values are sliced out of the text on access.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    text: Cow<'a, str>,
    ctx: Ctx,
    segments: Vec<SegEntry>,
    seps: Vec<u32>,
}

/// U+02DC SMALL TILDE in UTF-8. Some senders (text copied through a word
/// processor) declare it as the repetition separator in MSH-2.
const SMALL_TILDE: &[u8] = "\u{2DC}".as_bytes();

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What can be read from the raw bytes of MSH before decoding.
struct RawHeader<'b> {
    delimiters: Delimiters,
    /// MSH-2 length in bytes as received.
    encoding_len: usize,
    /// MSH-18, first repetition, trimmed.
    charset_label: &'b [u8],
    /// Segments end at CR only (LF is data), as the standard says. Chosen when
    /// MSH ends with a bare CR; otherwise CR, LF and CRLF all end segments.
    cr_only: bool,
    small_tilde: bool,
}

impl<'a> Message<'a> {
    /// Parses with default options (UTF-8 when MSH-18 is empty).
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Message::parse_with(bytes, &ParseOptions::default())
    }

    /// Parses a message. `bytes` is one message without MLLP framing; a UTF-8
    /// byte order mark before `MSH` is tolerated.
    pub fn parse_with(bytes: &'a [u8], opts: &ParseOptions) -> Result<Message<'a>, ParseError> {
        Message::parse_impl(bytes, opts, false)
    }

    /// Reads the MSH segment alone, as leniently as possible, to acknowledge a
    /// message that [`Message::parse_with`] refused: the answer should still
    /// echo its control id and swap its sender and receiver.
    ///
    /// Only the first line is read and the required MSH fields are not
    /// checked. Text that is not valid in its charset, or a charset that is not
    /// supported, is read as ISO 8859-1, which maps every byte to one
    /// character: an ACK built on this header ([`Header::charset`] is then
    /// 8859/1) gives the sender's bytes back unchanged. Fails only when the
    /// delimiters cannot be read.
    pub fn parse_header_lenient(
        bytes: &'a [u8],
        opts: &ParseOptions,
    ) -> Result<Message<'a>, ParseError> {
        let first_line = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
        Message::parse_impl(&bytes[..first_line], opts, true)
    }

    fn parse_impl(
        bytes: &'a [u8],
        opts: &ParseOptions,
        lenient: bool,
    ) -> Result<Message<'a>, ParseError> {
        let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
        if u32::try_from(bytes.len()).is_err() {
            return Err(ParseError::new(
                ErrorCode::ApplicationInternalError,
                None,
                format!(
                    "message of {} bytes is larger than the 4 GiB supported",
                    bytes.len()
                ),
            ));
        }
        let head = read_raw_header(bytes)?;
        let mut charset = if head.charset_label.is_empty() {
            opts.default_charset
        } else {
            let label = String::from_utf8_lossy(head.charset_label);
            match Charset::from_label(&label) {
                Some(charset) => charset,
                None if lenient => Charset::Latin1,
                None => {
                    return Err(ParseError::msh(
                        ErrorCode::DataTypeError,
                        18,
                        format!(
                            "unsupported character set {label:?} in MSH-18: supported are ASCII, 8859/1, 8859/15 and UNICODE UTF-8"
                        ),
                    ));
                }
            }
        };
        let mut text = match charset::decode(bytes, charset) {
            Ok(text) => text,
            Err(_) if lenient => {
                charset = Charset::Latin1;
                let mut latin1 = String::with_capacity(bytes.len() + bytes.len() / 8);
                charset::decode_lossy(bytes, charset, &mut latin1);
                Cow::Owned(latin1)
            }
            Err(e) => {
                return Err(ParseError::new(
                    ErrorCode::DataTypeError,
                    None,
                    format!(
                        "invalid {charset} text: byte 0x{:02X} at offset {} is not valid UTF-8; if the sender uses ISO 8859-1, it should say so in MSH-18 (8859/1)",
                        bytes.get(e.offset).copied().unwrap_or(0),
                        e.offset
                    ),
                ));
            }
        };
        if head.small_tilde {
            if !matches!(charset, Charset::Utf8 | Charset::Ascii) {
                return Err(ParseError::msh(
                    ErrorCode::DataTypeError,
                    2,
                    format!("encoding characters (MSH-2) are not ASCII in a {charset} message"),
                ));
            }
            text = normalize_small_tilde(text)?;
        }
        let ctx = Ctx {
            delimiters: head.delimiters,
            charset,
        };
        let (segments, seps) = build_index(&text, &head)?;
        let message = Message {
            text,
            ctx,
            segments,
            seps,
        };
        if !lenient {
            message.check_header()?;
        }
        Ok(message)
    }

    /// The delimiters declared in MSH-1 and MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.ctx.delimiters
    }

    /// The charset the message was decoded from.
    pub fn charset(&self) -> Charset {
        self.ctx.charset
    }

    /// The whole decoded message, segments separated as received.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A copy that does not borrow the input bytes.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            text: Cow::Owned(self.text.into_owned()),
            ctx: self.ctx,
            segments: self.segments,
            seps: self.seps,
        }
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// All segments in order, MSH first.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.segments
            .iter()
            .enumerate()
            .map(|(i, &entry)| Segment::new(&self.text, entry, &self.seps, self.ctx, i))
    }

    /// The segments with a given id, in order.
    pub fn segments_named<'s>(&'s self, id: &'s str) -> impl Iterator<Item = Segment<'s>> + 's {
        self.segments().filter(move |s| s.id() == id)
    }

    /// The `occurrence`-th (1-based) segment with this id.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<Segment<'_>> {
        let skip = occurrence.checked_sub(1)?;
        self.segments().filter(|s| s.id() == id).nth(skip)
    }

    /// The MSH segment.
    pub fn msh(&self) -> Segment<'_> {
        let entry = self.segments.first().copied().unwrap_or(SegEntry {
            start: 0,
            end: 0,
            seps_start: 0,
            seps_len: 0,
        });
        Segment::new(&self.text, entry, &self.seps, self.ctx, 0)
    }

    /// Typed view on MSH.
    pub fn header(&self) -> Header<'_> {
        Header::new(self.msh())
    }

    /// The first value the path selects, unescaped; `None` when it is absent
    /// or empty. `[*]` selectors behave as `[1]` here.
    pub fn get(&self, path: &Path) -> Option<Cow<'_, str>> {
        let mut found = None;
        self.visit(path, &mut |leaf| {
            found = Some(leaf);
            false
        });
        found.filter(|v| !v.is_empty())
    }

    /// Every value the path selects, unescaped.
    ///
    /// There is one entry per matching segment and field repetition, empty
    /// where the value is absent, so that lists from parallel paths
    /// (`OBX[*]-3` and `OBX[*]-5`) stay aligned. A field selected with `[*]`
    /// that is empty counts as one empty repetition. Segments that do not
    /// exist produce no entry.
    pub fn get_all(&self, path: &Path) -> Vec<Cow<'_, str>> {
        let mut all = Vec::new();
        self.visit(path, &mut |leaf| {
            all.push(leaf);
            true
        });
        all
    }

    /// Calls `f` with each selected value until it returns false.
    fn visit<'s>(&'s self, path: &Path, f: &mut dyn FnMut(Cow<'s, str>) -> bool) {
        let mut occurrence = 0;
        for seg in self.segments() {
            if seg.id() != path.segment_id() {
                continue;
            }
            occurrence += 1;
            if !path.occurrence().matches(occurrence) {
                continue;
            }
            if !visit_field(seg.field(path.field()), path, f) {
                return;
            }
            if let Selector::Nth(_) = path.occurrence() {
                return;
            }
        }
    }

    /// Checks the MSH fields every message needs.
    fn check_header(&self) -> Result<(), ParseError> {
        let msh = self.msh();
        let required = [
            (9, "message type"),
            (10, "message control id"),
            (11, "processing id"),
            (12, "version id"),
        ];
        for (n, name) in required {
            let Some(field) = msh.field(n) else {
                return Err(ParseError::msh(
                    ErrorCode::RequiredFieldMissing,
                    n,
                    format!(
                        "MSH segment ends after MSH-{}: MSH-{n} ({name}) is required",
                        msh.field_count()
                    ),
                ));
            };
            if field.is_empty() {
                return Err(ParseError::msh(
                    ErrorCode::RequiredFieldMissing,
                    n,
                    format!("required field MSH-{n} ({name}) is empty"),
                ));
            }
        }
        Ok(())
    }
}

/// Emits the value(s) of one field for `visit`; false means stop.
fn visit_field<'s>(
    field: Option<Field<'s>>,
    path: &Path,
    f: &mut dyn FnMut(Cow<'s, str>) -> bool,
) -> bool {
    let leaf = |rep: Option<crate::segment::Repetition<'s>>| -> Cow<'s, str> {
        let Some(rep) = rep else {
            return Cow::Borrowed("");
        };
        match (path.component(), path.subcomponent()) {
            (None, _) => rep.value(),
            (Some(c), None) => rep.component(c).map(|c| c.value()).unwrap_or_default(),
            (Some(c), Some(s)) => rep
                .component(c)
                .and_then(|c| c.subcomponent(s))
                .map(|s| s.value())
                .unwrap_or_default(),
        }
    };
    match (path.repetition(), field) {
        (Selector::Nth(n), field) => f(leaf(field.and_then(|fl| fl.repetition(n)))),
        (Selector::All, None) => f(leaf(None)),
        (Selector::All, Some(field)) => {
            for rep in field.repetitions() {
                if !f(leaf(Some(rep))) {
                    return false;
                }
            }
            true
        }
    }
}

/// Reads delimiters, MSH-18 and the terminator style from the raw bytes: MSH
/// is ASCII in practice, and the charset must be known before decoding.
fn read_raw_header(bytes: &[u8]) -> Result<RawHeader<'_>, ParseError> {
    let first = bytes.get(..3).unwrap_or(bytes);
    if first != b"MSH" {
        if first == b"FHS" || first == b"BHS" {
            // 200 "Unsupported message type" rather than 207 "Application internal error":
            // the input is well-formed HL7, of a kind (a batch envelope) that this parser does
            // not take; nothing failed on the receiver's side.
            return Err(ParseError::new(
                ErrorCode::UnsupportedMessageType,
                Some(Location::new(String::from_utf8_lossy(first), 1)),
                "batches (FHS/BHS) are not supported: send one message at a time, starting with MSH"
                    .into(),
            ));
        }
        let shown: String = String::from_utf8_lossy(bytes.get(..20).unwrap_or(bytes)).into_owned();
        let message = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            "empty message: no MSH segment".to_string()
        } else {
            format!("no MSH segment: a message must start with \"MSH\", found {shown:?}")
        };
        return Err(ParseError::new(
            ErrorCode::SegmentSequenceError,
            Some(Location::new("MSH", 1)),
            message,
        ));
    }

    let field = match bytes.get(3) {
        Some(&b) if is_valid_delimiter(b) => b,
        Some(&b) => {
            return Err(ParseError::msh(
                ErrorCode::DataTypeError,
                1,
                format!(
                    "invalid field separator {} after MSH: it must be ASCII punctuation such as '|'",
                    DisplayByte(b)
                ),
            ));
        }
        None => {
            return Err(ParseError::msh(
                ErrorCode::DataTypeError,
                1,
                "MSH segment has no field separator".into(),
            ));
        }
    };

    let after = bytes.get(4..).unwrap_or_default();
    let enc_len = memchr3(field, b'\r', b'\n', after).unwrap_or(after.len());
    let mut enc = &after[..enc_len];
    let small_tilde = enc.get(1..3) == Some(SMALL_TILDE);
    let normalized;
    if small_tilde {
        normalized = [&enc[..1], b"~", &enc[3..]].concat();
        enc = &normalized;
    }
    let delimiters = Delimiters::from_encoding_characters(field, enc)
        .map_err(|m| ParseError::msh(ErrorCode::DataTypeError, 2, m))?;

    // MSH-3 starts after the separator that ends MSH-2; MSH-18 is 15 more on.
    let mut charset_label: &[u8] = b"";
    let fields_start = 4 + enc_len;
    let mut line_end = bytes.len();
    let mut field_no = 2;
    let mut field_start = fields_start;
    for pos in memchr3_iter(
        field,
        b'\r',
        b'\n',
        bytes.get(fields_start..).unwrap_or_default(),
    ) {
        let pos = fields_start + pos;
        if bytes[pos] != field {
            line_end = pos;
            break;
        }
        if field_no == 18 {
            charset_label = &bytes[field_start..pos];
        }
        field_no += 1;
        field_start = pos + 1;
    }
    if field_no == 18 {
        charset_label = bytes.get(field_start..line_end).unwrap_or_default();
    }
    // First repetition only (later ones name ISO 2022 alternates).
    if let Some(rep) = memchr::memchr(delimiters.repetition, charset_label) {
        charset_label = &charset_label[..rep];
    }
    let charset_label = charset_label.trim_ascii();

    let cr_only = bytes.get(line_end) == Some(&b'\r') && bytes.get(line_end + 1) != Some(&b'\n');

    Ok(RawHeader {
        delimiters,
        // In the decoded text the small tilde has become a single '~'.
        encoding_len: if small_tilde { enc_len - 1 } else { enc_len },
        charset_label,
        cr_only,
        small_tilde,
    })
}

/// Rewrites U+02DC (declared as the repetition separator) to `~`, unless `~`
/// is already used in the text, which would make the two ambiguous.
fn normalize_small_tilde(text: Cow<'_, str>) -> Result<Cow<'_, str>, ParseError> {
    if text.contains('~') {
        return Err(ParseError::msh(
            ErrorCode::DataTypeError,
            2,
            "encoding characters (MSH-2) use U+02DC SMALL TILDE as repetition separator and the text also contains '~'".into(),
        ));
    }
    Ok(Cow::Owned(text.replace('\u{2DC}', "~")))
}

/// One pass over the decoded text: segment boundaries, field separator
/// positions, and segment id checks.
fn build_index(text: &str, head: &RawHeader<'_>) -> Result<(Vec<SegEntry>, Vec<u32>), ParseError> {
    // Trailing whitespace is never data worth keeping (HL7 trims trailing
    // blanks) and is how files and hand-made messages usually end; dropping it
    // here keeps a final LF from sticking to the last field of a CR message.
    let b = text.as_bytes().trim_ascii_end();
    let fs = head.delimiters.field;
    // Rough sizes for typical messages, to avoid most reallocations.
    let mut segments: Vec<SegEntry> = Vec::with_capacity(b.len() / 64 + 4);
    let mut seps: Vec<u32> = Vec::with_capacity(b.len() / 6 + 16);
    let mut builder = IndexBuilder {
        text: b,
        fs,
        segments: &mut segments,
        seps_done: 0,
    };
    let mut start = 0usize;

    // The two loops differ only in which bytes end a segment; they are kept
    // separate so that each runs a single memchr iterator.
    if head.cr_only {
        for pos in memchr2_iter(fs, b'\r', b) {
            if b[pos] == fs {
                seps.push(pos as u32);
            } else {
                builder.finish(start, pos, seps.len())?;
                start = pos + 1;
            }
        }
    } else {
        for pos in memchr3_iter(fs, b'\r', b'\n', b) {
            if b[pos] == fs {
                seps.push(pos as u32);
            } else {
                builder.finish(start, pos, seps.len())?;
                start = pos + 1;
            }
        }
    }
    builder.finish(start, b.len(), seps.len())?;

    // MSH-2 as indexed must be exactly the encoding characters read from the
    // raw bytes; this also guarantees MSH-1 and MSH-2 hold no terminator.
    let msh_ok = segments.first().is_some_and(|msh| {
        let seps_of_msh = seps
            .get(msh.seps_start as usize..(msh.seps_start + msh.seps_len) as usize)
            .unwrap_or_default();
        let msh2_end = seps_of_msh.get(1).map_or(msh.end, |&p| p) as usize;
        msh.start == 0 && msh2_end == 4 + head.encoding_len
    });
    if !msh_ok {
        return Err(ParseError::msh(
            ErrorCode::DataTypeError,
            2,
            "encoding characters (MSH-2) must be followed by the field separator".into(),
        ));
    }
    Ok((segments, seps))
}

struct IndexBuilder<'t, 'v> {
    text: &'t [u8],
    fs: u8,
    segments: &'v mut Vec<SegEntry>,
    /// Number of separators already assigned to finished segments.
    seps_done: usize,
}

impl IndexBuilder<'_, '_> {
    /// Closes the segment spanning `start..end` (terminator excluded).
    /// `seps_total` is the number of separators found so far.
    fn finish(&mut self, start: usize, end: usize, seps_total: usize) -> Result<(), ParseError> {
        let mut start = start;
        // In CR-only mode a CRLF leaves the LF at the start of the next line.
        while start < end && self.text[start] == b'\n' {
            start += 1;
        }
        let line = self.text.get(start..end).unwrap_or_default();
        let seps_len = seps_total - self.seps_done;
        if seps_len == 0 && line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n')) {
            // Blank line or trailing terminator: nothing to keep.
            return Ok(());
        }
        let position = self.segments.len() + 1;
        let id = line.get(..3).unwrap_or(line);
        let id_ok = id.len() == 3
            && id
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && line.get(3).is_none_or(|&b| b == self.fs);
        if !id_ok {
            let shown_end = memchr::memchr(self.fs, line).unwrap_or(line.len()).min(20);
            let shown = String::from_utf8_lossy(&line[..shown_end]);
            return Err(ParseError::new(
                ErrorCode::SegmentSequenceError,
                Some(Location::new(
                    shown.chars().take(3).collect::<String>(),
                    position,
                )),
                format!(
                    "invalid segment id {shown:?} in segment {position}: segment ids are 3 upper-case letters or digits"
                ),
            ));
        }
        if position > 1 && id == b"MSH" {
            return Err(ParseError::new(
                ErrorCode::SegmentSequenceError,
                Some(Location::new("MSH", 2)),
                format!(
                    "second MSH segment at segment {position}: one message at a time (split batches first)"
                ),
            ));
        }
        self.segments.push(SegEntry {
            start: start as u32,
            end: end as u32,
            seps_start: self.seps_done as u32,
            seps_len: seps_len as u32,
        });
        self.seps_done = seps_total;
        Ok(())
    }
}
