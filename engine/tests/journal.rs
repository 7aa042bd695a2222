//! The journal against a real SQLite database in a temporary data dir.

use std::sync::Arc;

use passerelle::crypto::Cipher;
use passerelle::journal::read::MessageQuery;
use passerelle::journal::*;

async fn journal(dir: &std::path::Path) -> Journal {
    let cipher = Arc::new(Cipher::from_key(&[3u8; 32]));
    Journal::open(&default_url(dir), cipher).await.unwrap()
}

fn message(control_id: &str, body: &str) -> NewMessage {
    NewMessage {
        channel: "in".into(),
        source: "mllp".into(),
        peer: Some("127.0.0.1:5000".into()),
        received_at: now_micros(),
        control_id: Some(control_id.into()),
        sender: "LAB^HOSP".into(),
        message_type: Some("ADT^A01".into()),
        content_type: "application/hl7-v2".into(),
        raw: format!("MSH|^~\\&|LAB|HOSP|||20240101||ADT^A01|{control_id}|P|2.5\rPID|1||{body}")
            .into_bytes(),
        status: Status::Received,
        ack: Some("AA".into()),
        error: None,
        receive_us: 12,
        outcome: None,
    }
}

#[tokio::test]
async fn raw_bytes_are_encrypted_on_disk_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let a = j.append(message("C1", "SECRET-NAME-42")).await.unwrap();
    j.flush().await.unwrap();
    let detail = j.get_message(a.id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&detail.raw).contains("SECRET-NAME-42"));
    assert_eq!(detail.trace[0].step, "receive");
    drop(j);
    // Neither the database nor its WAL holds the clear text.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(14).any(|w| w == b"SECRET-NAME-42"));
    }
}

#[tokio::test]
async fn retransmission_is_a_duplicate_but_reused_control_id_with_new_content_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let first = j.append(message("C1", "A")).await.unwrap();
    let again = j.append(message("C1", "A")).await.unwrap();
    assert_eq!(again.duplicate_of, Some(first.id));
    let other = j.append(message("C1", "B")).await.unwrap();
    assert_eq!(
        other.duplicate_of, None,
        "same control id, other content: processed"
    );
    let mut from_elsewhere = message("C1", "A");
    from_elsewhere.sender = "RAD^HOSP".into();
    assert_eq!(j.append(from_elsewhere).await.unwrap().duplicate_of, None);
    // Only the non-duplicates wait for processing.
    let pending = j.pending_received("in", 0, 100).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![first.id, other.id, other.id + 1]
    );
}

#[tokio::test]
async fn processing_outbox_delivery_and_reprocess() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let a = j.append(message("C1", "A")).await.unwrap();
    let changed = b"transformed".to_vec();
    j.record_processed(Processed {
        id: a.id,
        generation: 0,
        outcome: Outcome {
            status: Status::Queued,
            error: None,
            steps: vec![TraceStep::new("parse", now_micros(), 5, "ok")],
            outbox: vec![
                NewOutbox {
                    destination: "file".into(),
                    payload: None,
                },
                NewOutbox {
                    destination: "lab".into(),
                    payload: Some(changed.clone()),
                },
            ],
        },
    })
    .await
    .unwrap();
    let file = j.outbox_head("in", "file", 10).await.unwrap();
    let lab = j.outbox_head("in", "lab", 10).await.unwrap();
    assert_eq!(file.len(), 1);
    assert!(
        file[0].payload.starts_with(b"MSH|"),
        "raw message when the transform kept it"
    );
    assert_eq!(lab[0].payload, changed);

    j.mark_inflight(vec![file[0].id, lab[0].id]).await.unwrap();
    assert_eq!(
        j.recover_inflight().await.unwrap(),
        2,
        "a crash mid-delivery is counted"
    );
    j.record_deliveries(vec![
        Delivery {
            outbox_id: file[0].id,
            message_id: a.id,
            result: DeliveryResult::Sent,
            step: None,
        },
        Delivery {
            outbox_id: lab[0].id,
            message_id: a.id,
            result: DeliveryResult::Dead {
                error: "AR: unknown patient".into(),
            },
            step: Some(TraceStep::new("destination:lab", now_micros(), 100, "dead")),
        },
    ])
    .await
    .unwrap();
    let detail = j.get_message(a.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.status, "errored");
    assert_eq!(
        detail.summary.error.as_deref(),
        Some("lab: AR: unknown patient")
    );
    assert_eq!(detail.outbox.iter().map(|o| o.redeliveries).sum::<i64>(), 2);

    // Re-queue only the dead letter: it comes back at the head of its queue.
    let r = j.reprocess(a.id, true).await.unwrap();
    assert_eq!(
        r,
        Reprocessed::Requeued {
            channel: "in".into(),
            count: 1
        }
    );
    assert_eq!(j.outbox_head("in", "lab", 10).await.unwrap().len(), 1);
    assert!(j.outbox_head("in", "file", 10).await.unwrap().is_empty());
    // A full rerun bumps the generation and cancels what the earlier run had not delivered.
    let r = j.reprocess(a.id, false).await.unwrap();
    assert_eq!(
        r,
        Reprocessed::Rerun {
            channel: "in".into(),
            generation: 1
        }
    );
    assert!(j.outbox_head("in", "lab", 10).await.unwrap().is_empty());
    assert_eq!(
        j.pending_received("in", 0, 100).await.unwrap()[0].generation,
        1
    );
    // A result from the stale run is ignored.
    j.record_processed(Processed {
        id: a.id,
        generation: 0,
        outcome: Outcome {
            status: Status::Filtered,
            error: None,
            steps: vec![],
            outbox: vec![],
        },
    })
    .await
    .unwrap();
    assert_eq!(
        j.get_message(a.id).await.unwrap().unwrap().summary.status,
        "received"
    );
}

