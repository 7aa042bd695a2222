//! A FHIR narrative (`text.div`, XHTML) as CDA narrative blocks: paragraphs (`p`, `div`,
//! headings, a `br`), lists (`ul`, `ol`), tables (`tr` of `th`/`td`); inline markup is kept
//! as its text, whitespace collapsed.

use super::write::{Block, Cell};

/// The blocks of an XHTML `div`, or why it is not XHTML.
pub(super) fn blocks(div: &str) -> Result<Vec<Block>, String> {
    let doc = roxmltree::Document::parse(div).map_err(|e| format!("not XHTML ({e})"))?;
    let mut out = Vec::new();
    let mut line = String::new();
    walk(doc.root_element(), &mut out, &mut line);
    flush(&mut out, &mut line);
    Ok(out)
}

fn walk(node: roxmltree::Node, out: &mut Vec<Block>, line: &mut String) {
    for child in node.children() {
        if let Some(t) = child.text().filter(|_| child.is_text()) {
            line.push_str(t);
            continue;
        }
        if !child.is_element() {
            continue;
        }
        match child.tag_name().name() {
            "br" => flush(out, line),
            "ul" | "ol" => {
                flush(out, line);
                let items: Vec<String> = child
                    .children()
                    .filter(|c| c.tag_name().name() == "li")
                    .map(inline)
                    .filter(|t| !t.is_empty())
                    .collect();
                if !items.is_empty() {
                    out.push(Block::List(items));
                }
            }
            "table" => {
                flush(out, line);
                let rows: Vec<Vec<Cell>> = child
                    .descendants()
                    .filter(|r| r.tag_name().name() == "tr")
                    .map(|r| {
                        r.children()
                            .filter(|c| matches!(c.tag_name().name(), "th" | "td"))
                            .map(|c| Cell {
                                header: c.tag_name().name() == "th",
                                text: inline(c),
                                id: None,
                            })
                            .collect::<Vec<_>>()
                    })
                    .filter(|r| !r.is_empty())
                    .collect();
                if !rows.is_empty() {
                    out.push(Block::Table(rows));
                }
            }
            "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "pre" | "li" => {
                flush(out, line);
                walk(child, out, line);
                flush(out, line);
            }
            _ => walk(child, out, line),
        }
    }
}

/// The text of an element, whitespace collapsed.
fn inline(node: roxmltree::Node) -> String {
    let text: String = node
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    collapse(&text)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn flush(out: &mut Vec<Block>, line: &mut String) {
    let text = collapse(line);
    if !text.is_empty() {
        out.push(Block::Paragraph(text));
    }
    line.clear();
}
