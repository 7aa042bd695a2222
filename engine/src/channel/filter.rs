//! Declarative filter conditions on message fields. A channel keeps a message when all of its
//! conditions hold. `message_type` applies to every kind of input (for FHIR: the resourceType,
//! `Bundle^transaction` for a Bundle); `field` paths are HL7 v2 paths, which `passerelle check`
//! refuses on a channel whose source is not HL7 v2.

use passerelle_hl7v2::Path;

use super::Input;

#[derive(Debug, Clone)]
pub enum Condition {
    Field {
        path: Path,
        test: Test,
    },
    /// `ADT` matches any ADT event, `ADT^A01` only that one.
    MessageType(Vec<String>),
    Any(Vec<Condition>),
    All(Vec<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    StartsWith(String),
    Exists(bool),
}

impl Condition {
    pub fn matches(&self, input: &Input<'_>) -> bool {
        match self {
            Condition::Field { path, test } => {
                let Some(message) = input.hl7() else {
                    return false;
                };
                // With a `[*]` path the condition holds when any value passes (or, for the
                // negative tests, when no value fails).
                let values = message.get_all(path);
                let values: Vec<&str> = values
                    .iter()
                    .map(|v| v.as_ref())
                    .filter(|v| !v.is_empty())
                    .collect();
                match test {
                    Test::Equals(x) => values.iter().any(|v| v == x),
                    Test::NotEquals(x) => values.iter().all(|v| v != x),
                    Test::In(xs) => values.iter().any(|v| xs.iter().any(|x| x == v)),
                    Test::NotIn(xs) => values.iter().all(|v| !xs.iter().any(|x| x == v)),
                    Test::StartsWith(x) => values.iter().any(|v| v.starts_with(x.as_str())),
                    Test::Exists(wanted) => values.is_empty() != *wanted,
                }
            }
            Condition::MessageType(patterns) => patterns.iter().any(|p| input.is_of_type(p)),
            Condition::Any(list) => list.iter().any(|c| c.matches(input)),
            Condition::All(list) => list.iter().all(|c| c.matches(input)),
        }
    }

    /// The first condition of a list that does not hold, for the trace.
    pub fn first_failing<'c>(list: &'c [Condition], input: &Input<'_>) -> Option<&'c Condition> {
        list.iter().find(|c| !c.matches(input))
    }

    /// Whether the condition reads HL7 v2 fields (only channels of HL7 v2 may have one).
    pub fn reads_hl7_fields(&self) -> bool {
        match self {
            Condition::Field { .. } => true,
            Condition::MessageType(_) => false,
            Condition::Any(list) | Condition::All(list) => list.iter().any(Self::reads_hl7_fields),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Condition::Field { path, test } => format!("{path} {test:?}"),
            Condition::MessageType(list) => format!("message type in {list:?}"),
            Condition::Any(list) => format!("any of {} conditions", list.len()),
            Condition::All(list) => format!("all of {} conditions", list.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_hl7v2::Message;

    const ADT: &[u8] = b"MSH|^~\\&|HIS|CHBM|LAB|CHBM|20240101120000||ADT^A01^ADT_A01|42|P|2.5\rPID|1||123^^^CHBM^PI~1234567890123^^^ASIP-SANTE-INS-NIR^INS||DUPONT^JEAN\r";

    fn field(path: &str, test: Test) -> Condition {
        Condition::Field {
            path: path.parse().unwrap(),
            test,
        }
    }

    #[test]
    fn field_tests() {
        let m = Input::Hl7(Message::parse(ADT).unwrap());
        assert!(field("MSH-4", Test::Equals("CHBM".into())).matches(&m));
        assert!(!field("MSH-4", Test::NotEquals("CHBM".into())).matches(&m));
        assert!(field("MSH-9.1", Test::In(vec!["ORU".into(), "ADT".into()])).matches(&m));
        assert!(field("MSH-9.1", Test::NotIn(vec!["ORU".into()])).matches(&m));
        assert!(field("PID-5.1", Test::StartsWith("DUP".into())).matches(&m));
        assert!(field("PID-3[*].4", Test::Equals("ASIP-SANTE-INS-NIR".into())).matches(&m));
        assert!(
            !field("PID-3.4", Test::Equals("ASIP-SANTE-INS-NIR".into())).matches(&m),
            "first repetition only"
        );
        assert!(field("PID-8", Test::Exists(false)).matches(&m));
        assert!(!field("PID-8", Test::Exists(true)).matches(&m));
    }

    #[test]
    fn message_type_and_groups() {
        let m = Input::Hl7(Message::parse(ADT).unwrap());
        assert!(Condition::MessageType(vec!["ADT".into()]).matches(&m));
        assert!(Condition::MessageType(vec!["ADT^A01".into()]).matches(&m));
        assert!(!Condition::MessageType(vec!["ADT^A08".into()]).matches(&m));
        let any = Condition::Any(vec![
            field("MSH-4", Test::Equals("X".into())),
            field("MSH-3", Test::Equals("HIS".into())),
        ]);
        assert!(any.matches(&m));
        let all = Condition::All(vec![
            field("MSH-4", Test::Equals("X".into())),
            field("MSH-3", Test::Equals("HIS".into())),
        ]);
        assert!(!all.matches(&m));
    }
}
