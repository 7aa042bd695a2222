//! Prints every non-empty value of an HL7 v2 file with its path:
//! `cargo run -p passerelle-hl7v2 --example dump -- message.hl7`

use std::io::Write;

use passerelle_hl7v2::Message;

fn main() {
    let Some(file) = std::env::args().nth(1) else {
        eprintln!("usage: dump <file>");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{file}: {e}");
            std::process::exit(1);
        }
    };
    let msg = match Message::parse(&bytes) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{file}: error {} at {:?}: {e}", e.code.code(), e.location);
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    // Stop quietly when the reader goes away (`| head`).
    if writeln!(
        out,
        "charset {}, {} segments",
        msg.charset(),
        msg.segment_count()
    )
    .is_err()
    {
        return;
    }
    let mut seen = std::collections::HashMap::new();
    for seg in msg.tree() {
        let n = seen.entry(seg.id.clone()).or_insert(0);
        *n += 1;
        for field in seg.fields {
            for (r, rep) in field.repetitions.iter().enumerate() {
                for (c, comp) in rep.components.iter().enumerate() {
                    for (s, sub) in comp.subcomponents.iter().enumerate() {
                        if !sub.is_empty() {
                            let line = writeln!(
                                out,
                                "{}[{}]-{}[{}].{}.{}\t{sub}",
                                seg.id,
                                n,
                                field.number,
                                r + 1,
                                c + 1,
                                s + 1
                            );
                            if line.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}
