//! Exit reports of the zygote's children, and the `Ticket` through which each child's
//! `Process` reads its own.
//!
//! Zygote children are not our children: `waitid` would say ECHILD. The zygote reaps
//! them and reports `(serial, exit)` on its socket; a reader thread files the reports
//! here, where `Process::try_wait` finds them. The pidfd of each child is opened by the
//! zygote before it can reap the child and passed to us, so it names that very process
//! even if its pid is reused later: it says when the child has ended, a report says how.
//!
//! A file of its own because it lives apart from the zygote: the reader thread fills it,
//! each child's `Process` reads it for as long as that lives (through an `Arc` that
//! outlasts a replaced zygote), and its waiting rules are tested without one.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::pidfd_readable;
use crate::supervisor::launch::Exit;

/// How long `try_wait` waits for the report of a child whose pidfd fired.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// Exit reports of one zygote's children, by spawn serial.
#[derive(Debug, Default)]
pub(super) struct Reports {
    state: Mutex<ReportState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ReportState {
    /// Children with a live `Process`: None until their report arrives.
    exits: HashMap<u64, Option<Exit>>,
    /// The zygote's socket reached EOF: no more reports will come.
    dead: bool,
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn register(&self, serial: u64) {
        self.lock().exits.insert(serial, None);
    }

    pub(super) fn record(&self, serial: u64, exit: Exit) {
        let mut state = self.lock();
        // A child whose Process is gone has nobody to tell.
        if let Some(slot) = state.exits.get_mut(&serial) {
            *slot = Some(exit);
            self.changed.notify_all();
        }
    }

    pub(super) fn mark_dead(&self) {
        self.lock().dead = true;
        self.changed.notify_all();
    }

    pub(super) fn dead(&self) -> bool {
        self.lock().dead
    }

    /// Children with a live `Process` and no exit report yet.
    pub(super) fn live(&self) -> usize {
        self.lock().exits.values().filter(|e| e.is_none()).count()
    }
}

/// What a `Process` started by the zygote needs to learn its exit status.
#[derive(Debug)]
pub(crate) struct Ticket {
    reports: Arc<Reports>,
    serial: u64,
    exit: OnceLock<Exit>,
}

impl Ticket {
    pub(super) fn new(reports: Arc<Reports>, serial: u64) -> Ticket {
        Ticket {
            reports,
            serial,
            exit: OnceLock::new(),
        }
    }

    /// `Process::try_wait` for a zygote child: its reported exit, None while it runs.
    /// Once the pidfd says it has exited, waits up to `REPORT_WAIT` for the report; if
    /// none can come (the zygote died too) the status is unknown: `Exit::Code(-1)`, as
    /// for a child someone else reaped.
    pub(crate) fn try_wait(&self, pidfd: &OwnedFd) -> io::Result<Option<Exit>> {
        if let Some(exit) = self.exit.get() {
            return Ok(Some(*exit));
        }
        let reported = |state: &ReportState| state.exits.get(&self.serial).copied().flatten();
        if let Some(exit) = reported(&self.reports.lock()) {
            return Ok(Some(self.settle(exit)));
        }
        if !pidfd_readable(pidfd)? {
            return Ok(None);
        }
        let deadline = Instant::now() + REPORT_WAIT;
        let mut state = self.reports.lock();
        let exit = loop {
            if let Some(exit) = reported(&state) {
                break exit;
            }
            let now = Instant::now();
            if state.dead || now >= deadline {
                break Exit::Code(-1);
            }
            state = self
                .reports
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(state);
        Ok(Some(self.settle(exit)))
    }

    fn settle(&self, exit: Exit) -> Exit {
        *self.exit.get_or_init(|| exit)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.reports.lock().exits.remove(&self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    use crate::supervisor::launch::pidfd_open;

    /// A child that has exited but is not reaped yet, and its pidfd.
    fn exited_child() -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        (child, pidfd)
    }

    #[test]
    fn try_wait_waits_briefly_for_a_late_report() {
        let (mut child, pidfd) = exited_child();
        let reports = Arc::new(Reports::default());
        reports.register(7);
        let ticket = Ticket::new(Arc::clone(&reports), 7);
        let late = Arc::clone(&reports);
        let reporter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            late.record(7, Exit::Code(4));
        });
        let started = Instant::now();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(4)));
        assert!(started.elapsed() < REPORT_WAIT);
        reporter.join().unwrap();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(4)));
        drop(ticket);
        assert_eq!(reports.live(), 0);
        assert!(reports.lock().exits.is_empty());
        child.wait().unwrap();
    }

    #[test]
    fn try_wait_gives_up_when_the_zygote_is_gone() {
        let (mut child, pidfd) = exited_child();
        let reports = Arc::new(Reports::default());
        reports.register(1);
        let ticket = Ticket::new(Arc::clone(&reports), 1);
        reports.mark_dead();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(-1)));
        child.wait().unwrap();
    }

    #[test]
    fn try_wait_is_none_while_the_child_runs() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        let reports = Arc::new(Reports::default());
        reports.register(1);
        let ticket = Ticket::new(Arc::clone(&reports), 1);
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), None);
        assert_eq!(reports.live(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
