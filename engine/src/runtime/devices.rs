//! The device registry: which patient (or location) a device's readings belong to. Devices
//! are FHIR Device resources, managed through the FHIR API like any other: the Device whose
//! identifier has the device's id as its value, and its `patient` (else its `location`). Looked
//! up when a reading arrives, and kept a short while, so a stream of readings costs one search.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passerelle_fhir::Store;
use serde_json::Value;

use crate::channel::input::DeviceLink;

/// How long a device's link is trusted before it is looked up again (a Device re-assigned to
/// another patient is followed within this).
const KNOWN: Duration = Duration::from_secs(30);
/// How long an unknown device stays unknown: registering one takes effect within this.
const UNKNOWN: Duration = Duration::from_secs(5);

/// A device's link, or why there is none, and when it was looked up.
type Known = (Result<DeviceLink, String>, Instant);

pub struct DeviceRegistry {
    store: Arc<Store>,
    cache: Mutex<HashMap<String, Known>>,
}

impl DeviceRegistry {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// What the device is linked to, or why its readings cannot be filed.
    pub async fn link(&self, device: &str) -> Result<DeviceLink, String> {
        if let Some((found, at)) = self.cache.lock().expect("devices").get(device) {
            let ttl = if found.is_ok() { KNOWN } else { UNKNOWN };
            if at.elapsed() < ttl {
                return found.clone();
            }
        }
        let found = self.look_up(device).await;
        // A failing store is not an answer about the device: not kept.
        if found.as_ref().is_ok() || found.as_ref().is_err_and(|e| !e.starts_with("store:")) {
            let mut cache = self.cache.lock().expect("devices");
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(device.to_string(), (found.clone(), Instant::now()));
        }
        found
    }

    async fn look_up(&self, device: &str) -> Result<DeviceLink, String> {
        let pairs = vec![
            ("identifier".to_string(), escape(device)),
            ("_count".to_string(), "2".to_string()),
        ];
        let query = passerelle_fhir::search::parse::parse("Device", &pairs, false)
            .map_err(|e| format!("device `{device}`: {}", e.diagnostics))?;
        let page = self
            .store
            .search(&query)
            .await
            .map_err(|e| format!("store: {}", e.diagnostics))?;
        let devices: Vec<(&str, &Value)> = page
            .matches
            .iter()
            .filter_map(|s| s.body.as_ref().map(|b| (s.id.as_str(), b)))
            .collect();
        let (id, body) = match devices.as_slice() {
            [] => {
                return Err(format!(
                    "unknown device `{device}`: register it as a FHIR Device whose identifier \
                     value is {device}, with its patient (Device.patient) or location"
                ));
            }
            [one] => *one,
            _ => {
                return Err(format!(
                    "device `{device}`: several Device resources have this identifier"
                ));
            }
        };
        let linked = body["patient"]["reference"]
            .as_str()
            .or_else(|| body["location"]["reference"].as_str())
            .ok_or_else(|| {
                format!("device `{device}` (Device/{id}) is linked to no patient or location")
            })?;
        Ok(DeviceLink {
            device: format!("Device/{id}"),
            subject: linked.to_string(),
        })
    }
}

/// A token search value: `,`, `|`, `$` and `\` escaped (FHIR search, "Escaping").
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '|' | '$' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
