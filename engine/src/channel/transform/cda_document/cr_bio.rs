//! The CR-BIO volet (compte rendu d'examens de biologie médicale): a DiagnosticReport, its
//! result Observations, the biologist and the laboratory that performed it.

use serde_json::Value;

use super::ids;
use super::read::{
    coded, encounter, facility, organization, patient, professional, resolve, text, ts,
};
use super::write::{self, Body, Code, Document, LabChapter, LabResult};

pub(super) fn document(
    bundle: &Value,
    report: &Value,
    reference: &str,
    version: u64,
) -> Result<Document, String> {
    let patient = patient(bundle, report, reference)?;
    let performers: Vec<&Value> = report["performer"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| resolve(bundle, p["reference"].as_str()?))
        .collect();
    let practitioner = performers
        .iter()
        .find(|r| r["resourceType"] == "Practitioner")
        .ok_or(format!(
            "{reference} has no performer Practitioner in the change (is `performer` in the channel's include?)"
        ))?;
    let org = performers
        .iter()
        .find(|r| r["resourceType"] == "Organization")
        .ok_or(format!(
            "{reference} has no performer Organization in the change: the laboratory"
        ))?;
    let organization = organization(org)?;
    let facility = facility(org)?;
    let author = professional(practitioner, organization.clone())?;
    let report_code = coded(&report["code"]).ok_or(format!(
        "{reference} has no code with a known system (LOINC)"
    ))?;
    let mut results = Vec::new();
    for r in report["result"].as_array().into_iter().flatten() {
        let Some(target) = r["reference"].as_str() else {
            continue;
        };
        let obs = resolve(bundle, target).ok_or(format!(
            "{reference}: result {target} is not in the change (is `result` in the channel's include?)"
        ))?;
        results.push(lab_result(obs, target)?);
    }
    if results.is_empty() {
        return Err(format!("{reference} has no result Observation"));
    }
    let time = report["issued"]
        .as_str()
        .or(report["meta"]["lastUpdated"].as_str())
        .and_then(ts)
        .ok_or(format!("{reference} has no issued time"))?;
    let start = report["effectiveDateTime"]
        .as_str()
        .or(report["effectivePeriod"]["start"].as_str())
        .and_then(ts);
    let (set_id, doc_id, replaces) = ids(reference, version);
    Ok(Document {
        templates: vec!["1.3.6.1.4.1.19376.1.3.3", "1.2.250.1.213.1.1.1.55"],
        id: doc_id,
        code: Code {
            code: "11502-2".into(),
            system: write::loinc().into(),
            display: "CR d'examens biologiques".into(),
        },
        title: "Compte rendu d'examens biologiques".into(),
        time: time.clone(),
        confidentiality: "N".into(),
        set_id,
        version,
        replaces,
        patient,
        author,
        custodian: organization,
        service_code: report_code.clone(),
        service_start: start.clone(),
        service_end: Some(time),
        practice_setting: write::establishment(),
        encounter: encounter(bundle, report),
        facility,
        body: Body::Lab(LabChapter {
            title: text(&report["code"]["text"]).unwrap_or_else(|| report_code.display.clone()),
            code: report_code,
            results,
        }),
    })
}

fn lab_result(obs: &Value, target: &str) -> Result<LabResult, String> {
    let code =
        coded(&obs["code"]).ok_or(format!("{target} has no code with a known system (LOINC)"))?;
    let number = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let q = &obs["valueQuantity"];
    let quantity = number(&q["value"]).map(|v| {
        let unit = q["code"]
            .as_str()
            .filter(|_| q["system"] == "http://unitsofmeasure.org")
            .or(q["unit"].as_str())
            .unwrap_or("1");
        (v, unit.to_string())
    });
    let range = &obs["referenceRange"][0];
    Ok(LabResult {
        label: text(&obs["code"]["text"]).unwrap_or_else(|| code.display.clone()),
        code,
        time: obs["effectiveDateTime"]
            .as_str()
            .or(obs["issued"].as_str())
            .and_then(ts),
        text: text(&obs["valueString"]),
        quantity,
        interpretation: obs["interpretation"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(coded),
        low: number(&range["low"]["value"]),
        high: number(&range["high"]["value"]),
    })
}
