//! Where channels' processing and deliveries run: a runtime of their own, below the
//! listeners in the OS scheduler's eyes, so that acknowledging a burst of messages (journal
//! commit, then ACK) is not slowed by mapping and storing the messages received before it.
//! What waits is safe in the journal and catches up as soon as the burst ends.

use std::future::Future;

use tokio_util::task::TaskTracker;

/// How much lower than the listeners (nice increment, Linux). 10 leaves processing about a
/// tenth of a busy CPU while the listeners need it, all of it otherwise.
const NICE: i32 = 10;

pub(super) struct Downstream {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Downstream {
    pub(super) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("passerelle-downstream")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub(super) fn spawn<F>(&self, tasks: &TaskTracker, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.runtime.as_ref().expect("running").handle();
        tasks.spawn_on(future, handle);
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        // The tasks are stopped and awaited by `Runtime::stop`; this may run inside another
        // runtime, where blocking to shut this one down is not allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with id 0 sets the calling thread's nice value, not the whole
    // process's. Threads this one starts (SQLite connection workers) inherit it.
    // SAFETY: setpriority only reads its integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc != 0 {
        tracing::debug!("could not lower the processing threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
