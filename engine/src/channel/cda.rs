//! The fast structural check of a CDA on its way in: what CDA R2 requires of a header
//! (POCD_HD000040), so that a document the mapping could not place (no patient, no id) is
//! refused at once, with the element at fault. The full XSD and the CI-SIS schematrons are
//! run by the test suite (docs/inbound.md); the engine does not need Saxon at run time.

use roxmltree::{Document, Node};

const CDA: &str = "urn:hl7-org:v3";

fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children().find(|c| c.has_tag_name((CDA, name)))
}

/// An element is there, with a value or a reason for none (`nullFlavor`).
fn valued(node: Node<'_, '_>, attribute: &str) -> bool {
    node.attribute(attribute)
        .is_some_and(|v| !v.trim().is_empty())
        || node.attribute("nullFlavor").is_some()
}

pub fn check(document: &Document<'_>) -> Result<(), String> {
    let root = document.root_element();
    if !root.has_tag_name((CDA, "ClinicalDocument")) {
        return Err(format!(
            "the root element is `{}`{}: a CDA document is a ClinicalDocument in the \
             urn:hl7-org:v3 namespace",
            root.tag_name().name(),
            root.tag_name()
                .namespace()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default()
        ));
    }
    let required = [
        ("id", Some("root")),
        ("code", Some("code")),
        ("effectiveTime", Some("value")),
        ("confidentialityCode", Some("code")),
        ("recordTarget", None),
        ("author", None),
        ("custodian", None),
    ];
    for (name, attribute) in required {
        let Some(node) = child(root, name) else {
            return Err(format!(
                "/ClinicalDocument/{name} is missing (CDA R2 requires it)"
            ));
        };
        if let Some(a) = attribute
            && !valued(node, a)
        {
            return Err(format!(
                "/ClinicalDocument/{name} has no @{a} (nor a nullFlavor)"
            ));
        }
    }
    let patient_ids = root
        .children()
        .filter(|c| c.has_tag_name((CDA, "recordTarget")))
        .filter_map(|r| child(r, "patientRole"))
        .flat_map(|p| p.children().filter(|c| c.has_tag_name((CDA, "id"))))
        .count();
    if patient_ids == 0 {
        return Err(
            "/ClinicalDocument/recordTarget/patientRole/id is missing: the document names no patient"
                .into(),
        );
    }
    Ok(())
}

/// The document's id, `root^extension`: the journal's key against a document sent twice.
pub fn document_id(document: &Document<'_>) -> Option<String> {
    let id = child(document.root_element(), "id")?;
    let root = id.attribute("root")?;
    Some(match id.attribute("extension") {
        Some(e) => format!("{root}^{e}"),
        None => root.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3" extension="9"/><code code="11502-2"/><effectiveTime value="20240101"/><confidentialityCode code="N"/><recordTarget><patientRole><id root="1.2" extension="P"/></patientRole></recordTarget><author/><custodian/></ClinicalDocument>"#;

    #[test]
    fn a_header_needs_what_cda_requires() {
        let ok = Document::parse(HEAD).unwrap();
        assert_eq!(check(&ok), Ok(()));
        assert_eq!(document_id(&ok).as_deref(), Some("1.2.3^9"));
        let without = |from: &str, to: &str| {
            let text = HEAD.replace(from, to);
            check(&Document::parse(&text).unwrap()).unwrap_err()
        };
        assert!(without("<custodian/>", "").contains("custodian is missing"));
        assert!(without(r#"<code code="11502-2"/>"#, "<code/>").contains("code has no @code"));
        assert!(without(r#"<id root="1.2" extension="P"/>"#, "").contains("names no patient"));
        assert!(without("urn:hl7-org:v3", "urn:other").contains("root element"));
    }
}
