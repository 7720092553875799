//! Background threads that keep a dropped sender's ports alive until its receiver has taken
//! every frame, and the process-exit hook that bounds them.
//!
//! Why: iceoryx2 0.10 cannot hand a frame to a subscriber once its publisher is gone unless
//! the subscriber had already attached to that publisher *and* mapped the data segment the
//! frame lives in, and it only does either inside `Subscriber::receive`. Dropping the
//! publisher unlinks its segments and, for a subscriber that never attached, the
//! connection holding the queued offsets (see `Sender`'s drop). A blocking wait in
//! `Sender::drop` cannot help a receiver on the same thread, so the ports move to a thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::Interrupt;
use crate::error::{Error, Result};
use crate::fork::PerProcess;

/// How long process exit waits for lingering senders before releasing them anyway.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(1);

/// The lingering threads of this process, one record per fork generation: a forked child
/// inherits the parent's count but not its threads, and must neither wait for them at
/// exit nor count them (see `fork.rs`). Reached without a lock, so that a fork can never
/// leave a held one behind.
#[derive(Default)]
struct Lingering {
    /// Lingering threads alive.
    active: AtomicU64,
    /// Set by the exit hook: lingering threads release their ports once it has passed.
    exit_deadline: OnceLock<Instant>,
}

static LINGERING: PerProcess<Lingering> = PerProcess::new();

/// Counts one lingering thread (of the generation that started it) while alive.
struct Active(&'static Lingering);

impl Active {
    fn enter() -> Active {
        let here = LINGERING.get();
        here.active.fetch_add(1, Ordering::SeqCst);
        Active(here)
    }

    /// The interrupt of a lingering wait: fires once process exit has waited long enough.
    fn exit_deadline_passed(&self) -> Result<()> {
        match self.0.exit_deadline.get() {
            Some(deadline) if Instant::now() >= *deadline => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `job` on a detached thread. It must return soon after its interrupt fires (at
/// process exit). If no thread can be started, `job` is dropped unrun, which releases
/// whatever it owns at once.
pub(crate) fn spawn(job: impl FnOnce(Interrupt) + Send + 'static) {
    register_exit_hook();
    let active = Active::enter();
    let _ = thread::Builder::new()
        .name("zerohop-linger".into())
        .spawn(move || {
            job(&|| active.exit_deadline_passed());
            drop(active); // after `job`
        });
}

fn register_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function that does not unwind. If
        // registration fails, lingering threads simply die with the process.
        unsafe { libc::atexit(wait_at_exit) };
    });
}

/// At `exit()` (Rust's `main` returning, Python's interpreter exit), gives lingering senders
/// up to [`EXIT_GRACE`] to be drained, then makes them release their ports, so the
/// receiver sees `Closed` and no files are left behind. Threads die at the end of `exit()`
/// without running destructors, so without this a peer would wait for a dead node.
extern "C" fn wait_at_exit() {
    let here = LINGERING.get();
    if here.active.load(Ordering::SeqCst) == 0 {
        return;
    }
    let deadline = Instant::now() + EXIT_GRACE;
    let _ = here.exit_deadline.set(deadline);
    // Each thread notices the deadline within one wait slice, then unlinks its files.
    let give_up = deadline + Duration::from_millis(500);
    while here.active.load(Ordering::SeqCst) > 0 && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(5));
    }
}
