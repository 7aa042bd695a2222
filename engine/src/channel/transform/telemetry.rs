//! Device readings to vital-sign Observations. SenML records (RFC 8428: base name, time and
//! unit resolved) whose measurement the declared table `schemas/telemetry/vital-signs.csv`
//! knows become Observations with the FHIR vital-signs profile, a LOINC code and a UCUM
//! unit, for the patient (or the location) the device is linked to. A FHIR Observation is
//! written as sent, its subject and device filled in from the registry when it has none.
//!
//! Each Observation is a conditional create on an identifier made of the device, the
//! measurement and the time, so a reading delivered twice (MQTT QoS 1 after a restart) is
//! written once. A `min_interval` down-samples high-rate streams: a measurement of a device
//! is kept when at least that long after the last one kept (the others are journaled, not
//! stored).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Output, Routing, Transform};
use crate::channel::Input;
use crate::channel::input::DeviceLink;

/// The system of the identifiers given to Observations made of readings.
pub const READING_SYSTEM: &str = "urn:passerelle:device-reading";
const VITAL_SIGNS: &str = "http://hl7.org/fhir/StructureDefinition/vitalsigns";
/// SenML times below 2^28 are relative to now (RFC 8428 §4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0;

#[derive(Debug, Clone)]
struct VitalSign {
    loinc: String,
    display: String,
    ucum: String,
}

/// The measurement table, compiled in.
fn table() -> &'static HashMap<String, VitalSign> {
    static TABLE: OnceLock<HashMap<String, VitalSign>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let text = include_str!("../../../../schemas/telemetry/vital-signs.csv");
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            if let [names, loinc, display, ucum] = cols[..] {
                for name in names.split_whitespace() {
                    out.insert(
                        name.to_lowercase(),
                        VitalSign {
                            loinc: loinc.into(),
                            display: display.into(),
                            ucum: ucum.into(),
                        },
                    );
                }
            }
        }
        out
    })
}

/// A SenML unit as UCUM (RFC 8428 §12.1 units that differ from their UCUM code).
fn ucum(unit: &str) -> &str {
    match unit {
        "mmHg" => "mm[Hg]",
        "beat/min" | "beats/min" | "1/min" | "bpm" => "/min",
        "%EL" | "%RH" => "%",
        other => other,
    }
}

pub struct VitalSigns {
    pub destinations: Vec<String>,
    pub min_interval: Option<Duration>,
    /// (device, LOINC code) -> the time (seconds) of the last reading kept.
    last_kept: Mutex<HashMap<(String, String), f64>>,
}

impl VitalSigns {
    pub fn new(destinations: Vec<String>, min_interval: Option<Duration>) -> Self {
        Self {
            destinations,
            min_interval,
            last_kept: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a reading at `time` is kept by the down-sampling rule (and remembered).
    fn keep(&self, device: &str, code: &str, time: f64) -> bool {
        let Some(every) = self.min_interval else {
            return true;
        };
        let mut last = self.last_kept.lock().expect("down-sampling state");
        let key = (device.to_string(), code.to_string());
        match last.get(&key) {
            Some(t) if time >= *t && time - t < every.as_secs_f64() => false,
            _ => {
                last.insert(key, time);
                true
            }
        }
    }
}

/// One resolved SenML record.
struct Record {
    name: String,
    time: f64,
    unit: String,
    value: f64,
}

/// Resolves SenML base fields into each record (RFC 8428 §4.6).
fn records(pack: &[Value], now: f64) -> Result<Vec<Record>, String> {
    let (mut bn, mut bt, mut bu, mut bv) = (String::new(), 0.0, String::new(), 0.0);
    let mut out = Vec::new();
    for (i, r) in pack.iter().enumerate() {
        if let Some(v) = r.get("bn").and_then(Value::as_str) {
            bn = v.to_string();
        }
        if let Some(v) = r.get("bt").and_then(Value::as_f64) {
            bt = v;
        }
        if let Some(v) = r.get("bu").and_then(Value::as_str) {
            bu = v.to_string();
        }
        if let Some(v) = r.get("bv").and_then(Value::as_f64) {
            bv = v;
        }
        let Some(v) = r.get("v") else {
            // A string, boolean or data value, or a record of base fields only: no vital sign.
            continue;
        };
        let value = v
            .as_f64()
            .ok_or_else(|| format!("record {i}: `v` is not a number"))?;
        let n = r.get("n").and_then(Value::as_str).unwrap_or_default();
        let full = format!("{bn}{n}");
        // The measurement: the record's name, else the end of the base name.
        let name = if n.is_empty() {
            full.rsplit([':', '/'])
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            n.to_string()
        };
        let t = bt + r.get("t").and_then(Value::as_f64).unwrap_or(0.0);
        let time = if t.abs() < RELATIVE_LIMIT { now + t } else { t };
        let unit = r
            .get("u")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| bu.clone());
        out.push(Record {
            name,
            time,
            unit,
            value: bv + value,
        });
    }
    Ok(out)
}

fn rfc3339(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn reference(r: &str) -> Value {
    json!({ "reference": r })
}

impl Transform for VitalSigns {
    fn kind(&self) -> &'static str {
        "vital-signs"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Telemetry(reading) = input else {
            return Err("a vital-signs transform reads device readings".into());
        };
        let Some(link) = &reading.subject else {
            return Err(format!(
                "device `{}`: its patient or location is looked up when the reading arrives; \
                 a reading processed again has none",
                reading.device
            ));
        };
        let entries = match &reading.payload {
            Value::Array(pack) => self.senml_observations(&reading.device, link, pack)?,
            Value::Object(observation) => vec![from_observation(link, observation.clone())],
            _ => return Err("a reading is SenML or a FHIR Observation".into()),
        };
        if entries.is_empty() {
            return Ok(Routing::Drop(
                "no vital sign in the reading, or all down-sampled (min_interval)".into(),
            ));
        }
        let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
        Ok(Routing::Deliver(Output::to_each(
            &self.destinations,
            &bundle,
        )?))
    }
}

impl VitalSigns {
    fn senml_observations(
        &self,
        device: &str,
        link: &DeviceLink,
        pack: &[Value],
    ) -> Result<Vec<Value>, String> {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let mut entries = Vec::new();
        for r in records(pack, now)? {
            let Some(sign) = table().get(&r.name.to_lowercase()) else {
                continue;
            };
            if !self.keep(device, &sign.loinc, r.time) {
                continue;
            }
            let unit = match ucum(&r.unit) {
                "" => sign.ucum.as_str(),
                u => u,
            };
            let key = format!("{device}/{}/{}", sign.loinc, rfc3339(r.time));
            let observation = json!({
                "resourceType": "Observation",
                "meta": { "profile": [VITAL_SIGNS] },
                "identifier": [{ "system": READING_SYSTEM, "value": key }],
                "status": "final",
                "category": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs", "display": "Vital Signs" }] }],
                "code": {
                    "coding": [{ "system": "http://loinc.org", "code": sign.loinc, "display": sign.display }],
                    "text": sign.display,
                },
                "subject": reference(&link.subject),
                "device": reference(&link.device),
                "effectiveDateTime": rfc3339(r.time),
                "valueQuantity": {
                    "value": r.value, "unit": unit,
                    "system": "http://unitsofmeasure.org", "code": unit,
                },
            });
            entries.push(json!({
                "resource": observation,
                "request": {
                    "method": "POST", "url": "Observation",
                    "ifNoneExist": format!("identifier={READING_SYSTEM}|{key}"),
                },
            }));
        }
        Ok(entries)
    }
}

/// A FHIR Observation sent by a device: its subject and device filled in when absent, a
/// conditional create on its first identifier when it has one.
fn from_observation(link: &DeviceLink, mut obj: Map<String, Value>) -> Value {
    obj.entry("subject")
        .or_insert_with(|| reference(&link.subject));
    obj.entry("device")
        .or_insert_with(|| reference(&link.device));
    obj.remove("id");
    let mut request = json!({ "method": "POST", "url": "Observation" });
    if let Some(i) = obj.get("identifier").and_then(|i| i.get(0))
        && let (Some(s), Some(v)) = (i["system"].as_str(), i["value"].as_str())
    {
        request["ifNoneExist"] = json!(format!("identifier={s}|{v}"));
    }
    json!({ "resource": obj, "request": request })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::input::Reading;

    fn reading(payload: Value) -> Input<'static> {
        Input::Telemetry(Reading {
            payload,
            device: "mon-7".into(),
            subject: Some(DeviceLink {
                device: "Device/d1".into(),
                subject: "Patient/p1".into(),
            }),
        })
    }

