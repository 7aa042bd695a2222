//! The store on SQLite (always) and PostgreSQL (when PASSERELLE_TEST_POSTGRES_URL names a
//! server's database; each test makes a fresh database of its own there): the same checks on
//! both. `.ci/run` starts a throwaway server for them (tests/e2e/postgres.py).

use std::sync::Arc;

use passerelle_fhir::feed::Feed;
use passerelle_fhir::search::parse::parse;
use passerelle_fhir::{Expect, Sealer, Store, bundle};
use serde_json::{Value, json};

/// Reversible and visibly not clear text: enough to check the store never keeps JSON in clear.
struct Scramble;

impl Sealer for Scramble {
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = aad.to_vec();
        out.push(0);
        out.extend(plain.iter().map(|b| b ^ 0x5a));
        out
    }
    fn open(&self, blob: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let rest = blob
            .strip_prefix(aad)
            .and_then(|r| r.strip_prefix(&[0]))
            .ok_or_else(|| anyhow::anyhow!("wrong row"))?;
        Ok(rest.iter().map(|b| b ^ 0x5a).collect())
    }
}

async fn stores() -> Vec<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fhir.db").display());
    let mut out = vec![(dir, Store::open(&url, Arc::new(Scramble)).await.unwrap())];
    if let Ok(pg) = std::env::var("PASSERELLE_TEST_POSTGRES_URL") {
        let url = fresh_database(&pg).await;
        out.push((
            tempfile::tempdir().unwrap(),
            Store::open(&url, Arc::new(Scramble)).await.unwrap(),
        ));
    }
    out
}

/// Creates an empty database on the server of `url` and returns its URL: tests running in
/// parallel must not see each other's resources.
async fn fresh_database(url: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!(
        "store_test_{}",
        passerelle_fhir::types::new_id().replace('-', "")
    );
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = &base[..base.rfind('/').expect("a database URL has a path")];
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

fn pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded_pairs(q)
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn ids(store: &Store, t: &str, q: &str) -> Vec<String> {
    let query = parse(t, &pairs(q), true).unwrap();
    let mut ids: Vec<String> = store
        .search(&query)
        .await
        .unwrap()
        .matches
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn crud_versions_and_search() {
    for (_dir, store) in stores().await {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Bergère", "given": ["Anne"]}],
                       "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2800175123456"}],
                       "birthDate": "1980-05-01"});
        let w = store.create("Patient", p.clone(), None).await.unwrap();
        assert!(w.created);
        let id = w.stored.id.clone();
        let read = store.read("Patient", &id).await.unwrap();
        assert_eq!(read.version, 1);
        assert_eq!(read.body.as_ref().unwrap()["meta"]["versionId"], "1");

        let mut updated = read.body.clone().unwrap();
        updated["gender"] = json!("female");
        let w2 = store
            .update("Patient", &id, updated.clone(), Expect::Version(1))
            .await
            .unwrap();
        assert_eq!(w2.stored.version, 2);
        let stale = store
            .update("Patient", &id, updated, Expect::Version(1))
            .await
            .unwrap_err();
        assert_eq!(stale.status, 412);
        assert_eq!(store.vread("Patient", &id, 1).await.unwrap().version, 1);

        assert_eq!(
            ids(&store, "Patient", "family=bergere").await,
            vec![id.clone()]
        );
        assert_eq!(
            ids(&store, "Patient", "family=BERG").await,
            vec![id.clone()]
        );
        assert!(
            ids(&store, "Patient", "family:exact=bergere")
                .await
                .is_empty()
        );
        assert_eq!(
            ids(
                &store,
                "Patient",
                "identifier=urn:oid:1.2.250.1.213.1.4.8|2800175123456"
            )
            .await,
            vec![id.clone()]
        );
        assert_eq!(
            ids(&store, "Patient", "birthdate=ge1980-01-01&birthdate=lt1981").await,
            vec![id.clone()]
        );
        assert!(
            ids(&store, "Patient", "birthdate=gt1980-05-01")
                .await
                .is_empty()
        );

        // Conditional create finds the match instead of creating.
        let again = store
            .create(
                "Patient",
                p,
                Some("identifier=urn:oid:1.2.250.1.213.1.4.8|2800175123456"),
            )
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.stored.id, id);

        let gone = store
            .delete("Patient", &id, Expect::Any)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.version, 3);
        assert_eq!(store.read("Patient", &id).await.unwrap_err().status, 410);
        assert!(ids(&store, "Patient", "family=bergere").await.is_empty());
        let history = store
            .history(Some("Patient"), Some(&id), None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            history.iter().map(|h| h.version).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
    }
}

