//! What the HTTP destinations (`xds`, `fhir`) share in a channel file: the `url`, the keys
//! that do not apply to them, the TLS files and the timeouts.

use std::time::Duration;

use super::Checker;
use crate::channel::destination::{HttpSettings, HttpTls};
use crate::channel::doc::DestinationDoc;

impl Checker<'_> {
    /// `url` (required: `needs` says what it is), the refused keys, the TLS files, the
    /// timeouts of an HTTP destination of type `kind`.
    pub(super) fn http_destination(
        &mut self,
        doc: &DestinationDoc,
        kind: &str,
        needs: &str,
    ) -> Option<HttpSettings> {
        let Some(url) = &doc.url else {
            self.error(
                &doc.kind,
                format!("an {kind} destination needs `url`, {needs}"),
            );
            return None;
        };
        let value = self.value(url).unwrap_or_default();
        if !(value.is_empty() || value.starts_with("http://") || value.starts_with("https://")) {
            self.error(url, format!("`{value}` is not an http(s) URL"));
        }
        self.refuse_keys(
            &format!("an {kind} destination"),
            &[
                ("address", doc.address.as_ref()),
                ("directory", doc.directory.as_ref()),
                ("file_name", doc.file_name.as_ref()),
                ("ack_timeout", doc.ack_timeout.as_ref()),
                ("tls", doc.tls.as_ref()),
                ("username", doc.username.as_ref()),
                ("password", doc.password.as_ref()),
            ],
        );
        if doc.client_certificate.is_some() != doc.client_key.is_some() {
            let at = doc.client_certificate.as_ref().or(doc.client_key.as_ref());
            self.error(
                at.unwrap_or(&doc.kind),
                "`client_certificate` and `client_key` go together",
            );
        }
        let tls = HttpTls {
            certificate: self.existing_file(doc.client_certificate.as_ref()),
            key: self.existing_file(doc.client_key.as_ref()),
            ca: self.existing_file(doc.ca_file.as_ref()),
        };
        Some(HttpSettings {
            url: value,
            tls,
            connect_timeout: self.duration(doc.connect_timeout.as_ref(), Duration::from_secs(10)),
            timeout: self.duration(doc.timeout.as_ref(), Duration::from_secs(60)),
        })
    }
}
