//! Blocking on an iceoryx2 listener in short slices, so timeouts and interrupts are honoured.

use std::time::{Duration, Instant};

use iceoryx2::port::listener::{Listener, ListenerWaitError};
use iceoryx2::prelude::EventActivation;

use super::settings::Svc;
use super::Interrupt;
use crate::error::{Error, Result};

/// Longest single wait; the interrupt check runs at least this often.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// The timeout of one blocking call.
pub(crate) struct Deadline {
    what: &'static str,
    start: Instant,
    timeout: Option<Duration>,
}

impl Deadline {
    pub(crate) fn new(what: &'static str, timeout: Option<Duration>) -> Self {
        Self {
            what,
            start: Instant::now(),
            timeout,
        }
    }

    /// Checks `interrupt`, then returns how long the next wait may last, or `Timeout`.
    pub(crate) fn next_slice(&self, interrupt: Interrupt) -> Result<Duration> {
        interrupt()?;
        match self.timeout {
            None => Ok(SLICE),
            Some(timeout) => {
                let elapsed = self.start.elapsed();
                if elapsed >= timeout {
                    Err(Error::Timeout {
                        what: self.what,
                        after: timeout,
                    })
                } else {
                    Ok(SLICE.min(timeout - elapsed))
                }
            }
        }
    }
}

/// Waits up to `slice` for events on `listener`, passing each (id, count) to `on_event`.
///
/// `EINTR` is not an error: the caller loops and runs its interrupt check.
pub(crate) fn wait_events(
    listener: &Listener<Svc>,
    slice: Duration,
    context: impl FnOnce() -> String,
    on_event: impl FnMut(EventActivation),
) -> Result<()> {
    match listener.timed_wait(on_event, slice) {
        Ok(_) | Err(ListenerWaitError::InterruptSignal) => Ok(()),
        Err(e) => Err(Error::ipc(context(), e)),
    }
}

/// Non-blocking variant of [`wait_events`]: collects what is pending.
pub(crate) fn drain_events(
    listener: &Listener<Svc>,
    context: impl FnOnce() -> String,
    on_event: impl FnMut(EventActivation),
) -> Result<()> {
    match listener.try_wait(on_event) {
        Ok(_) | Err(ListenerWaitError::InterruptSignal) => Ok(()),
        Err(e) => Err(Error::ipc(context(), e)),
    }
}