    fn observations(t: &VitalSigns, payload: Value) -> Vec<Value> {
        match t.apply(&reading(payload)).unwrap() {
            Routing::Deliver(out) => {
                let b: Value = serde_json::from_slice(out[0].payload.as_ref().unwrap()).unwrap();
                b["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["resource"].clone())
                    .collect()
            }
            Routing::Drop(_) => vec![],
        }
    }

    #[test]
    fn senml_records_become_vital_signs_with_loinc_and_ucum() {
        let t = VitalSigns::new(vec!["store".into()], None);
        let pack = json!([
            {"bn": "urn:dev:mon-7:", "bt": 1.7e9, "n": "heart-rate", "u": "beat/min", "v": 72},
            {"n": "spo2", "u": "%", "v": 97, "t": 1},
            {"n": "systolic", "u": "mmHg", "v": 121},
            {"n": "battery", "u": "%", "v": 80},
            {"n": "label", "vs": "ok"}
        ]);
        let obs = observations(&t, pack);
        assert_eq!(
            obs.len(),
            3,
            "the battery and the string are no vital signs"
        );
        assert_eq!(obs[0]["code"]["coding"][0]["code"], "8867-4");
        assert_eq!(obs[0]["valueQuantity"]["code"], "/min");
        assert_eq!(obs[0]["effectiveDateTime"], "2023-11-14T22:13:20.000Z");
        assert_eq!(obs[1]["effectiveDateTime"], "2023-11-14T22:13:21.000Z");
        assert_eq!(obs[2]["valueQuantity"]["code"], "mm[Hg]");
        assert_eq!(obs[0]["subject"]["reference"], "Patient/p1");
        assert_eq!(obs[0]["meta"]["profile"][0], VITAL_SIGNS);
        assert_eq!(
            obs[0]["identifier"][0]["value"],
            "mon-7/8867-4/2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn a_declared_interval_down_samples_a_stream() {
        let t = VitalSigns::new(vec!["store".into()], Some(Duration::from_secs(60)));
        let at = |s: f64| json!([{"n": "hr", "u": "/min", "v": 70, "t": 1.7e9 + s}]);
        let kept: Vec<usize> = [0.0, 1.0, 30.0, 60.0, 61.0, 125.0]
            .iter()
            .map(|s| observations(&t, at(*s)).len())
            .collect();
        assert_eq!(kept, [1, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn bad_readings_say_why() {
        let t = VitalSigns::new(vec!["store".into()], None);
        let e = t
            .apply(&reading(json!([{"n": "hr", "v": "fast"}])))
            .unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let unlinked = Input::Telemetry(Reading {
            payload: json!([]),
            device: "x".into(),
            subject: None,
        });
        assert!(t.apply(&unlinked).is_err());
    }
}
