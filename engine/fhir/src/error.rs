//! Every failure of the store as a FHIR error: an HTTP status and an OperationOutcome issue,
//! so the REST layer never has to guess what went wrong or invent a 500.

use serde_json::{Value, json};

/// The OperationOutcome `issue.code` values the store uses (FHIR value set `issue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    NotFound,
    Deleted,
    Conflict,
    Duplicate,
    MultipleMatches,
    NotSupported,
    Forbidden,
    Login,
    Security,
    TooCostly,
    Processing,
    Transient,
    Exception,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::NotFound => "not-found",
            Self::Deleted => "deleted",
            Self::Conflict => "conflict",
            Self::Duplicate => "duplicate",
            Self::MultipleMatches => "multiple-matches",
            Self::NotSupported => "not-supported",
            Self::Forbidden => "forbidden",
            Self::Login => "login",
            Self::Security => "security",
            Self::TooCostly => "too-costly",
            Self::Processing => "processing",
            Self::Transient => "transient",
            Self::Exception => "exception",
        }
    }
}

/// A failed FHIR interaction: what the client gets back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {}: {diagnostics}", kind.code())]
pub struct FhirError {
    pub status: u16,
    pub kind: IssueType,
    pub diagnostics: String,
    /// FHIRPath-like location of the problem (`Bundle.entry[49].resource`), when known.
    pub expression: Option<String>,
}

pub type FhirResult<T> = Result<T, FhirError>;

impl FhirError {
    pub fn new(status: u16, kind: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(400, IssueType::Invalid, diagnostics)
    }

    pub fn structure(diagnostics: impl Into<String>) -> Self {
        Self::new(400, IssueType::Structure, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(404, IssueType::NotFound, diagnostics)
    }

    pub fn gone(diagnostics: impl Into<String>) -> Self {
        Self::new(410, IssueType::Deleted, diagnostics)
    }

    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::new(400, IssueType::NotSupported, diagnostics)
    }

    pub fn conflict(diagnostics: impl Into<String>) -> Self {
        Self::new(409, IssueType::Conflict, diagnostics)
    }

    pub fn precondition(diagnostics: impl Into<String>) -> Self {
        Self::new(412, IssueType::Conflict, diagnostics)
    }

    pub fn multiple_matches(diagnostics: impl Into<String>) -> Self {
        Self::new(412, IssueType::MultipleMatches, diagnostics)
    }

    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(403, IssueType::Forbidden, diagnostics)
    }

    pub fn internal(diagnostics: impl Into<String>) -> Self {
        Self::new(500, IssueType::Exception, diagnostics)
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// Prefixes the location, e.g. a resource's error inside `Bundle.entry[3]`.
    pub fn within(mut self, outer: &str) -> Self {
        self.expression = Some(match self.expression.take() {
            Some(inner) => format!("{outer}.{inner}"),
            None => outer.to_string(),
        });
        self.diagnostics = format!("{outer}: {}", self.diagnostics);
        self
    }

    pub fn outcome(&self) -> Value {
        let severity = if self.status >= 500 { "fatal" } else { "error" };
        operation_outcome(
            severity,
            self.kind.code(),
            &self.diagnostics,
            self.expression.as_deref(),
        )
    }
}

/// A one-issue OperationOutcome.
pub fn operation_outcome(
    severity: &str,
    code: &str,
    diagnostics: &str,
    expression: Option<&str>,
) -> Value {
    let mut issue = json!({ "severity": severity, "code": code, "diagnostics": diagnostics });
    if let Some(e) = expression {
        issue["expression"] = json!([e]);
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

impl From<sqlx::Error> for FhirError {
    fn from(e: sqlx::Error) -> Self {
        // Database failures are the server's problem, never the client's: 500 with the cause
        // (the SQL error text carries no health data, only table and constraint names).
        Self::internal(format!("database error: {e}"))
    }
}
