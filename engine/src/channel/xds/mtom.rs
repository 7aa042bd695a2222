//! MTOM/XOP framing (W3C XOP, SOAP 1.2 MTOM) of an ITI-41 request: a `multipart/related`
//! body whose root part is the SOAP envelope (`application/xop+xml`) and whose other part
//! is the document, named by the `xop:Include href="cid:..."` in the envelope.
//!
//! The transform's output is the whole HTTP entity written as a MIME message (its
//! Content-Type header, a blank line, the body): a file destination writes exactly what
//! the repository would receive, and the `xds` destination splits it back.

/// The Content-ID of the envelope part.
pub const ROOT_ID: &str = "root.message@passerelle";

/// One MTOM request: `Content-Type` value and body.
pub struct Framed {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Frames the envelope and the document. `boundary` must not occur in either (it is
/// derived from the document's hash by the caller and checked here).
pub fn frame(
    envelope: &str,
    document: &[u8],
    document_cid: &str,
    boundary: &str,
) -> Result<Framed, String> {
    let marker = format!("--{boundary}");
    if contains(envelope.as_bytes(), marker.as_bytes()) || contains(document, marker.as_bytes()) {
        return Err("the MIME boundary occurs in the content".into());
    }
    let content_type = format!(
        "multipart/related; boundary=\"{boundary}\"; type=\"application/xop+xml\"; \
         start=\"<{ROOT_ID}>\"; start-info=\"application/soap+xml\"; \
         action=\"{}\"",
        super::soap::ACTION
    );
    let mut body = Vec::with_capacity(envelope.len() + document.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; \
             type=\"application/soap+xml\"\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: <{ROOT_ID}>\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(envelope.as_bytes());
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: text/xml\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: <{document_cid}>\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(document);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Framed { content_type, body })
}

impl Framed {
    /// The request as one MIME message (header, blank line, body).
    pub fn to_message(&self) -> Vec<u8> {
        let mut out = format!(
            "MIME-Version: 1.0\r\nContent-Type: {}\r\n\r\n",
            self.content_type
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads back [`Framed::to_message`].
    pub fn from_message(message: &[u8]) -> Result<Framed, String> {
        let end = find(message, b"\r\n\r\n").ok_or("not an XDS request: no MIME header")?;
        let head =
            std::str::from_utf8(&message[..end]).map_err(|_| "the MIME header is not UTF-8")?;
        let content_type = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_string())
            })
            .ok_or("not an XDS request: no Content-Type")?;
        Ok(Framed {
            content_type,
            body: message[end + 4..].to_vec(),
        })
    }
}

/// The root part of a `multipart/related` answer (the start part, else the first), or the
/// body itself when the answer is not multipart.
pub fn root_part<'b>(content_type: &str, body: &'b [u8]) -> Result<&'b [u8], String> {
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return Ok(body);
    }
    let boundary =
        parameter(content_type, "boundary").ok_or("a multipart answer without a boundary")?;
    let start = parameter(content_type, "start");
    let marker = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = find(rest, marker.as_bytes()) {
        let after = &rest[at + marker.len()..];
        if after.starts_with(b"--") {
            break;
        }
        let next = find(after, marker.as_bytes()).unwrap_or(after.len());
        let part = after[..next]
            .strip_prefix(b"\r\n")
            .unwrap_or(&after[..next]);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        parts.push(part);
        rest = &after[next..];
    }
    let split = |part: &'b [u8]| -> Option<(&'b [u8], &'b [u8])> {
        let end = find(part, b"\r\n\r\n")?;
        Some((&part[..end], &part[end + 4..]))
    };
    let chosen = parts
        .iter()
        .filter_map(|p| split(p))
        .find(|(head, _)| {
            start.as_deref().is_none_or(|s| {
                String::from_utf8_lossy(head)
                    .to_ascii_lowercase()
                    .contains(&s.to_ascii_lowercase())
            })
        })
        .or_else(|| parts.first().and_then(|p| split(p)))
        .ok_or("a multipart answer without parts")?;
    Ok(chosen.1)
}

/// A parameter of a header value (`boundary="x"`), unquoted.
pub fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_frames_the_envelope_and_the_document_and_reads_back() {
        let envelope = "<e><xop:Include href=\"cid:doc1@passerelle\"/></e>";
        let framed = frame(
            envelope,
            b"<ClinicalDocument/>",
            "doc1@passerelle",
            "MIMEBoundary_x",
        )
        .unwrap();
        assert!(framed.content_type.contains("type=\"application/xop+xml\""));
        assert!(
            framed
                .content_type
                .contains("start-info=\"application/soap+xml\"")
        );
        assert_eq!(
            parameter(&framed.content_type, "boundary").as_deref(),
            Some("MIMEBoundary_x")
        );
        let body = String::from_utf8(framed.body.clone()).unwrap();
        assert!(body.contains(
            "Content-ID: <doc1@passerelle>\r\n\r\n<ClinicalDocument/>\r\n--MIMEBoundary_x--"
        ));
        assert_eq!(
            root_part(&framed.content_type, &framed.body).unwrap(),
            envelope.as_bytes()
        );
        let back = Framed::from_message(&framed.to_message()).unwrap();
        assert_eq!(
            (back.content_type, back.body),
            (framed.content_type, framed.body)
        );
        // A boundary found in the content would cut the part.
        assert!(frame("--MIMEBoundary_x", b"", "d", "MIMEBoundary_x").is_err());
    }

    #[test]
    fn a_plain_answer_is_its_own_root_part() {
        assert_eq!(root_part("application/soap+xml", b"<x/>").unwrap(), b"<x/>");
        assert!(root_part("multipart/related", b"").is_err());
    }
}