fn tx_bundle(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test]
async fn transactions_are_atomic_and_resolve_placeholders() {
    for (_dir, store) in stores().await {
        let ok = tx_bundle(vec![
            json!({"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                   "resource": {"resourceType": "Patient", "name": [{"family": "Durand"}]},
                   "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": {"resourceType": "Observation", "status": "final",
                                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
                   "request": {"method": "POST", "url": "Observation"}}),
        ]);
        let resp = bundle::process(&store, &ok, bundle::Return::Representation)
            .await
            .unwrap();
        let patient_ref = resp["entry"][0]["fullUrl"].as_str().unwrap().to_string();
        assert_eq!(
            resp["entry"][1]["resource"]["subject"]["reference"],
            patient_ref
        );
        let pid = patient_ref.split('/').nth(1).unwrap();
        assert_eq!(
            ids(&store, "Observation", &format!("subject=Patient/{pid}"))
                .await
                .len(),
            1
        );
        assert_eq!(
            ids(&store, "Observation", "subject:Patient.family=durand")
                .await
                .len(),
            1
        );

        let mut entries: Vec<Value> = (0..49)
            .map(|i| json!({"resource": {"resourceType": "Patient", "name": [{"family": format!("Rollback{i}")}]},
                            "request": {"method": "POST", "url": "Patient"}}))
            .collect();
        entries.push(
            json!({"resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
                            "request": {"method": "POST", "url": "Patient"}}),
        );
        let err = bundle::process(&store, &tx_bundle(entries), bundle::Return::Minimal)
            .await
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.diagnostics.contains("entry[49]"), "{}", err.diagnostics);
        assert!(
            ids(&store, "Patient", "family=rollback").await.is_empty(),
            "nothing left behind"
        );
    }
}

/// A key may include the resource it belongs to: an allergy keyed by its patient (a
/// `urn:uuid:` of the same Bundle, itself upserted) and its code is the same allergy when the
/// message comes again, and another patient's allergy to the same substance is another one.
#[tokio::test]
async fn conditional_criteria_resolve_earlier_entries() {
    for (_dir, store) in stores().await {
        let upsert = |ipp: &str| {
            tx_bundle(vec![
                json!({"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
                       "resource": {"resourceType": "Patient",
                                    "identifier": [{"system": "urn:ipp", "value": ipp}]},
                       "request": {"method": "PUT", "url": format!("Patient?identifier=urn:ipp|{ipp}")}}),
                json!({"fullUrl": "urn:uuid:33333333-3333-3333-3333-333333333333",
                       "resource": {"resourceType": "AllergyIntolerance",
                                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
                                    "patient": {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}},
                       "request": {"method": "PUT",
                                   "url": "AllergyIntolerance?patient=urn:uuid:22222222-2222-2222-2222-222222222222&code=http://snomed.info/sct|91936005"}}),
            ])
        };
        for ipp in ["A1", "A1", "B2"] {
            bundle::process(&store, &upsert(ipp), bundle::Return::Minimal)
                .await
                .unwrap();
        }
        let patients = ids(&store, "Patient", "").await;
        assert_eq!(patients.len(), 2);
        assert_eq!(ids(&store, "AllergyIntolerance", "").await.len(), 2);
        for pid in patients {
            assert_eq!(
                ids(
                    &store,
                    "AllergyIntolerance",
                    &format!("patient=Patient/{pid}")
                )
                .await
                .len(),
                1,
                "one allergy per patient"
            );
        }
    }
}

