//! Gathering the next batch for the writer.
//!
//! Group commit pays when a batch is full: a commit costs about the same for one message as
//! for ten (an fsync and a dozen pages written either way). Senders that wait for each ACK
//! before sending again fall into step with the commits: the messages answered by one commit
//! come back together a moment later, while the next commit holds the others. Left alone, the
//! writer commits half the senders at a time, forever. So the writer expects back the senders
//! it just answered and, if their messages are not all in yet, waits for them a short while
//! (at most [`MAX_WAIT`]) before committing, which puts every sender in the same commit.
//!
//! The estimate corrects itself: a sender that does not come back is not expected after the
//! next commit, so an idle or trickling feed is never delayed by more than one short wait.

use std::time::{Duration, Instant};

use flume::{Receiver, RecvTimeoutError};

use super::Op;

/// The longest a batch waits for expected messages. Measured with 8 lockstep senders on a
/// 2-core machine: no wait 6.6k–8.0k msg/s, 50–100 µs 7.5k–8.7k, 200 µs 7.3k, 1 ms 4.2k (a
/// long wait idles the writer more than fuller batches save).
pub(super) const MAX_WAIT: Duration = Duration::from_micros(100);
/// The most operations committed together.
pub(super) const MAX_BATCH: usize = 1024;

pub(super) struct Gatherer {
    rx: Receiver<Op>,
    /// Messages appended by the previous commit: their senders are likely to send again.
    returning: usize,
}

impl Gatherer {
    pub fn new(rx: Receiver<Op>) -> Self {
        Self { rx, returning: 0 }
    }

    /// Blocks until there is work and fills `ops` with the next batch; false once every
    /// sender is gone and nothing is left. `arrived` sees each operation as it comes in, so
    /// the writer can prepare it while it waits for the rest.
    pub fn next(&mut self, ops: &mut Vec<Op>, mut arrived: impl FnMut(&Op)) -> bool {
        let mut appends = match self.rx.recv() {
            Ok(op) => take(op, ops, &mut arrived),
            Err(_) => return false,
        };
        let opened = Instant::now();
        appends += self.drain(ops, &mut arrived);
        let expected = (self.returning + appends).min(MAX_BATCH);
        let deadline = opened + MAX_WAIT;
        while appends < expected && ops.len() < MAX_BATCH {
            match self.rx.recv_deadline(deadline) {
                Ok(op) => {
                    appends += take(op, ops, &mut arrived);
                    appends += self.drain(ops, &mut arrived);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        self.returning = appends;
        true
    }

    /// Takes what is already waiting; returns how many appends it took.
    fn drain(&self, ops: &mut Vec<Op>, arrived: &mut impl FnMut(&Op)) -> usize {
        let room = MAX_BATCH.saturating_sub(ops.len());
        self.rx
            .try_iter()
            .take(room)
            .map(|op| take(op, ops, arrived))
            .sum()
    }
}

/// Adds `op` to the batch; 1 if it is an append, else 0.
fn take(op: Op, ops: &mut Vec<Op>, arrived: &mut impl FnMut(&Op)) -> usize {
    arrived(&op);
    let append = usize::from(matches!(op, Op::Append(..)));
    ops.push(op);
    append
}
