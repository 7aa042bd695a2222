//! The journal refuses to open with a key that is not the one its messages are sealed with.

use std::sync::Arc;

use passerelle::crypto::Cipher;
use passerelle::journal::*;
use sqlx::Executor;

fn cipher(byte: u8) -> Arc<Cipher> {
    Arc::new(Cipher::from_key(&[byte; 32]))
}

fn message(control_id: &str) -> NewMessage {
    NewMessage {
        channel: "in".into(),
        source: "mllp".into(),
        peer: None,
        received_at: now_micros(),
        control_id: Some(control_id.into()),
        sender: "LAB^HOSP".into(),
        message_type: Some("ADT^A01".into()),
        content_type: "application/hl7-v2".into(),
        raw: format!("MSH|^~\\&|LAB|HOSP|||20240101||ADT^A01|{control_id}|P|2.5\rPID|1||X")
            .into_bytes(),
        status: Status::Received,
        ack: Some("AA".into()),
        error: None,
        receive_us: 1,
        outcome: None,
    }
}

async fn has_key_check(url: &str) -> bool {
    let mut conn = open_connection(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta WHERE key = 'key_check'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n == 1
}

#[tokio::test]
async fn a_new_journal_remembers_its_key_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let url = default_url(dir.path());
    let j = Journal::open(&url, cipher(1)).await.unwrap();
    j.flush().await.unwrap();
    drop(j);
    assert!(has_key_check(&url).await);

    let err = Journal::open(&url, cipher(2))
        .await
        .err()
        .expect("wrong key refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("the encryption key does not match this journal"),
        "{text}"
    );
    assert!(
        text.contains("the key given"),
        "names where the key came from: {text}"
    );

    // The right key still opens it, even with no message in it yet.
    let j = Journal::open(&url, cipher(1)).await.unwrap();
    j.flush().await.unwrap();
}

#[tokio::test]
async fn a_journal_without_key_check_gets_one_only_if_its_messages_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let url = default_url(dir.path());
    let j = Journal::open(&url, cipher(1)).await.unwrap();
    j.append(message("C1")).await.unwrap();
    j.append(message("C2")).await.unwrap();
    j.flush().await.unwrap();
    drop(j);
    // As a journal made before check values existed.
    let mut conn = open_connection(&url).await.unwrap();
    conn.execute("DELETE FROM meta").await.unwrap();
    drop(conn);

    let err = Journal::open(&url, cipher(2))
        .await
        .err()
        .expect("wrong key refused");
    assert!(format!("{err:#}").contains("does not decrypt"), "{err:#}");
    assert!(
        !has_key_check(&url).await,
        "no check value written for a wrong key"
    );

    let j = Journal::open(&url, cipher(1)).await.unwrap();
    j.flush().await.unwrap();
    drop(j);
    assert!(has_key_check(&url).await);
    assert!(Journal::open(&url, cipher(2)).await.is_err());
}
