//! The partner clinic's keys of a channel file: the `fhir-transaction` transform and the
//! `fhir` destination (another FHIR server, with a bearer token or OAuth2 client credentials).

use std::sync::Arc;

use super::Checker;
use crate::channel::destination::{FhirAuth, FhirRestConfig};
use crate::channel::doc::{DestinationDoc, Text, TransformDoc};
use crate::channel::transform::{FhirTransaction, Transform};

fn is_http_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://")
}

impl Checker<'_> {
    /// A value that may be left empty by `${VAR:-}`: None when empty or unset.
    fn optional(&mut self, text: Option<&Text>) -> Option<String> {
        self.value(text?).filter(|v| !v.is_empty())
    }

    pub(super) fn fhir_destination(&mut self, doc: &DestinationDoc) -> Option<FhirRestConfig> {
        let http = self.http_destination(
            doc,
            "fhir",
            "where the Bundle is POSTed (the server's base URL)",
        )?;
        let auth = self.fhir_auth(doc);
        Some(FhirRestConfig { http, auth })
    }

    /// `token_url` (with `client_id` and `client_secret`) wins over `token`; both may be
    /// `${VAR:-}` left empty, so one channel file serves either way of authenticating.
    fn fhir_auth(&mut self, doc: &DestinationDoc) -> FhirAuth {
        let token = self.optional(doc.token.as_ref());
        let token_url = self.optional(doc.token_url.as_ref());
        let client_id = self.optional(doc.client_id.as_ref());
        let client_secret = self.optional(doc.client_secret.as_ref());
        let scope = self.optional(doc.scope.as_ref());
        let Some(token_url) = token_url else {
            if let Some(at) = doc.client_id.as_ref().filter(|_| client_id.is_some()) {
                self.error(
                    at,
                    "`client_id` needs `token_url`, the OAuth2 token endpoint",
                );
            }
            return token.map_or(FhirAuth::None, FhirAuth::Bearer);
        };
        if !is_http_url(&token_url) {
            let at = doc.token_url.as_ref().unwrap_or(&doc.kind);
            self.error(at, format!("`{token_url}` is not an http(s) URL"));
        }
        match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) => FhirAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            },
            _ => {
                let at = doc.token_url.as_ref().unwrap_or(&doc.kind);
                self.error(at, "`token_url` needs `client_id` and `client_secret`");
                FhirAuth::None
            }
        }
    }

    pub(super) fn fhir_transaction(
        &mut self,
        doc: &TransformDoc,
        destinations: &[String],
    ) -> Option<Arc<dyn Transform>> {
        self.require_store_source(doc, "the store's changes");
        let Some(system) = &doc.identifier_system else {
            self.error(
                &doc.kind,
                "fhir-transaction needs `identifier_system`, the system of the identifiers made \
                 from this store's ids (e.g. the hospital's FHIR base URL)",
            );
            return None;
        };
        let identifier_system = self.value(system).unwrap_or_default();
        if identifier_system.contains(['|', ' ']) {
            self.error(system, format!("`{identifier_system}` is not a URI"));
        }
        let mut upsert = Vec::new();
        for t in doc.upsert.iter().flatten() {
            if passerelle_fhir::types::is_resource_type(t.as_str()) {
                upsert.push(t.as_str().to_string());
            } else {
                self.error(
                    t,
                    format!("`{}` is not a FHIR R4 resource type", t.as_str()),
                );
            }
        }
        Some(Arc::new(FhirTransaction {
            identifier_system,
            upsert,
            destinations: destinations.to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::channel::destination::DestinationKind;
    use crate::channel::load::parse;

    const GOOD: &str = "source:\n  type: store\n  subscription: ServiceRequest\ntransform:\n  type: fhir-transaction\n  identifier_system: https://h.test/fhir\n  upsert: [Task]\ndestinations:\n  - id: clinic\n    type: fhir\n    url: https://clinic.test/fhir\n    token_url: https://clinic.test/api/oauth/token\n    client_id: hospital\n    client_secret: s3cret\n    scope: system/*.*\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("c.yaml"), text) {
            Ok(_) => vec![],
            Err(list) => list.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_fhir_destination_with_client_credentials_or_a_token() {
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        let DestinationKind::Fhir(fhir) = &c.destinations[0].kind else {
            panic!("{:?}", c.destinations[0].kind)
        };
        assert_eq!(fhir.http.url, "https://clinic.test/fhir");
        assert_eq!(
            fhir.auth,
            super::FhirAuth::ClientCredentials {
                token_url: "https://clinic.test/api/oauth/token".into(),
                client_id: "hospital".into(),
                client_secret: "s3cret".into(),
                scope: Some("system/*.*".into()),
            }
        );
        let bearer = GOOD.replace(
            "    token_url: https://clinic.test/api/oauth/token\n    client_id: hospital\n    client_secret: s3cret\n    scope: system/*.*\n",
            "    token: abc\n",
        );
        let c = parse(Path::new("c.yaml"), &bearer).unwrap();
        assert!(
            matches!(&c.destinations[0].kind, DestinationKind::Fhir(f) if f.auth == super::FhirAuth::Bearer("abc".into()))
        );
        let none = bearer.replace(
            "    token: abc\n",
            "    token: \"${PASSERELLE_TEST_UNSET_TOKEN:-}\"\n",
        );
        let c = parse(Path::new("c.yaml"), &none).unwrap();
        assert!(
            matches!(&c.destinations[0].kind, DestinationKind::Fhir(f) if f.auth == super::FhirAuth::None)
        );
    }

    #[test]
    fn fhir_errors_point_at_the_key() {
        let one = |text: String, expected: &str| {
            let e = errors(&text);
            assert!(
                e.len() == 1 && e[0].contains(expected),
                "{e:?} / {expected}"
            );
        };
        one(
            GOOD.replace("    client_secret: s3cret\n", ""),
            "c.yaml:12:16: `token_url` needs `client_id` and `client_secret`",
        );
        one(
            GOOD.replace("https://clinic.test/fhir", "clinic.test/fhir"),
            "c.yaml:11:10: `clinic.test/fhir` is not an http(s) URL",
        );
        one(
            GOOD.replace("  upsert: [Task]", "  upsert: [Tsk]"),
            "c.yaml:7:12: `Tsk` is not a FHIR R4 resource type",
        );
        one(
            GOOD.replace("  identifier_system: https://h.test/fhir\n", ""),
            "fhir-transaction needs `identifier_system`",
        );
        let file =
            errors(&GOOD.replace("    type: fhir\n", "    type: file\n    directory: out\n"));
        assert_eq!(file.len(), 4, "{file:?}");
        assert!(
            file[0].ends_with("c.yaml:13:5: `token_url` does not apply to a file destination"),
            "{file:?}"
        );
        one(
            GOOD.replace("    type: fhir\n    url: https://clinic.test/fhir\n    token_url: https://clinic.test/api/oauth/token\n    client_id: hospital\n    client_secret: s3cret\n    scope: system/*.*\n", "    type: file\n    directory: out\n")
                .replace("type: fhir-transaction\n  identifier_system: https://h.test/fhir\n  upsert: [Task]", "type: pass-through\n  upsert: [Task]"),
            "`upsert` does not apply to a pass-through transform",
        );
    }
}
