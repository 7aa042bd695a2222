//! Typed view on the MSH segment.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::segment::Segment;

/// The MSH fields an engine routes and acknowledges on, unescaped. Every
/// field is `None` when empty.
///
/// Application and facility fields (HD data type) give their first component,
/// the namespace id; use a path such as `MSH-4.2` for the others.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// MSH-3.1
    pub sending_application: Option<Cow<'a, str>>,
    /// MSH-4.1
    pub sending_facility: Option<Cow<'a, str>>,
    /// MSH-5.1
    pub receiving_application: Option<Cow<'a, str>>,
    /// MSH-6.1
    pub receiving_facility: Option<Cow<'a, str>>,
    /// MSH-7.1, e.g. `20240306111154+0100`.
    pub datetime: Option<Cow<'a, str>>,
    /// MSH-9.1, e.g. `ADT`.
    pub message_type: Option<Cow<'a, str>>,
    /// MSH-9.2, e.g. `A01`.
    pub trigger_event: Option<Cow<'a, str>>,
    /// MSH-9.3, e.g. `ADT_A01`.
    pub message_structure: Option<Cow<'a, str>>,
    /// MSH-10
    pub control_id: Option<Cow<'a, str>>,
    /// MSH-11.1, e.g. `P`.
    pub processing_id: Option<Cow<'a, str>>,
    /// MSH-12.1, e.g. `2.5`.
    pub version: Option<Cow<'a, str>>,
    /// MSH-15 (AL, NE, ER, SU).
    pub accept_ack_type: Option<Cow<'a, str>>,
    /// MSH-16 (AL, NE, ER, SU).
    pub application_ack_type: Option<Cow<'a, str>>,
    /// MSH-18, first repetition, as written (e.g. `8859/1`).
    pub charset_field: Option<Cow<'a, str>>,
    segment: Segment<'a>,
}

impl<'a> Header<'a> {
    pub(crate) fn new(msh: Segment<'a>) -> Header<'a> {
        let comp = |field: usize, component: usize| {
            msh.field(field)
                .and_then(|f| f.component(component))
                .map(|c| c.value())
                .filter(|v| !v.is_empty())
        };
        let whole = |field: usize| {
            msh.field(field)
                .map(|f| f.value())
                .filter(|v| !v.is_empty())
        };
        Header {
            sending_application: comp(3, 1),
            sending_facility: comp(4, 1),
            receiving_application: comp(5, 1),
            receiving_facility: comp(6, 1),
            datetime: comp(7, 1),
            message_type: comp(9, 1),
            trigger_event: comp(9, 2),
            message_structure: comp(9, 3),
            control_id: whole(10),
            processing_id: comp(11, 1),
            version: comp(12, 1),
            accept_ack_type: whole(15),
            application_ack_type: whole(16),
            charset_field: msh
                .field(18)
                .and_then(|f| f.repetition(1))
                .map(|r| r.value())
                .filter(|v| !v.is_empty()),
            segment: msh,
        }
    }

    /// The MSH segment itself, for fields not mapped above and raw access.
    pub fn segment(&self) -> Segment<'a> {
        self.segment
    }

    /// The message's delimiters.
    pub fn delimiters(&self) -> Delimiters {
        self.segment.ctx().delimiters
    }

    /// The charset the message was decoded from.
    pub fn charset(&self) -> Charset {
        self.segment.ctx().charset
    }

    /// Raw (escaped) text of MSH field `n`, `""` when absent. Used to copy
    /// fields verbatim into an ACK, which uses the same delimiters.
    pub(crate) fn raw_field(&self, n: usize) -> &'a str {
        self.segment.field(n).map(|f| f.raw()).unwrap_or("")
    }
}
