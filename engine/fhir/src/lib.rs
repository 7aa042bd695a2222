//! Passerelle's canonical FHIR R4 store: versioned resources on SQLite (embedded default) or
//! PostgreSQL through one code path, search over index tables, batch and transaction
//! Bundles, and an ordered change feed. Resources are `serde_json` values checked for the
//! structure the store relies on; the HTTP layer lives in the engine.

pub mod bundle;
pub mod datetime;
pub mod error;
pub mod extract;
pub mod feed;
pub mod fhirpath_patch;
pub mod merge;
pub mod normalize;
pub mod ops;
pub mod registry;
pub mod render;
pub mod search;
pub mod store;
mod supersede;
pub mod types;

pub use error::{FhirError, FhirResult, IssueType};
pub use store::{Backend, Expect, Sealer, Store, Stored};
