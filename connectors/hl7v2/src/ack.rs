//! Acknowledgements: deciding whether one is wanted, building it (HL7 2.5
//! ACK structure: MSH, MSA, ERR*), and reading the one a peer sends back.

use std::fmt;
use std::str::FromStr;

use crate::charset::{self, Charset};
use crate::delimiters::Delimiters;
use crate::error::{ErrorCode, Location, ParseError};
use crate::escape::escape;
use crate::header::Header;
use crate::message::Message;

/// MSA-1 acknowledgment code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode accept acknowledgment).
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// AA or CA.
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// CA, CE or CR: an accept (commit) acknowledgment of enhanced mode.
    pub fn is_commit(self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckCode {
    type Err = String;

    fn from_str(s: &str) -> Result<AckCode, String> {
        match s.trim() {
            "AA" => Ok(AckCode::AA),
            "AE" => Ok(AckCode::AE),
            "AR" => Ok(AckCode::AR),
            "CA" => Ok(AckCode::CA),
            "CE" => Ok(AckCode::CE),
            "CR" => Ok(AckCode::CR),
            other => Err(format!("unknown acknowledgment code {other:?}")),
        }
    }
}

/// Original mode: one application ACK per message. Enhanced mode: an accept
/// (commit) ACK and/or an application ACK, as MSH-15 and MSH-16 ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    Original,
    Enhanced,
}

/// Enhanced when MSH-15 or MSH-16 is valued.
pub fn ack_mode(h: &Header<'_>) -> AckMode {
    if h.accept_ack_type.is_some() || h.application_ack_type.is_some() {
        AckMode::Enhanced
    } else {
        AckMode::Original
    }
}

/// Whether an accept ACK is to be sent, per MSH-15 (AL always, NE never, ER
/// on error only, SU on success only; empty means AL). Always true in
/// original mode, where the one ACK is always sent.
pub fn accept_ack_wanted(h: &Header<'_>, success: bool) -> bool {
    wanted(h, h.accept_ack_type.as_deref(), success)
}

/// Whether an application ACK is to be sent, per MSH-16, with the same rules
/// as [`accept_ack_wanted`].
pub fn application_ack_wanted(h: &Header<'_>, success: bool) -> bool {
    wanted(h, h.application_ack_type.as_deref(), success)
}

fn wanted(h: &Header<'_>, condition: Option<&str>, success: bool) -> bool {
    if ack_mode(h) == AckMode::Original {
        return true;
    }
    match condition.map(str::trim) {
        Some("NE") => false,
        Some("ER") => !success,
        Some("SU") => success,
        // AL, empty, or a value outside table 0155: acknowledging is the
        // safe choice, a sender that did not want it can drop it.
        _ => true,
    }
}

/// One ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub code: ErrorCode,
    pub location: Option<Location>,
    /// Human-readable text for ERR-8.
    pub message: String,
    /// ERR-4: 'E' error, 'W' warning, 'I' information.
    pub severity: char,
}

impl AckError {
    /// An error ('E').
    pub fn error(code: ErrorCode, location: Option<Location>, message: impl Into<String>) -> Self {
        AckError {
            code,
            location,
            message: message.into(),
            severity: 'E',
        }
    }

    /// A warning ('W').
    pub fn warning(
        code: ErrorCode,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> Self {
        AckError {
            severity: 'W',
            ..AckError::error(code, location, message)
        }
    }
}

impl From<&ParseError> for AckError {
    fn from(e: &ParseError) -> Self {
        AckError::error(e.code, e.location.clone(), e.message.clone())
    }
}

impl From<ParseError> for AckError {
    fn from(e: ParseError) -> Self {
        AckError::error(e.code, e.location, e.message)
    }
}

/// Builds an ACK for a message.
///
/// The MSH swaps sender and receiver, copies MSH-11, MSH-12 and MSH-18 and
/// uses the original's delimiters; MSA-2 echoes the original control id.
/// Without an original header (the input could not be parsed) it uses
/// `|^~\&`, version 2.5 and an empty MSA-2.
#[derive(Debug, Clone)]
pub struct AckBuilder<'a> {
    original: Option<&'a Header<'a>>,
    code: AckCode,
    control_id: String,
    timestamp: String,
    text: Option<String>,
    errors: Vec<AckError>,
}

impl<'a> AckBuilder<'a> {
    /// `control_id` is the ACK's own MSH-10; `timestamp` its MSH-7, formatted
    /// by the caller (`YYYYMMDDHHMMSS+ZZZZ`).
    pub fn new(
        original: Option<&'a Header<'a>>,
        code: AckCode,
        control_id: impl Into<String>,
        timestamp: impl Into<String>,
    ) -> Self {
        AckBuilder {
            original,
            code,
            control_id: control_id.into(),
            timestamp: timestamp.into(),
            text: None,
            errors: Vec::new(),
        }
    }