/// A peer's status update: a conditional PATCH (a JSON Patch in a Binary, as a transaction
/// carries it) sets the status of the one order with the identifier and leaves the rest; the
/// same status again makes no version; an unknown identifier fails with a 404.
#[tokio::test]
async fn conditional_patch_sets_what_it_says_and_only_once() {
    use base64::Engine;
    for (_dir, store) in stores().await {
        let order = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                           "identifier": [{"system": "urn:placer", "value": "RX-1"}],
                           "subject": {"display": "Durand"},
                           "medicationCodeableConcept": {"text": "paracetamol"}});
        let id = store
            .create("MedicationRequest", order, None)
            .await
            .unwrap()
            .stored
            .id;
        let complete = async |placer: &str| {
            let patch = json!([{"op": "add", "path": "/status", "value": "completed"}]);
            let bundle = tx_bundle(vec![json!({
                "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                             "data": base64::engine::general_purpose::STANDARD.encode(patch.to_string())},
                "request": {"method": "PATCH", "url": format!("MedicationRequest?identifier=urn:placer|{placer}")}})]);
            bundle::process(&store, &bundle, bundle::Return::Minimal).await
        };
        complete("RX-1").await.unwrap();
        let now = store.read("MedicationRequest", &id).await.unwrap();
        let body = now.body.unwrap();
        assert_eq!(
            (now.version, body["status"].as_str()),
            (2, Some("completed"))
        );
        assert_eq!(
            body["medicationCodeableConcept"]["text"], "paracetamol",
            "the rest kept"
        );
        complete("RX-1").await.unwrap();
        let again = store.read("MedicationRequest", &id).await.unwrap();
        assert_eq!(again.version, 2, "nothing changed: no version");
        let err = complete("RX-404").await.unwrap_err();
        assert_eq!(err.status, 404, "{}", err.diagnostics);
        assert!(
            err.diagnostics.contains("identifier=urn:placer|RX-404"),
            "{}",
            err.diagnostics
        );
    }
}

#[tokio::test]
async fn change_feed_filters_in_order_and_resumes_from_its_cursor() {
    for (_dir, store) in stores().await {
        let store = Arc::new(store);
        let start = store
            .changes_after(0, i64::MAX)
            .await
            .unwrap()
            .last()
            .map_or(0, |c| c.seq);
        let criteria = Some("MedicationRequest?status=active");
        let mut feed = Feed::open(store.clone(), "pharmacy", criteria, start)
            .await
            .unwrap();
        let order = |status: &str| {
            json!({"resourceType": "MedicationRequest", "status": status, "intent": "order",
                   "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "x"}})
        };
        let first = store
            .create("MedicationRequest", order("active"), None)
            .await
            .unwrap();
        store
            .create("MedicationRequest", order("draft"), None)
            .await
            .unwrap();
        store
            .create("Patient", json!({"resourceType": "Patient"}), None)
            .await
            .unwrap();
        let second = store
            .create("MedicationRequest", order("active"), None)
            .await
            .unwrap();

        let got = feed.next(100).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![first.stored.id.as_str(), second.stored.id.as_str()],
            "matching changes, in commit order"
        );
        assert_eq!(feed.cursor(), second.stored.seq);
        feed.ack().await.unwrap();

        // A new change wakes a waiting subscriber.
        let waiting = tokio::spawn(async move { feed.next(100).await.unwrap() });
        let third = store
            .create("MedicationRequest", order("active"), None)
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0].id, third.stored.id);

        // Reopened, the subscriber resumes after its last acknowledged change.
        let mut again = Feed::open(store.clone(), "pharmacy", criteria, 0)
            .await
            .unwrap();
        assert_eq!(again.cursor(), second.stored.seq);
        assert_eq!(again.next(100).await.unwrap()[0].id, third.stored.id);

        // A new subscriber's start is durable from its first open, before any ack: a
        // process that stops before the first change resumes where it started.
        let now = *store.subscribe().borrow();
        drop(
            Feed::open(store.clone(), "late", criteria, now)
                .await
                .unwrap(),
        );
        store
            .create("MedicationRequest", order("active"), None)
            .await
            .unwrap();
        let late = Feed::open(store.clone(), "late", criteria, 0)
            .await
            .unwrap();
        assert_eq!(late.cursor(), now);

        // Criteria are read at open: a resource type and a query the search understands.
        for bad in ["Medication Request", "MedicationRequest?colour=red"] {
            assert!(
                Feed::open(store.clone(), "bad", Some(bad), 0)
                    .await
                    .is_err(),
                "{bad}"
            );
        }
    }
}
