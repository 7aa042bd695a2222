//! Message types left unmapped on purpose, with the reason (`mappings/not-mapped.csv`): the
//! coverage report and the journal give the reason instead of "no mapping yet".

use std::path::Path;

use crate::Problem;
use crate::plan::Trigger;

/// One declaration: the messages it covers and why they are not mapped.
#[derive(Debug, Clone)]
pub struct NotMapped {
    pub trigger: Trigger,
    pub reason: String,
}

/// Reads `not-mapped.csv` (`message,reason`, `#` comments) of a mappings directory; an
/// absent file declares nothing.
pub fn load(mappings_dir: &Path) -> (Vec<NotMapped>, Vec<Problem>) {
    let file = mappings_dir.join("not-mapped.csv");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return (Vec::new(), Vec::new());
    };
    let problem = |line: usize, message: String| Problem {
        file: file.clone(),
        line,
        column: 1,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return (Vec::new(), vec![problem(1, e.to_string())]),
    };
    let col = |n: &str| headers.iter().position(|h| h == n);
    let (Some(message), Some(reason)) = (col("message"), col("reason")) else {
        return (
            Vec::new(),
            vec![problem(1, "needs a `message,reason` header".into())],
        );
    };
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(1, |p| p.line() as usize);
                problems.push(problem(line, e.to_string()));
                continue;
            }
        };
        let line = record.position().map_or(1, |p| p.line() as usize);
        let text = record.get(message).unwrap_or("");
        match (
            Trigger::parse(text),
            record.get(reason).filter(|r| !r.is_empty()),
        ) {
            (Some(trigger), Some(reason)) => out.push(NotMapped {
                trigger,
                reason: reason.to_string(),
            }),
            (None, _) => problems.push(problem(
                line,
                format!("`{text}` is not a message type (ADT, ADT^A29)"),
            )),
            (_, None) => problems.push(problem(line, format!("`{text}` needs a reason"))),
        }
    }
    (out, problems)
}
