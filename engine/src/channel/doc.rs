//! The channel file as written by an analyst, with the position of every value so that
//! `passerelle check` can point at it. [`super::load`] turns it into a [`super::Channel`].

use marked_yaml::Spanned;
use serde::Deserialize;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDoc {
    /// Defaults to the file name without extension.
    pub id: Option<Text>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub source: SourceDoc,
    #[serde(default)]
    pub filters: Vec<Spanned<ConditionDoc>>,
    pub transform: Option<TransformDoc>,
    #[serde(default)]
    pub destinations: Vec<DestinationDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    #[serde(rename = "type")]
    pub kind: Text,
    /// Listening address (MLLP); defaults to the server's `--mllp` address.
    pub address: Option<Text>,
    /// Character set assumed when MSH-18 is empty: `UTF-8` (default), `8859/1`, `8859/15`, `ASCII`.
    pub charset: Option<Text>,
    /// `http`: what the endpoint takes (`fhir`).
    pub content: Option<Text>,
    /// `http`: how long a request waits for the store's answer before `202 Accepted`
    /// (default 30s).
    pub reply_timeout: Option<Text>,
    /// `file`: the directory files are dropped in.
    pub directory: Option<Text>,
    /// `file`: how often the directory is looked at (default 2s).
    pub poll: Option<Text>,
    /// `mqtt`: the topic filters to subscribe to (`devices/+/telemetry`).
    pub topics: Option<Vec<Text>>,
    /// `mqtt`: the broker URL (default: the server's `--mqtt`).
    pub broker: Option<Text>,
    /// `mqtt`: the client id (default: `passerelle-` and the channel id).
    pub client_id: Option<Text>,
    /// `store`: the FHIR search criteria of the changes taken (`MedicationRequest?intent=order`).
    pub subscription: Option<Text>,
    /// `store`: reference elements whose targets are added to the message (`subject`).
    pub include: Option<Vec<Text>>,
    /// `store`: where a new subscriber starts, `now` (default) or `beginning`.
    pub start: Option<Text>,
    /// `store`: resources that refer to the message's resources, `Type:search-parameter`
    /// (`Consent:patient`: the consents of the included patient).
    pub revinclude: Option<Vec<Text>>,
}

/// A filter condition: `field` with exactly one of the tests, a `message_type` list, an `any`
/// or an `all` group. An item holding several of these kinds holds when each of them holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionDoc {
    pub field: Option<Text>,
    pub equals: Option<Text>,
    pub not_equals: Option<Text>,
    #[serde(rename = "in")]
    pub one_of: Option<Vec<Text>>,
    pub not_in: Option<Vec<Text>>,
    pub starts_with: Option<Text>,
    pub exists: Option<Spanned<bool>>,
    pub message_type: Option<Vec<Text>>,
    pub any: Option<Vec<Spanned<ConditionDoc>>>,
    pub all: Option<Vec<Spanned<ConditionDoc>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformDoc {
    #[serde(rename = "type")]
    pub kind: Text,
    /// For `route-by-message-type`: `ADT: [archive]`, `ORU^R01: [lab, archive]`.
    pub routes: Option<Vec<RouteDoc>>,
    /// For `route-by-message-type`: destinations of messages no route matches (else
    /// filtered). For `mapping`: the destinations of the output Bundle (default: all).
    pub default: Option<Vec<Text>>,
    /// For `mapping`: the ids of the mappings to try, in order; the first whose `messages`
    /// include the message's type applies (none: the message is filtered).
    pub mappings: Option<Vec<Text>>,
    /// For `fhir`: identifier systems rewritten on the way in.
    pub identifier_systems: Option<Vec<SystemRewriteDoc>>,
    /// For `fhir`: profiles declared in `meta.profile` of the resources of a type.
    pub profiles: Option<Vec<ProfileDoc>>,
    /// For `vital-signs`: keep a measurement of a device at most this often (e.g. 60s).
    pub min_interval: Option<Text>,
    /// For `mssante`: the sending mailbox (`Name <box@domain>`); `${VAR}` allowed.
    pub sender: Option<Text>,
    /// For `mssante`, `xds-provide`: the OID of the sending system (`XDSSubmissionSet.sourceId`).
    pub source_id: Option<Text>,
    /// For `xds-provide`: the repository's address, as WS-Addressing `To`.
    pub repository: Option<Text>,
    /// For `xds-provide`: the VIHF (the DMP's SAML assertion) or what to build it with.
    pub vihf: Option<VihfDoc>,
    /// For `fhir-transaction`: the system of the identifiers made from this store's ids.
    pub identifier_system: Option<Text>,
    /// For `fhir-transaction`: resource types sent as conditional updates (besides the
    /// changed resource's type).
    pub upsert: Option<Vec<Text>>,
    /// For `cda-document`: the CI-SIS document written (`cr-bio`).
    pub volet: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VihfDoc {
    /// A file holding the signed assertion, inserted as it is.
    pub assertion: Option<Text>,
    /// Else an unsigned one is built: the software's name, version and DMP homologation id.
    pub software: Option<Text>,
    pub software_version: Option<Text>,
    pub homologation: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRewriteDoc {
    pub from: Text,
    pub to: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDoc {
    pub resource: Text,
    pub profile: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    pub message_type: Text,
    pub destinations: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationDoc {
    pub id: Text,
    #[serde(rename = "type")]
    pub kind: Text,
    /// `file`: the directory to write to.
    pub directory: Option<Text>,
    /// `file`: name template; `{id}`, `{control_id}`, `{message_type}` (`ADT_A01`), `{channel}`,
    /// `{destination}` and `{generation}` are replaced.
    pub file_name: Option<Text>,
    /// `mllp`: `host:port` of the peer.
    pub address: Option<Text>,
    /// `mllp`: how long to wait for the peer's ACK (default 30s).
    pub ack_timeout: Option<Text>,
    /// `mllp`, `smtp`: how long to wait for the connection (default 10s).
    pub connect_timeout: Option<Text>,
    /// `smtp`: `starttls` (default), `tls` (implicit, port 465) or `none` (local tests only).
    pub tls: Option<Text>,
    /// `smtp`: PEM file of the client certificate (MSSanté operators authenticate with it).
    pub client_certificate: Option<Text>,
    /// `smtp`: PEM file of the client certificate's private key.
    pub client_key: Option<Text>,
    /// `smtp`: PEM file of the CA certificates the server must chain to (default: the system's).
    pub ca_file: Option<Text>,
    /// `smtp`: AUTH user name, with `password`.
    pub username: Option<Text>,
    pub password: Option<Text>,
    /// `xds`: the repository's ITI-41 endpoint (http or https).
    pub url: Option<Text>,
    /// `xds`: how long the whole exchange may take, answer included (default 60s).
    pub timeout: Option<Text>,
    /// `fhir`: a bearer token sent as it is.
    pub token: Option<Text>,
    /// `fhir`: OAuth2 client credentials: the token endpoint, the client, the scope asked.
    pub token_url: Option<Text>,
    pub client_id: Option<Text>,
    pub client_secret: Option<Text>,
    pub scope: Option<Text>,
    pub retry: Option<RetryDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryDoc {
    /// Attempts before the dead letter (default 10; 0 = retry for ever).
    pub max_attempts: Option<Spanned<u32>>,
    pub initial_backoff: Option<Text>,
    pub max_backoff: Option<Text>,
    pub multiplier: Option<Spanned<f64>>,
    /// Random spread of each delay, 0.0–1.0 (default 0.2).
    pub jitter: Option<Spanned<f64>>,
}
