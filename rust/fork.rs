//! Fork safety in one place: a process generation that a `pthread_atfork` child handler
//! bumps, and process-wide singletons that rebuild themselves when it changes.
//!
//! The OS facts each choice rests on:
//!
//! * **`fork` copies memory, not threads.** The child has only the thread that called
//!   `fork`; every other thread of the parent is gone, but its memory is all there: a
//!   channel to a thread that no longer exists still accepts messages (and nobody ever
//!   answers), a mutex a vanished thread held stays held forever, a `OnceLock` another
//!   thread was filling stays "being filled" forever. Python users fork without
//!   asking for it: `multiprocessing` forks by default on Linux before Python 3.14, and
//!   a host that has run one session has a spawner thread, a zygote reader thread and an
//!   iceoryx2 node. So every singleton that holds threads or per-process OS resources
//!   must notice that it is an inherited copy, and must notice it *before* touching any
//!   lock inside it.
//! * **Why a `pthread_atfork` child handler, not pid checks.** A pid only says "another
//!   process" when read, so each singleton kept its own pid and its own check, taken
//!   after its own (possibly inherited, possibly held) lock, and a singleton that forgot
//!   the check (the spawner) hung the child. libc runs the child handlers in the child,
//!   before `fork` returns there, for every `fork()` (Python's `os.fork`, `multiprocessing`,
//!   a C library's `fork`): one counter bumped there is one fact every singleton can
//!   compare with, lock-free. It also cannot be fooled by pid reuse, and nested forks
//!   simply count up. (`vfork`, `posix_spawn` and raw `clone` skip the handlers; their
//!   children exec at once, so there is nothing to forget. A fork that does run them
//!   just before exec, such as std's `Command` with a `pre_exec` hook, pays one atomic
//!   add.)
//! * **What the child handler may do: async-signal-safe work only.** POSIX runs it in a
//!   child of a possibly multi-threaded parent, where only async-signal-safe functions
//!   are allowed: no locks (a vanished thread may hold them, the allocator's included),
//!   no allocation, no I/O through buffered streams. So the handler does one atomic
//!   add and one atomic store and nothing else; everything else (building the new singletons) happens
//!   later, lazily, on the child's first use, when the child is an ordinary process.
//! * **Registered once, lazily.** The handler is registered the first time any
//!   singleton asks for the generation, so importing the extension registers nothing and
//!   starts no thread (the `tokenizers` pattern). No singleton can be built before
//!   that, so no singleton can miss a fork. Registrations are inherited by a child like
//!   the rest of memory, and CPython never unloads an extension module, so the handler
//!   stays valid for the life of the process.
//! * **Why leak instead of drop.** An inherited copy is the *parent's* state: dropping it
//!   would act on the parent's resources. An iceoryx2 node or port unregisters itself
//!   and deletes files the parent still uses; the zygote's `Drop` shuts down a socket
//!   that the parent shares with it (`shutdown` acts on the socket, not on our fd); a
//!   thread's `JoinHandle` names a thread that does not exist here; and the mutex around
//!   the copy may be held by a thread that does not exist either, so even looking inside
//!   can hang. The copy is therefore left untouched: a few hundred bytes and a handful of
//!   close-on-exec fds per fork, and never a hang or a deleted file in the parent.
//!
//! [`PerProcess`] holds a singleton per generation; [`Generation`] stamps an object
//! (a channel end, the iceoryx2 node) with the generation it was built in, for a `Drop`
//! that must not release a parent's resources from a child. A session that was open when
//! the host forked is such an object too: in the child its supervisor and native host are
//! inert (closing or dropping the copy neither stops the parent's nodes nor joins threads
//! that do not exist there), and the parent's session goes on undisturbed.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Bumped by the child handler in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether the child handler is registered: [`UNREGISTERED`], [`REGISTERED`], or while a
/// thread registers it, that thread's process id.
static HANDLER: AtomicU32 = AtomicU32::new(UNREGISTERED);
const UNREGISTERED: u32 = 0;
const REGISTERED: u32 = u32::MAX;

/// Runs in the child, before `fork` returns there: atomic stores only (see module docs).
extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    // Running means registered, even if the fork caught the registering thread just
    // before it could say so.
    HANDLER.store(REGISTERED, Ordering::SeqCst);
}

