//! Writing the HL7 v2 message an outbound mapping builds.
//!
//! A segment's rules fill an object keyed by position, as a FHIR mapping fills elements:
//! `{"3": [{"1": "123", "4": {"1": "CHBM"}, "5": "PI"}], "7": "20240115"}` is PID-3 with one
//! repetition (its ID, assigning authority and type) and PID-7. Text is escaped here
//! (`\F\`, `\S\`...), so a value can never break the message's structure, whatever the
//! resource holds.

use passerelle_hl7v2::{Delimiters, escape};
use serde_json::{Map, Value};

/// Segments are ended by a carriage return, as HL7 v2 requires on the wire.
pub const SEGMENT_END: char = '\r';

/// One segment: `id` and its fields by number (MSH-1 and MSH-2 are the delimiters).
pub fn segment(id: &str, fields: &Map<String, Value>, out: &mut String) {
    let d = Delimiters::default();
    out.push_str(id);
    let first = if id == "MSH" {
        out.push(char::from(d.field));
        out.push_str(&d.encoding_characters());
        3
    } else {
        1
    };
    let last = last_position(fields);
    for n in first..=last {
        out.push(char::from(d.field));
        if let Some(v) = fields.get(n.to_string().as_str()) {
            field(v, &d, out);
        }
    }
    out.push(SEGMENT_END);
}

/// The highest position an object fills (its keys are numbers, checked when compiled).
fn last_position(parts: &Map<String, Value>) -> usize {
    parts
        .keys()
        .filter_map(|k| k.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

fn field(v: &Value, d: &Delimiters, out: &mut String) {
    match v {
        Value::Array(reps) => {
            for (i, r) in reps.iter().enumerate() {
                if i > 0 {
                    out.push(char::from(d.repetition));
                }
                parts(r, d, char::from(d.component), 2, out);
            }
        }
        other => parts(other, d, char::from(d.component), 2, out),
    }
}

/// A value made of parts (components, then subcomponents: `levels` left), or a primitive.
fn parts(v: &Value, d: &Delimiters, separator: char, levels: usize, out: &mut String) {
    match v {
        Value::Object(o) if levels > 0 => {
            for n in 1..=last_position(o) {
                if n > 1 {
                    out.push(separator);
                }
                if let Some(p) = o.get(n.to_string().as_str()) {
                    parts(p, d, char::from(d.subcomponent), levels - 1, out);
                }
            }
        }
        // Deeper than subcomponents: its first part (as HL7 reads a composite in place of a
        // primitive).
        Value::Object(o) => {
            if let Some(p) = o.get("1") {
                parts(p, d, separator, 0, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                parts(first, d, separator, levels, out);
            }
        }
        Value::String(s) => out.push_str(&escape(s, d)),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "Y" } else { "N" }),
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(id: &str, v: Value) -> String {
        let mut out = String::new();
        segment(id, v.as_object().unwrap(), &mut out);
        out
    }

    #[test]
    fn positions_repetitions_and_escapes() {
        assert_eq!(
            write(
                "PID",
                json!({"3": [{"1": "123", "4": {"1": "CHBM", "2": "1.2.250", "3": "ISO"}, "5": "PI"},
                             {"1": "9"}],
                       "5": [{"1": "DUPONT", "2": "Jean"}],
                       "7": "19800101",
                       "11": [{"1": "1 rue A|B^C~D\\E&F"}]})
            ),
            "PID|||123^^^CHBM&1.2.250&ISO^PI~9||DUPONT^Jean||19800101||||1 rue A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F\r"
        );
        assert_eq!(
            write(
                "MSH",
                json!({"3": "PASSERELLE", "9": {"1": "RDE", "2": "O11"}, "12": "2.5"})
            ),
            "MSH|^~\\&|PASSERELLE||||||RDE^O11|||2.5\r"
        );
        // Line breaks in a value never end the segment.
        assert_eq!(
            write("NTE", json!({"3": "a\nb", "1": 1})),
            "NTE|1||a\\X0A\\b\r"
        );
        assert_eq!(write("ZZZ", json!({})), "ZZZ\r");
    }
}
