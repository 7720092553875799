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

/// How long process exit waits for lingering senders before releasing them anyway.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Lingering threads of this process: `pid << 32 | count`. The pid makes a forked child
/// (which inherits the counter but not the threads) start from zero; atomics rather than a
/// mutex so that a fork can never inherit a held lock.
static ACTIVE: AtomicU64 = AtomicU64::new(0);

/// Set by the exit hook: lingering threads release their ports once it has passed.
static EXIT_DEADLINE: OnceLock<Instant> = OnceLock::new();

fn this_pid() -> u64 {
    u64::from(std::process::id()) << 32
}

/// Lingering threads of the current process.
fn active_here() -> u64 {
    let value = ACTIVE.load(Ordering::SeqCst);
    if value & !0xffff_ffff == this_pid() {
        value & 0xffff_ffff
    } else {
        0
    }
}

/// Counts one lingering thread while alive.
struct Active;

impl Active {
    fn enter() -> Active {
        let me = this_pid();
        let _ = ACTIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            Some(if v & !0xffff_ffff == me {
                v + 1
            } else {
                me | 1
            })
        });
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let me = this_pid();
        let _ = ACTIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            (v & !0xffff_ffff == me && v & 0xffff_ffff > 0).then(|| v - 1)
        });
    }
}

/// The interrupt of a lingering wait: fires once process exit has waited long enough.
fn exit_deadline_passed() -> Result<()> {
    match EXIT_DEADLINE.get() {
        Some(deadline) if Instant::now() >= *deadline => Err(Error::Interrupted),
        _ => Ok(()),
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
            let _active = active; // dropped after `job`
            job(&exit_deadline_passed);
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
    if active_here() == 0 {
        return;
    }
    let deadline = Instant::now() + EXIT_GRACE;
    let _ = EXIT_DEADLINE.set(deadline);
    // Each thread notices the deadline within one wait slice, then unlinks its files.
    let give_up = deadline + Duration::from_millis(500);
    while active_here() > 0 && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(5));
    }
}
