//! The zygote slot: which zygote, if any, serves a spawn.
//!
//! * **One zygote per host process**, started on first use; a dead one is replaced on
//!   the next spawn, and one that died during a request gets one retry with a fresh
//!   zygote. A spec the zygote cannot serve is exec'ed, or served by a fresh zygote
//!   once the old one has no live children. Requests are serialized by the slot's
//!   mutex.
//! * **A forked host.** The slot is kept per fork generation (`fork::PerProcess`): a
//!   child of the host never talks to its parent's zygote (the reader thread that
//!   would deliver the replies did not survive the fork) and starts its own on first
//!   use. The inherited `Zygote` is leaked, not dropped: its `Drop` would shut the
//!   socket down for the parent too, and the mutex around it may be held by a thread
//!   that no longer exists.
//!
//! A file of its own because it is the process-wide state and the policy around it;
//! the zygote itself (`mod.rs`) only starts, forks on request and ends.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{effective_env, zygote_args, RequestError, Zygote};
use crate::fork::PerProcess;
use crate::supervisor::launch::{self, LaunchSpec, Process};

/// This process's zygote (see the module docs for a forked host).
static ZYGOTE: PerProcess<Mutex<Option<Zygote>>> = PerProcess::new();

/// `launch::spawn_zygote`.
pub(crate) fn spawn(spec: &LaunchSpec, control: OwnedFd) -> io::Result<Process> {
    let Some(args) = zygote_args(&spec.args) else {
        // Not `[options] -m module`: nothing a zygote can run.
        return launch::spawn(spec.clone(), control);
    };
    let env = effective_env(&spec.env);
    let mut slot = lock();
    for attempt in 0..2 {
        if let Some(zygote) = slot.as_ref() {
            if !zygote.alive() {
                *slot = None;
            } else if !zygote.fits(spec, &args, &env) {
                if zygote.reports.live() > 0 {
                    drop(slot);
                    return launch::spawn(spec.clone(), control);
                }
                *slot = None; // idle: replace it with one that fits
            }
        }
        if slot.is_none() {
            *slot = Some(Zygote::start(spec, args.clone(), env.clone())?);
        }
        let zygote = slot.as_mut().expect("just set");
        match zygote.request(spec, &env, &control) {
            Ok(process) => return Ok(process),
            Err(RequestError::ZygoteGone(_)) if attempt == 0 => *slot = None,
            Err(RequestError::ZygoteGone(err) | RequestError::Failed(err)) => return Err(err),
        }
    }
    unreachable!("the second attempt returns")
}

/// The pid of this process's zygote, once it has started and said hello.
#[cfg(test)]
pub(super) fn pid() -> Option<i32> {
    let slot = lock();
    slot.as_ref().filter(|z| z.alive()).and_then(|z| z.hello)
}

/// The zygote slot of this process.
fn lock() -> MutexGuard<'static, Option<Zygote>> {
    ZYGOTE.get().lock().unwrap_or_else(PoisonError::into_inner)
}