#[tokio::test]
async fn retention_prunes_by_rule_and_gives_disk_back() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let big = "X".repeat(4000);
    let mut ids = Vec::new();
    for i in 0..1500 {
        ids.push(j.append(message(&format!("C{i}"), &big)).await.unwrap().id);
    }
    for (n, id) in ids.iter().enumerate() {
        let status = match n % 3 {
            0 => Status::Sent,
            1 => Status::Errored,
            _ => Status::Filtered,
        };
        j.record_processed(Processed {
            id: *id,
            generation: 0,
            outcome: Outcome {
                status,
                error: None,
                steps: vec![],
                outbox: vec![],
            },
        })
        .await
        .unwrap();
    }
    // Still in flight: never pruned.
    let in_flight = j.append(message("LIVE", &big)).await.unwrap();
    j.flush().await.unwrap();
    let before = j.channel_counts().await.unwrap();
    let totals =
        |counts: &std::collections::HashMap<String, passerelle::journal::read::ChannelCounts>| {
            let c = counts.values().next().unwrap();
            let n = |s| c.by_status.get(&s).copied().unwrap_or(0);
            (
                c.by_status.values().sum::<u64>() + c.pruned.received,
                n(Status::Errored) + c.pruned.errored,
                n(Status::Filtered) + c.pruned.filtered,
                c.pruned.received,
            )
        };
    let policy = PrunePolicy {
        max_messages: Some(100),
        failed_max_messages: Some(10),
        ..Default::default()
    };
    let report = j.prune(&policy, now_micros()).await.unwrap();
    assert_eq!(report.deleted, 1500 - 100 - 10);
    let after = j.channel_counts().await.unwrap();
    let (received, errored, filtered, pruned) = totals(&after);
    let (received0, errored0, filtered0, _) = totals(&before);
    assert_eq!(pruned, 1390, "pruned messages are kept as totals");
    assert_eq!(
        (received, errored, filtered),
        (received0, errored0, filtered0),
        "the counters seeded from the journal do not go down after pruning"
    );
    assert!(
        report.file_bytes_after < report.file_bytes_before / 2,
        "disk given back: {report:?}"
    );
    let q = |status| MessageQuery {
        status: Some(status),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(j.list_messages(&q(Status::Errored)).await.unwrap().0, 10);
    assert_eq!(
        j.list_messages(&q(Status::Received)).await.unwrap().1[0].id,
        in_flight.id
    );
    // Age rules: everything finished is older than zero seconds.
    let policy = PrunePolicy {
        max_age: Some(std::time::Duration::ZERO),
        failed_max_age: Some(std::time::Duration::ZERO),
        ..Default::default()
    };
    assert_eq!(
        j.prune(&policy, now_micros() + 1).await.unwrap().deleted,
        110
    );
    assert_eq!(
        j.list_messages(&MessageQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .0,
        1
    );
}

#[tokio::test]
async fn group_commit_batches_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let j = j.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    j.append(message(&format!("T{t}-{i}"), "PID"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = 4000.0 / started.elapsed().as_secs_f64();
    println!("journal: 4000 appends from 8 tasks, {rate:.0} msg/s (fsync per batch)");
    let (total, page, more) = j
        .list_messages(&MessageQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 4000);
    assert_eq!(page.len(), 1);
    assert!(more, "more messages follow the first page");
    let (_, page, more) = j
        .list_messages(&MessageQuery {
            limit: 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 4000);
    assert!(!more, "a full last page says nothing follows");
}

#[tokio::test]
async fn an_outcome_handed_with_the_message_is_committed_with_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let with_outcome = || NewMessage {
        outcome: Some(Outcome {
            status: Status::Queued,
            error: None,
            steps: vec![
                TraceStep::new("parse", now_micros(), 3, "ok"),
                TraceStep::new("transform", now_micros(), 4, "ok"),
            ],
            outbox: vec![NewOutbox {
                destination: "file".into(),
                payload: None,
            }],
        }),
        ..message("INLINE1", "A")
    };
    let first = j.append(with_outcome()).await.unwrap();
    let detail = j.get_message(first.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.status, "queued");
    let steps: Vec<&str> = detail.trace.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["receive", "parse", "transform"]);
    assert_eq!(j.outbox_head("in", "file", 10).await.unwrap().len(), 1);
    // Nothing is left for the processor to pick up.
    assert!(j.pending_received("in", 0, 100).await.unwrap().is_empty());

    // The retransmission is a duplicate: its outcome is dropped, no second delivery queued.
    let again = j.append(with_outcome()).await.unwrap();
    assert_eq!(again.duplicate_of, Some(first.id));
    let detail = j.get_message(again.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.status, "duplicate");
    assert_eq!(j.outbox_head("in", "file", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_retransmission_after_a_restart_is_still_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let j = journal(dir.path()).await;
        let first = j.append(message("RESTART1", "A")).await.unwrap();
        j.flush().await.unwrap();
        first
    };
    // A new process on the same data dir: the writer's memory is rebuilt from the journal.
    let j = journal(dir.path()).await;
    let again = j.append(message("RESTART1", "A")).await.unwrap();
    assert_eq!(again.duplicate_of, Some(first.id));
    assert_eq!(
        j.append(message("RESTART1", "B"))
            .await
            .unwrap()
            .duplicate_of,
        None
    );
}

fn queued_for(id: i64, destination: &str, step: &str) -> Processed {
    Processed {
        id,
        generation: 0,
        outcome: Outcome {
            status: Status::Queued,
            error: None,
            steps: vec![TraceStep::new(step, now_micros(), 5, "ok")],
            outbox: vec![NewOutbox {
                destination: destination.into(),
                payload: None,
            }],
        },
    }
}

#[tokio::test]
async fn a_message_processed_twice_keeps_its_first_result() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let a = j.append(message("C1", "A")).await.unwrap();
    j.record_processed(queued_for(a.id, "lab", "first"))
        .await
        .unwrap();
    let [item] = &j.outbox_head("in", "lab", 10).await.unwrap()[..] else {
        panic!("one delivery queued")
    };
    j.record_deliveries(vec![Delivery {
        outbox_id: item.id,
        message_id: a.id,
        result: DeliveryResult::Sent,
        step: None,
    }])
    .await
    .unwrap();
    // The same run again (swept from the journal while it was also queued in memory), with
    // another outcome: nothing of it is kept, and the message stays delivered.
    j.record_processed(queued_for(a.id, "other", "second"))
        .await
        .unwrap();
    let detail = j.get_message(a.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.status, "sent");
    assert_eq!(detail.outbox.len(), 1, "no second outbox entry");
    assert!(j.outbox_head("in", "other", 10).await.unwrap().is_empty());
    assert!(detail.trace.iter().all(|t| t.step != "second"));
    assert!(detail.trace.iter().any(|t| t.step == "first"));
}

#[tokio::test]
async fn waiting_messages_are_read_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(j.append(message(&format!("C{i}"), "A")).await.unwrap().id);
    }
    let first = j.pending_received("in", 0, 2).await.unwrap();
    assert_eq!(first.iter().map(|p| p.id).collect::<Vec<_>>(), ids[..2]);
    let rest = j.pending_received("in", ids[1], 10).await.unwrap();
    assert_eq!(rest.iter().map(|p| p.id).collect::<Vec<_>>(), ids[2..]);
    assert!(
        j.pending_received("in", ids[4], 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn delivery_results_of_many_messages_are_recorded_together() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path()).await;
    let mut messages = Vec::new();
    for i in 0..4 {
        let a = j.append(message(&format!("C{i}"), "A")).await.unwrap();
        j.record_processed(queued_for(a.id, "lab", "parse"))
            .await
            .unwrap();
        messages.push(a.id);
    }
    let head = j.outbox_head("in", "lab", 10).await.unwrap();
    assert_eq!(head.len(), 4);
    j.mark_inflight(head.iter().map(|i| i.id).collect())
        .await
        .unwrap();
    // Two delivered, one to try again, one not attempted: one batch of results.
    let result = |n: usize| match n {
        0 | 1 => DeliveryResult::Sent,
        2 => DeliveryResult::Retry {
            at: now_micros() + 60_000_000,
            error: "timeout".into(),
        },
        _ => DeliveryResult::Release,
    };
    let results = head
        .iter()
        .enumerate()
        .map(|(n, item)| Delivery {
            outbox_id: item.id,
            message_id: item.message_id,
            result: result(n),
            step: (n < 3).then(|| TraceStep::new("destination:lab", now_micros(), 7, "done")),
        })
        .collect();
    j.record_deliveries(results).await.unwrap();
    let status = async |id: i64| j.get_message(id).await.unwrap().unwrap();
    for (n, id) in messages.iter().enumerate() {
        let detail = status(*id).await;
        let delivered = detail.trace.iter().any(|t| t.step == "destination:lab");
        assert_eq!(delivered, n < 3, "message {n}: its own step, only its own");
        let expected = if n < 2 { "sent" } else { "queued" };
        assert_eq!(detail.summary.status, expected, "message {n}");
        let entry = &detail.outbox[0];
        let (state, attempts) = match n {
            0 | 1 => ("sent", 1),
            2 => ("pending", 1),
            _ => ("pending", 0),
        };
        assert_eq!(
            (entry.status.as_str(), entry.attempts),
            (state, attempts),
            "message {n}"
        );
    }
    assert_eq!(
        status(messages[2]).await.outbox[0].last_error.as_deref(),
        Some("timeout")
    );
}
