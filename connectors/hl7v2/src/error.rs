//! Errors, with the HL7 error codes (table 0357) and error locations (ERL)
//! that an acknowledgement needs to report them to the sender.

use std::fmt;

/// HL7 table 0357 "Message error condition codes".
///
/// Parse errors carry one of these so that an ACK can be built straight from
/// the error without a second classification step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    SegmentSequenceError = 100,
    RequiredFieldMissing = 101,
    DataTypeError = 102,
    TableValueNotFound = 103,
    UnsupportedMessageType = 200,
    UnsupportedEventCode = 201,
    UnsupportedProcessingId = 202,
    UnsupportedVersionId = 203,
    UnknownKeyIdentifier = 204,
    DuplicateKeyIdentifier = 205,
    ApplicationRecordLocked = 206,
    ApplicationInternalError = 207,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::SegmentSequenceError,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataTypeError,
        ErrorCode::TableValueNotFound,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::UnknownKeyIdentifier,
        ErrorCode::DuplicateKeyIdentifier,
        ErrorCode::ApplicationRecordLocked,
        ErrorCode::ApplicationInternalError,
    ];

    /// The numeric code, as written in ERR-3.1.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The table's description, as written in ERR-3.2.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// The code for a number read from a peer's ERR-3.1, if it is in the table.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

/// Where an error is, in the terms of HL7's ERL data type
/// (segment id ^ sequence ^ field ^ repetition ^ component ^ subcomponent).
///
/// `sequence` is the 1-based occurrence of the segment id in the message, except
/// for errors about the segment structure itself (bad segment id), where it is
/// the 1-based position of the segment in the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: String,
    pub sequence: usize,
    pub field: Option<usize>,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

impl Location {
    /// A location pointing at a whole segment.
    pub fn new(segment: impl Into<String>, sequence: usize) -> Location {
        Location {
            segment: segment.into(),
            sequence,
            field: None,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// The same location, narrowed to a field.
    pub fn with_field(mut self, field: usize) -> Location {
        self.field = Some(field);
        self
    }

    /// The same location, narrowed to a field repetition.
    pub fn with_repetition(mut self, repetition: usize) -> Location {
        self.repetition = Some(repetition);
        self
    }

    /// The same location, narrowed to a component.
    pub fn with_component(mut self, component: usize) -> Location {
        self.component = Some(component);
        self
    }

    /// The same location, narrowed to a subcomponent.
    pub fn with_subcomponent(mut self, subcomponent: usize) -> Location {
        self.subcomponent = Some(subcomponent);
        self
    }

    /// The ERL components in order, with trailing unknown parts dropped
    /// (`["MSH", "1", "9"]`). The caller joins them with its component separator.
    pub fn erl_parts(&self) -> Vec<String> {
        let mut parts = vec![self.segment.clone(), self.sequence.to_string()];
        let rest = [
            self.field,
            self.repetition,
            self.component,
            self.subcomponent,
        ];
        let last = rest.iter().rposition(Option::is_some);
        if let Some(last) = last {
            for part in &rest[..=last] {
                parts.push(part.map(|n| n.to_string()).unwrap_or_default());
            }
        }
        parts
    }
}

impl fmt::Display for Location {
    /// Path-like form, e.g. `MSH[1]-9` or `PID[1]-3[2].4.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.segment, self.sequence)?;
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(rep) = self.repetition {
                write!(f, "[{rep}]")?;
            }
            if let Some(comp) = self.component {
                write!(f, ".{comp}")?;
                if let Some(sub) = self.subcomponent {
                    write!(f, ".{sub}")?;
                }
            }
        }
        Ok(())
    }
}

/// Why a message could not be parsed. `Display` shows `message` only; the
/// code and location are there for the ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub location: Option<Location>,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(code: ErrorCode, location: Option<Location>, message: String) -> ParseError {
        ParseError {
            code,
            location,
            message,
        }
    }

    /// Shorthand for errors located on an MSH field.
    pub(crate) fn msh(code: ErrorCode, field: usize, message: String) -> ParseError {
        ParseError::new(
            code,
            Some(Location::new("MSH", 1).with_field(field)),
            message,
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts() {
        assert_eq!(ErrorCode::RequiredFieldMissing.code(), 101);
        assert_eq!(
            ErrorCode::RequiredFieldMissing.text(),
            "Required field missing"
        );
        assert_eq!(ErrorCode::ApplicationInternalError.code(), 207);
        assert_eq!(ErrorCode::from_code(102), Some(ErrorCode::DataTypeError));
        assert_eq!(ErrorCode::from_code(999), None);
        assert_eq!(
            ErrorCode::UnsupportedMessageType.to_string(),
            "200 Unsupported message type"
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
    }

    #[test]
    fn location_forms() {
        let loc = Location::new("MSH", 1).with_field(9);
        assert_eq!(loc.erl_parts(), ["MSH", "1", "9"]);
        assert_eq!(loc.to_string(), "MSH[1]-9");
        let loc = Location::new("PID", 1)
            .with_field(3)
            .with_repetition(2)
            .with_component(4)
            .with_subcomponent(1);
        assert_eq!(loc.erl_parts(), ["PID", "1", "3", "2", "4", "1"]);
        assert_eq!(loc.to_string(), "PID[1]-3[2].4.1");
        // A component without a repetition keeps the repetition slot empty.
        let loc = Location::new("OBX", 2).with_field(5).with_component(1);
        assert_eq!(loc.erl_parts(), ["OBX", "2", "5", "", "1"]);
        assert_eq!(Location::new("ZZZ", 4).erl_parts(), ["ZZZ", "4"]);
    }

    #[test]
    fn parse_error_displays_message() {
        let e = ParseError::msh(ErrorCode::RequiredFieldMissing, 10, "no control id".into());
        assert_eq!(e.to_string(), "no control id");
        assert_eq!(e.location.unwrap().erl_parts(), ["MSH", "1", "10"]);
    }
}