    /// MSA-3 text message.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Adds an ERR segment.
    pub fn error(mut self, error: AckError) -> Self {
        self.errors.push(error);
        self
    }

    /// Adds ERR segments.
    pub fn errors(mut self, errors: impl IntoIterator<Item = AckError>) -> Self {
        self.errors.extend(errors);
        self
    }

    /// The delimiters the ACK is written with.
    pub fn delimiters(&self) -> Delimiters {
        self.original.map(Header::delimiters).unwrap_or_default()
    }

    /// The charset the ACK is encoded in by [`AckBuilder::build`].
    pub fn charset(&self) -> Charset {
        self.original.map_or(Charset::Utf8, Header::charset)
    }

    /// The ACK as text, each segment terminated by CR.
    pub fn build_string(&self) -> String {
        let d = self.delimiters();
        let fs = char::from(d.field);
        let cs = char::from(d.component);
        let esc = |s: &str| escape(s, &d).into_owned();
        let raw = |n: usize| self.original.map_or("", |h| h.raw_field(n));

        let trigger = self
            .original
            .and_then(|h| h.segment().field(9))
            .and_then(|f| f.component(2))
            .map_or("", |c| c.raw());
        let message_type = if trigger.is_empty() {
            "ACK".to_string()
        } else {
            format!("ACK{cs}{trigger}{cs}ACK")
        };
        let or = |value: &'a str, default: &'static str| {
            if value.is_empty() { default } else { value }
        };

        let mut fields: Vec<String> = vec![
            raw(5).to_string(),
            raw(6).to_string(),
            raw(3).to_string(),
            raw(4).to_string(),
            esc(&self.timestamp),
            String::new(),
            message_type,
            esc(&self.control_id),
            or(raw(11), "P").to_string(),
            or(raw(12), "2.5").to_string(),
        ];
        let charset_field = raw(18);
        if !charset_field.is_empty() {
            fields.extend(std::iter::repeat_n(String::new(), 5));
            fields.push(charset_field.to_string());
        }

        let mut out = String::with_capacity(256);
        out.push_str("MSH");
        out.push(fs);
        out.push_str(&d.encoding_characters());
        for f in &fields {
            out.push(fs);
            out.push_str(f);
        }
        out.push('\r');

        out.push_str("MSA");
        out.push(fs);
        out.push_str(self.code.as_str());
        out.push(fs);
        out.push_str(raw(10));
        if let Some(text) = &self.text {
            out.push(fs);
            out.push_str(&esc(text));
        }
        out.push('\r');

        for e in &self.errors {
            let erl = e
                .location
                .as_ref()
                .map(|l| {
                    l.erl_parts()
                        .iter()
                        .map(|p| esc(p))
                        .collect::<Vec<_>>()
                        .join(&cs.to_string())
                })
                .unwrap_or_default();
            out.push_str("ERR");
            out.push(fs);
            out.push(fs);
            out.push_str(&erl);
            out.push(fs);
            out.push_str(&format!(
                "{}{cs}{}{cs}HL70357",
                e.code.code(),
                esc(e.code.text())
            ));
            out.push(fs);
            out.push_str(&esc(&e.severity.to_string()));
            for _ in 0..4 {
                out.push(fs);
            }
            out.push_str(&esc(&e.message));
            out.push('\r');
        }
        out
    }

    /// The ACK as bytes in the original message's charset (no MLLP framing).
    pub fn build(&self) -> Vec<u8> {
        charset::encode(&self.build_string(), self.charset()).into_owned()
    }
}

/// Reads a peer's acknowledgment: MSA-1, MSA-2 (the control id of the
/// message it acknowledges) and an error text from ERR-8, MSA-3, ERR-3.2 or
/// the v2.3 ERR-1 code text, whichever comes first. `None` when there is no
/// MSA or its code is not in table 0008.
pub fn read_ack(msg: &Message<'_>) -> Option<(AckCode, Option<String>, Option<String>)> {
    let msa = msg.segment("MSA", 1)?;
    let code: AckCode = msa.field(1)?.value().parse().ok()?;
    let non_empty = |v: std::borrow::Cow<'_, str>| {
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    };
    let control_id = msa.field(2).and_then(|f| non_empty(f.value()));
    let errs = || msg.segments_named("ERR");
    let text = errs()
        .find_map(|e| e.field(8).and_then(|f| non_empty(f.value())))
        .or_else(|| msa.field(3).and_then(|f| non_empty(f.value())))
        .or_else(|| {
            errs().find_map(|e| {
                e.field(3)
                    .and_then(|f| f.component(2))
                    .and_then(|c| non_empty(c.value()))
            })
        })
        .or_else(|| {
            errs().find_map(|e| {
                e.field(1)
                    .and_then(|f| f.component(4))
                    .and_then(|c| c.subcomponent(2))
                    .and_then(|s| non_empty(s.value()))
            })
        });
    Some((code, control_id, text))
}
