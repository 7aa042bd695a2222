//! Who goes first when the two cores are short: senders waiting for their acknowledgement.
//!
//! A sender that waits for its ACK sends nothing else meanwhile, so every moment between a
//! message's arrival and its journal commit is throughput lost to the whole feed. Mapping,
//! storing and delivering the messages already journaled can wait: they are safe on disk and
//! catch up as soon as the burst ends. The processing threads already run at a lower
//! priority (`downstream.rs`), but the work they hand to threads that are not theirs (the
//! journal's writer, the store's SQLite connections) competes at full priority and makes
//! the commits the ACKs wait for larger.
//!
//! So while senders contend ([`CONTENDING`] waiting at once, now or within [`QUIET`]), the
//! MLLP source journals messages without running their pipeline first (the processor does
//! it), and processing and deliveries hold back each batch for at most [`MAX_HOLD`], taking a
//! small one then ([`Pressure::next_batch`]). A single sender, or a few that seldom overlap, never hold anything back:
//! their messages are mapped before the commit (one commit per message, not two) and
//! delivered at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

/// The longest processing and deliveries hold back a batch while senders contend.
const MAX_HOLD: Duration = Duration::from_millis(50);
/// How many senders waiting at once make a contention. Three, not two: two independent
/// feeds overlap now and then at any rate; three at once is a burst.
const CONTENDING: usize = 3;
/// How long after the last moment that many senders waited at once they still count as contending.
const QUIET: Duration = Duration::from_millis(2);
/// How often a held-back batch looks again.
const LOOK: Duration = Duration::from_millis(1);

pub struct Pressure {
    waiting: AtomicUsize,
    /// When [`CONTENDING`] senders last waited at once, in microseconds since `epoch`.
    contended_at: AtomicU64,
    epoch: Instant,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            contended_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// A sender waiting for its acknowledgement, from its message's arrival until dropped.
pub struct Waiting<'a>(&'a Pressure);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Release);
    }
}

impl Pressure {
    /// Counts a sender as waiting until the returned guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        if self.waiting.fetch_add(1, AcqRel) + 1 >= CONTENDING {
            self.contended_at.store(self.micros(), Release);
        }
        Waiting(self)
    }

    /// Whether senders contend for the journal now or did within [`QUIET`].
    pub fn contended(&self) -> bool {
        if self.waiting.load(Acquire) >= CONTENDING {
            return true;
        }
        let last = self.contended_at.load(Acquire);
        last != 0 && self.micros().saturating_sub(last) < QUIET.as_micros() as u64
    }

    /// Waits while senders contend (at most [`MAX_HOLD`]), then tells how many items the
    /// next batch may take: `full`, or `held` if senders still contend.
    pub async fn next_batch<T: Copy>(&self, full: T, held: T) -> T {
        self.hold_back(MAX_HOLD).await;
        if self.contended() { held } else { full }
    }

    /// Waits while senders contend, for at most `at_most`.
    async fn hold_back(&self, at_most: Duration) {
        let until = Instant::now() + at_most;
        while self.contended() && Instant::now() < until {
            tokio::time::sleep(LOOK).await;
        }
    }

    fn micros(&self) -> u64 {
        // Never 0 once running: 0 means "never contended".
        self.epoch.elapsed().as_micros() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_two_senders_do_not_contend_three_do() {
        let p = Pressure::default();
        let a = p.waiting();
        let b = p.waiting();
        assert!(!p.contended(), "two feeds that overlap now and then");
        let c = p.waiting();
        assert!(p.contended());
        drop((a, b, c));
        // Just after: the burst is still on (its senders are about to send again).
        assert!(p.contended());
        std::thread::sleep(QUIET * 2);
        assert!(!p.contended(), "quiet again");
    }

    #[tokio::test]
    async fn a_held_back_batch_waits_for_the_burst_to_end_or_for_the_longest_hold() {
        let p = Pressure::default();
        let start = Instant::now();
        p.hold_back(Duration::from_secs(60)).await;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no sender waits: no hold"
        );

        let burst = [p.waiting(), p.waiting(), p.waiting()];
        let start = Instant::now();
        p.hold_back(MAX_HOLD).await;
        let held = start.elapsed();
        assert!(held >= MAX_HOLD, "held {held:?} only");
        assert!(
            held < Duration::from_secs(30),
            "the hold ends while senders still wait"
        );

        drop(burst);

        // The burst ends while a batch is held back: the batch goes soon after.
        let p = std::sync::Arc::new(Pressure::default());
        let _others = [p.waiting(), p.waiting(), p.waiting()];
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.hold_back(Duration::from_secs(60)).await })
        };
        tokio::time::sleep(LOOK * 5).await;
        assert!(!waiter.is_finished(), "held while the burst lasts");
        drop(_others);
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("released once the senders are answered")
            .unwrap();
    }
}
