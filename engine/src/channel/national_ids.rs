//! The French national identifier systems the outbound documents write (see FRANCE.md in the
//! design material): the patient's INS, professionals (RPPS) and structures (FINESS), as FHIR
//! names them and as CDA and XDS write them (OIDs).

/// INS roots: INS-NIR, INS-NIA, and the test and demonstration NIR.
pub const INS_OIDS: [&str; 4] = [
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
    "1.2.250.1.213.1.4.11",
];
/// The RPPS and FINESS as FHIR identifier systems.
pub const RPPS: &str = "https://rpps.esante.gouv.fr";
pub const FINESS: &str = "https://finess.esante.gouv.fr";
/// The national professional identifiers (0 + ADELI, 8 + RPPS).
pub const IDNPS: &str = "1.2.250.1.71.4.2.1";
/// The national structure identifiers (1 + FINESS, 2 + SIREN, 3 + SIRET...).
pub const IDNST: &str = "1.2.250.1.71.4.2.2";
