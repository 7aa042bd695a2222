//! What a channel's processor still has to do. A message a source maps before its commit
//! gets its outbox entries at once; one handed to the processor gets them later. So a source
//! maps a message itself only while the processor has nothing left: otherwise a message could
//! overtake an earlier one of the same sender on its way to a destination.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

pub struct Backlog {
    /// Messages handed to the in-memory queue and not yet recorded.
    queued: AtomicUsize,
    /// The journal holds `received` messages to sweep up (the queue overflowed, a result
    /// could not be recorded, or the engine just started).
    in_journal: AtomicBool,
    /// A sweep is under way.
    sweeping: AtomicBool,
}

impl Backlog {
    /// At start: whatever a stop or crash left is swept up first.
    pub fn starting() -> Self {
        Self {
            queued: AtomicUsize::new(0),
            in_journal: AtomicBool::new(true),
            sweeping: AtomicBool::new(false),
        }
    }

    pub fn is_empty(&self) -> bool {
        // `sweeping` before `in_journal`: a sweep sets it before taking the flag.
        !self.sweeping.load(Acquire)
            && !self.in_journal.load(Acquire)
            && self.queued.load(Acquire) == 0
    }

    /// A message is about to go into the queue.
    pub fn handing(&self) {
        self.queued.fetch_add(1, AcqRel);
    }

    /// The queue was full: the message waits in the journal instead.
    pub fn not_handed(&self) {
        self.in_journal.store(true, Release);
        self.queued.fetch_sub(1, AcqRel);
    }

    /// `n` messages taken from the queue are done with.
    pub fn done(&self, n: usize) {
        self.queued.fetch_sub(n, AcqRel);
    }

    /// Messages are left in the journal for the next sweep.
    pub fn left_in_journal(&self) {
        self.in_journal.store(true, Release);
    }

    /// Whether to sweep the journal now; if so, [`Backlog::swept`] ends it.
    pub fn begin_sweep(&self) -> bool {
        self.sweeping.store(true, Release);
        let sweep = self.in_journal.swap(false, AcqRel);
        if !sweep {
            self.sweeping.store(false, Release);
        }
        sweep
    }

    pub fn swept(&self) {
        self.sweeping.store(false, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_only_once_everything_handed_and_left_is_done() {
        let b = Backlog::starting();
        assert!(!b.is_empty(), "a new engine sweeps the journal first");
        assert!(b.begin_sweep());
        assert!(!b.is_empty(), "while the sweep runs");
        b.swept();
        assert!(b.is_empty());
        assert!(!b.begin_sweep(), "nothing left to sweep");

        b.handing();
        b.handing();
        assert!(!b.is_empty());
        b.done(1);
        assert!(!b.is_empty());
        b.done(1);
        assert!(b.is_empty());

        b.handing();
        b.not_handed();
        assert!(
            !b.is_empty(),
            "the overflowing message waits in the journal"
        );
        assert!(b.begin_sweep());
        b.swept();
        assert!(b.is_empty());

        b.left_in_journal();
        assert!(!b.is_empty());
    }
}
