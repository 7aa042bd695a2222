//! Document replacement (IHE XDS/MHD "replace", a CDA's relatedDocument RPLC): a current
//! DocumentReference that `replaces` another makes that one `superseded`, in the same
//! transaction, as an MHD Document Recipient does on ITI-65 and the DMP on an RPLC
//! association. The target is named by reference (`DocumentReference/x`) or by identifier
//! (a logical reference: its master identifier or identifier).

use serde_json::Value;

use crate::error::FhirResult;
use crate::store::{Expect, Stored, WriteTx};

pub(crate) async fn apply(tx: &mut WriteTx<'_>, written: &Stored) -> FhirResult<()> {
    if written.resource_type != "DocumentReference" {
        return Ok(());
    }
    let Some(body) = &written.body else {
        return Ok(());
    };
    if body["status"] != "current" {
        return Ok(());
    }
    let replaced: Vec<&Value> = body["relatesTo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["code"] == "replaces")
        .map(|r| &r["target"])
        .collect();
    for target in replaced {
        let found = if let Some(id) = target["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("DocumentReference/"))
        {
            tx.read("DocumentReference", id)
                .await
                .ok()
                .into_iter()
                .collect()
        } else if let (Some(system), Some(value)) = (
            target["identifier"]["system"].as_str(),
            target["identifier"]["value"].as_str(),
        ) {
            let criteria = form_urlencoded::Serializer::new(String::new())
                .append_pair("identifier", &format!("{system}|{value}"))
                .finish();
            tx.matching("DocumentReference", &criteria).await?
        } else {
            Vec::new()
        };
        for old in found {
            let Some(mut old_body) = old.body else {
                continue;
            };
            if old.id == written.id || old_body["status"] != "current" {
                continue;
            }
            old_body["status"] = Value::from("superseded");
            tx.put(
                "DocumentReference",
                &old.id,
                old_body,
                "PUT",
                Expect::Version(old.version),
            )
            .await?;
        }
    }
    Ok(())
}