/// Registers [`in_child`] once per process lineage.
///
/// The one pid check of this module, for a reason a generation cannot serve: before the
/// handler exists there is no generation to trust. If a fork catches another thread
/// between claiming the registration and finishing it, the child inherits the claim; the
/// claimant's pid then says whether a thread of *this* process is still at it (wait for
/// it) or the claim came with the fork and its handler was not in place yet (take over;
/// had it been in place, it would have run and marked itself registered).
fn register_handler() {
    loop {
        let state = HANDLER.load(Ordering::SeqCst);
        if state == REGISTERED {
            return;
        }
        let me = std::process::id();
        if state == me {
            std::thread::yield_now(); // another thread of ours is registering
            continue;
        }
        if HANDLER
            .compare_exchange(state, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        // SAFETY: registers a plain `extern "C"` function that does not unwind and only
        // touches atomics; the library is never unloaded (see module docs).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        // pthread_atfork fails only with ENOMEM: leave it to the next caller to try again.
        let done = if rc == 0 { REGISTERED } else { UNREGISTERED };
        let _ = HANDLER.compare_exchange(me, done, Ordering::SeqCst, Ordering::SeqCst);
        return;
    }
}

/// The generation of this process: the same number until this process forks, and a
/// larger one in each child (also in a child's children). Registers the child handler on
/// first use.
fn current() -> u64 {
    register_handler();
    GENERATION.load(Ordering::SeqCst)
}

/// The generation an object was built in.
///
/// For objects that are not singletons but hold per-process resources (a channel end,
/// the iceoryx2 node): their `Drop` releases them only if [`Generation::is_current`],
/// and leaks them in a forked child (see module docs for why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

impl Generation {
    /// The generation of this process now.
    pub(crate) fn now() -> Generation {
        Generation(current())
    }

    /// Whether this process has not forked since (we are still the process that built
    /// the object, not a child holding a copy).
    pub(crate) fn is_current(self) -> bool {
        self.0 == current()
    }
}

/// A process-wide singleton, built lazily, once per generation: a forked child gets a
/// fresh `T::default()` on its first use and never touches the copy it inherited (which
/// is leaked, see module docs).
///
/// Lock-free on the way in: an atomic pointer to the current generation's slot, which is
/// never freed, so `get` can hand out plain references. Put the lock (or `OnceLock`)
/// inside `T`: each generation gets its own, never one a vanished thread may hold.
pub(crate) struct PerProcess<T> {
    slot: AtomicPtr<Slot<T>>,
    /// Send/Sync follow `T`, as if the slot were held inline.
    _value: PhantomData<T>,
}

struct Slot<T> {
    generation: u64,
    value: T,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            _value: PhantomData,
        }
    }

    /// This generation's value, created on first use.
    pub(crate) fn get(&self) -> &T {
        let generation = current();
        loop {
            let seen = self.slot.load(Ordering::Acquire);
            // SAFETY: a non-null pointer came from `Box::into_raw` below and slots are
            // never freed, so it is valid for as long as `self`.
            if let Some(slot) = unsafe { seen.as_ref() } {
                if slot.generation == generation {
                    return &slot.value;
                }
            }
            // None yet, or the parent's: build ours. The parent's slot is leaked.
            let fresh = Box::into_raw(Box::new(Slot {
                generation,
                value: T::default(),
            }));
            match self
                .slot
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: just published; never freed (see above).
                Ok(_) => return unsafe { &(*fresh).value },
                // Another thread of ours got there first: ours was never shared, so
                // dropping it touches nothing; use theirs.
                // SAFETY: `fresh` came from `Box::into_raw` and was not published.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    /// Runs `child` in a forked child (which must not panic) and returns its exit code.
    /// The child leaves through `_exit`, never back into the test harness, and is killed
    /// by SIGALRM if it hangs (the parent's assertion then says so).
    pub(crate) fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only uses atomics, the allocator (fork-safe in glibc) and
        // `_exit`; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain syscalls in the child.
            unsafe {
                libc::alarm(20);
                libc::_exit(child());
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status),
            "child hung or crashed: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn a_child_sees_a_new_generation_and_its_parent_does_not() {
        let born = Generation::now();
        assert!(born.is_current());
        let code = in_forked_child(|| {
            let here = Generation::now();
            let ok = !born.is_current() && here.is_current() && here.0 == born.0 + 1;
            i32::from(!ok)
        });
        assert_eq!(code, 0);
        assert!(
            born.is_current(),
            "forking does not change the parent's generation"
        );
    }

    #[test]
    fn a_child_gets_a_fresh_singleton_and_keeps_it() {
        static COUNTER: PerProcess<AtomicU64> = PerProcess::new();
        COUNTER.get().store(7, Ordering::SeqCst);
        let code = in_forked_child(|| {
            let fresh = COUNTER.get().load(Ordering::SeqCst) == 0;
            COUNTER.get().store(5, Ordering::SeqCst);
            let kept = COUNTER.get().load(Ordering::SeqCst) == 5;
            i32::from(!(fresh && kept))
        });
        assert_eq!(code, 0);
        assert_eq!(COUNTER.get().load(Ordering::SeqCst), 7);
    }

    #[test]
    fn a_lock_held_by_a_vanished_thread_does_not_hang_the_child() {
        static SLOT: PerProcess<Mutex<u32>> = PerProcess::new();
        let held = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let (h, r) = (held.clone(), release.clone());
        let holder = std::thread::spawn(move || {
            let mut guard = SLOT.get().lock().unwrap();
            *guard = 1;
            h.wait();
            r.wait(); // holds the lock across the fork
        });
        held.wait();
        // With one mutex for all generations this child would wait forever (SIGALRM).
        let code = in_forked_child(|| match SLOT.get().try_lock() {
            Ok(value) if *value == 0 => 0,
            _ => 1,
        });
        release.wait();
        holder.join().unwrap();
        assert_eq!(code, 0);
        assert_eq!(*SLOT.get().lock().unwrap(), 1);
    }

    #[test]
    fn racing_threads_share_one_value() {
        static SHARED: PerProcess<AtomicU64> = PerProcess::new();
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| SHARED.get().fetch_add(1, Ordering::SeqCst)))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(SHARED.get().load(Ordering::SeqCst), 8);
    }
}
