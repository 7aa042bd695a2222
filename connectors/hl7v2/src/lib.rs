//! Zero-copy HL7 v2 (ER7, "pipe and hat") parsing for Passerelle.
//!
//! A [`Message`] keeps the message text (borrowed from the input when it is
//! already UTF-8, transcoded once when MSH-18 says 8859/1 or 8859/15) and a
//! flat index of segment and field boundaries built in a single pass.
//! Repetitions, components and subcomponents are split, and escape sequences
//! decoded, only when a value is read.
//!
//! ```
//! use passerelle_hl7v2::{Message, Path};
//!
//! let msg = Message::parse(
//!     b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01^ORU_R01|42|P|2.5\r\
//!       PID|1||123^^^HOSP^MR~456^^^NAT^NI||DOE^JANE\r\
//!       OBX|1|NM|GLU||5.4\rOBX|2|ST|NOTE||a \\T\\ b\r",
//! )?;
//! let header = msg.header();
//! assert_eq!(header.control_id.as_deref(), Some("42"));
//! assert_eq!(header.trigger_event.as_deref(), Some("R01"));
//!
//! let family = Path::parse("PID-5.1")?;
//! assert_eq!(msg.get(&family).as_deref(), Some("DOE"));
//! let ids: Path = "PID-3[*].1".parse()?;
//! assert_eq!(msg.get_all(&ids), ["123", "456"]);
//! assert_eq!(msg.get(&"OBX[2]-5".parse()?).as_deref(), Some("a & b"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Acknowledgements are built with [`ack::AckBuilder`] and read with
//! [`ack::read_ack`].

// `ParseError` carries an ERL location and a message for the ACK, which
// makes it larger than clippy likes. Errors are produced at most once per
// message, so boxing them would only add an allocation to the error path.
#![allow(clippy::result_large_err)]

pub mod ack;
mod charset;
mod delimiters;
mod error;
mod escape;
mod header;
mod message;
mod path;
mod segment;
mod tree;

pub use charset::{Charset, encode};
pub use delimiters::Delimiters;
pub use error::{ErrorCode, Location, ParseError};
pub use escape::{escape, unescape};
pub use header::Header;
pub use message::{Message, ParseOptions};
pub use path::{Path, PathError, Selector};
pub use segment::{Component, Field, Repetition, Segment, Subcomponent};
pub use tree::{ComponentView, FieldView, RepetitionView, SegmentView, segment_view};
