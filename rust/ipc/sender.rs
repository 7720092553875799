//! The sending end of a channel and its writable loans.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::prelude::*;
use iceoryx2::sample_mut::SampleMut;

use super::channel::{self, FrameAlign, Services, EV_FRAME};
use super::node::{self, ProcessNode};
use super::settings::Svc;
use super::wait::{self, Deadline};
use super::{linger, ChannelConfig, Interrupt};
use crate::error::{Error, Result};
use crate::fork::Generation;

/// Tells loans of different senders apart, so a loan cannot be sent on the wrong channel
/// (that would corrupt both channels' credit counts).
static NEXT_SENDER_ID: AtomicU64 = AtomicU64::new(1);

/// Sending end of channel `name`. `Send + Sync`; concurrent `send`/`flush` calls are
/// serialised (a second caller waits for the first, beyond its own timeout if need be).
///
/// If the receiver goes away, `send` fails with `Closed` until a receiver reopens the
/// channel; frames the old receiver had not taken are lost with it.
///
/// Dropping never blocks and loses no frame while the receiver lives: if it has not taken
/// every frame yet, the ports stay alive on a background thread until it has (or is gone),
/// and the receiver sees `Closed` only after the last frame. At process exit such senders
/// get `linger::EXIT_GRACE` (1 s) before they are released anyway.
pub struct Sender {
    id: u64,
    max_payload: usize,
    credit: Mutex<Credit>,
    /// The fork generation that opened the ports (see `Drop`).
    generation: Generation,
    link: ManuallyDrop<Link>,
}

/// What a sender holds in iceoryx2, and all that waiting for its receiver needs (also
/// after the `Sender` is dropped, see `linger`).
struct Link {
    name: String,
    /// The receiver queue depth as fixed by the service (may exceed our config if the
    /// receiver created the service).
    capacity: u64,
    ports: SenderPorts,
}

/// Declaration order is drop order: the publisher goes first so that when the `ready`
/// notifier's drop emits `EV_PEER_GONE`, the receiver already sees zero publishers.
struct SenderPorts {
    publisher: Publisher<Svc, [u8], FrameAlign>,
    ready: Notifier<Svc>,
    credit: Listener<Svc>,
    services: Services,
    _node: Arc<ProcessNode>,
}

#[derive(Default)]
struct Credit {
    /// Frames delivered into the receiver's queue.
    sent: u64,
    /// Frames the receiver reported taken out of the queue (`EV_FRAME` counts on `credit`).
    taken: u64,
    /// A receiver was connected at some point; its absence now means "closed".
    receiver_seen: bool,
}

impl Credit {
    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.taken)
    }

    /// Listener callback adding the receiver's reported takes.
    fn collect(&mut self) -> impl FnMut(EventActivation) + '_ {
        |ev| {
            if ev.id == EV_FRAME {
                self.taken += ev.count;
            }
        }
    }
}

/// What [`Sender::wait_until`] waits for.
#[derive(Clone, Copy)]
enum Goal {
    /// Room for one more frame in the receiver's queue.
    Room,
    /// Every sent frame taken by the receiver.
    Drained,
}

impl Sender {
    /// Creates the sending end of channel `name` (iceoryx2 service `zerohop/<name>`).
    pub fn create(name: &str, cfg: &ChannelConfig) -> Result<Sender> {
        let ctx = |what: &str| format!("channel '{name}': {what}");
        let node = node::process_node()?;
        let services = channel::open_services(&node, name, cfg)?;
        // The listener must exist before the publisher: every credit or connect event the
        // receiver sends after seeing our publisher then has somewhere to go.
        let credit = services
            .credit
            .listener_builder()
            .create()
            .map_err(|e| Error::ipc(ctx("creating the credit listener"), e))?;
        let publisher = services
            .frames
            .publisher_builder()
            .initial_max_slice_len(cfg.initial_payload.max(1))
            .allocation_strategy(AllocationStrategy::PowerOfTwo)
            .max_loaned_samples(cfg.max_loans)
            // Only a safety net: credit accounting never sends into a full queue. If it
            // ever did, retrying is the one strategy that cannot lose the frame.
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| {
                Error::ipc(
                    ctx("creating the publisher (is there already a sender?)"),
                    e,
                )
            })?;
        let ready = services
            .ready
            .notifier_builder()
            .default_event_id(EV_FRAME)
            .create()
            .map_err(|e| Error::ipc(ctx("creating the ready notifier"), e))?;
        let capacity = services.frames.static_config().subscriber_max_buffer_size() as u64;
        Ok(Sender {
            id: NEXT_SENDER_ID.fetch_add(1, Ordering::Relaxed),
            max_payload: cfg.max_payload,
            credit: Mutex::new(Credit::default()),
            generation: Generation::now(),
            link: ManuallyDrop::new(Link {
                name: name.to_owned(),
                capacity,
                ports: SenderPorts {
                    publisher,
                    ready,
                    credit,
                    services,
                    _node: node,
                },
            }),
        })
    }

    /// The channel name this sender was created with.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// Loans a writable shared-memory buffer of exactly `len` bytes. Its contents are
    /// unspecified (old frame bytes or zeros): write all of it.
    ///
    /// Never waits: iceoryx2 sizes the sender's memory for the worst case
    /// (`capacity + max_borrowed + 1 + max_loans` chunks) and grows it with the frame size,
    /// so the receiver holding samples cannot exhaust it. Fails if `max_loans` loans are
    /// already out (waiting for the caller's own loans could deadlock) or if /dev/shm is
    /// full.
    pub fn loan(&self, len: usize) -> Result<Loan> {
        if len > self.max_payload {
            return Err(Error::PayloadTooLarge {
                size: len,
                max: self.max_payload,
            });
        }
        let uninit = self
            .link
            .ports
            .publisher
            .loan_slice_uninit(len)
            .map_err(|e| {
                Error::ipc(format!("channel '{}': loaning {len} bytes", self.name()), e)
            })?;
        // SAFETY: the bytes live in a POSIX shared-memory mapping (shm_open + ftruncate in
        // iceoryx2-bb-posix `shared_memory.rs`; iceoryx2-cal `posix_shared_memory.rs` asks
        // for `zero_memory(false)`, so no memset), whose fresh pages the kernel zero-fills and
        // which later only ever hold bytes of earlier frames. Every byte is therefore an initialised `u8`, and
        // `u8` has no invalid values. Zeroing 10 MiB per loan would cost more than sending it.
        let mut sample = unsafe { uninit.assume_init() };
        let bytes = sample.payload_mut();
        debug_assert_eq!(bytes.len(), len);
        let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
        Ok(Loan {
            sample,
            ptr,
            len,
            sender_id: self.id,
        })
    }

    /// Sends a loaned buffer. Waits (event driven) until the receiver is connected and has
    /// room in its queue; frames are never dropped.
    ///
    /// Errors: `Timeout` (frame not sent), `Interrupted`/the interrupt's error, `Closed`
    /// when the receiver went away.
    pub fn send(&self, loan: Loan, timeout: Option<Duration>, interrupt: Interrupt) -> Result<()> {
        if loan.sender_id != self.id {
            return Err(Error::Config(format!(
                "channel '{}': the loan belongs to another sender",
                self.name()
            )));
        }
        let mut credit = self.lock_credit();
        self.link
            .wait_until(&mut credit, Goal::Room, timeout, interrupt)?;
        let delivered = loan
            .sample
            .send()
            .map_err(|e| Error::ipc(format!("channel '{}': sending a frame", self.name()), e))?;
        if delivered == 0 {
            // The receiver disconnected between our check and the delivery.
            return Err(Error::Closed(self.name().to_owned()));
        }
        credit.sent += 1;
        drop(credit);
        // A failed wake-up is not worth failing a delivered frame for (the caller might
        // resend and duplicate it): the receiver re-checks at least every 50 ms anyway.
        let _ = self.link.ports.ready.notify_with_custom_event_id(EV_FRAME);
        Ok(())
    }

    /// Sends the concatenation of `parts` as one frame (one copy into shared memory).
    pub fn send_copy(
        &self,
        parts: &[&[u8]],
        timeout: Option<Duration>,
        interrupt: Interrupt,
    ) -> Result<()> {
        let len = parts
            .iter()
            .try_fold(0usize, |acc, part| acc.checked_add(part.len()))
            .ok_or(Error::PayloadTooLarge {
                size: usize::MAX,
                max: self.max_payload,
            })?;
        let mut loan = self.loan(len)?;
        let mut at = 0;
        for part in parts {
            loan[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.send(loan, timeout, interrupt)
    }

    /// Waits until the receiver has taken every frame sent so far. `Closed` if the
    /// receiver went away before taking them.
    ///
    /// Not needed before dropping the sender (dropping keeps undelivered frames alive, see
    /// [`Sender`]), but it tells the caller that the stream was consumed.
    pub fn flush(&self, timeout: Option<Duration>, interrupt: Interrupt) -> Result<()> {
        let mut credit = self.lock_credit();
        self.link
            .wait_until(&mut credit, Goal::Drained, timeout, interrupt)
    }

    /// Frames sent that the receiver has not taken yet (credits in use) and its queue
    /// depth (the credits there are), for metrics. The receiver's pending reports are
    /// collected first. A sender waiting for room holds its credit lock for the wait:
    /// then every credit is in use, which is what is reported (never blocking a scrape).
    pub fn credits(&self) -> (u64, u64) {
        let capacity = self.link.capacity;
        let Ok(mut credit) = self.credit.try_lock() else {
            return (capacity, capacity);
        };
        let ctx = || format!("channel '{}': reading credits", self.link.name);
        let _ = wait::drain_events(&self.link.ports.credit, ctx, credit.collect());
        (credit.in_flight().min(capacity), capacity)
    }

    fn lock_credit(&self) -> std::sync::MutexGuard<'_, Credit> {
        self.credit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn resource_ids(&self) -> Vec<String> {
        let p = &self.link.ports;
        let mut ids = vec![
            p.publisher.id().value().to_string(),
            p.ready.id().value().to_string(),
            p.credit.id().value().to_string(),
        ];
        ids.extend(super::tests::service_ids(&p.services));
        ids
    }
}

impl Link {
    /// Blocks on the credit listener until `goal` holds.
    ///
    /// No lost wake-ups: the listener exists before any receiver could notify, the state
    /// is re-checked after draining, and anything notified after the drain leaves the
    /// listener readable for the following `timed_wait`.
    fn wait_until(
        &self,
        credit: &mut Credit,
        goal: Goal,
        timeout: Option<Duration>,
        interrupt: Interrupt,
    ) -> Result<()> {
        let what = match goal {
            Goal::Room => "send",
            Goal::Drained => "flush",
        };
        let ctx = || format!("channel '{}': waiting for the receiver", self.name);
        let deadline = Deadline::new(what, timeout);
        let mut drained = false;
        loop {
            let receivers = self
                .ports
                .services
                .frames
                .dynamic_config()
                .number_of_subscribers();
            if receivers > 0 {
                credit.receiver_seen = true;
            }
            let reached = match goal {
                Goal::Room => receivers > 0 && credit.in_flight() < self.capacity,
                Goal::Drained => credit.in_flight() == 0,
            };
            if reached {
                return Ok(());
            }
            if receivers == 0 && credit.receiver_seen {
                // The receiver left and its queue went with it. Its last credits were
                // posted before it unregistered, so collect them and start counting afresh:
                // a receiver reopening the channel then gets a full queue.
                wait::drain_events(&self.ports.credit, ctx, |_| {})?;
                credit.sent = 0;
                credit.taken = 0;
                return Err(Error::Closed(self.name.clone()));
            }
            if receivers > 0 && !drained {
                // Out of credit as far as we know: collect what the receiver posted (the
                // per-id count is exact) before deciding to block.
                drained = true;
                wait::drain_events(&self.ports.credit, ctx, credit.collect())?;
                continue;
            }
            let slice = deadline.next_slice(interrupt)?;
            wait::wait_events(&self.ports.credit, slice, ctx, credit.collect())?;
        }
    }

    /// Releases the ports once the receiver has taken every frame sent (at once if it
    /// has, or if there is no receiver), on a background thread if need be.
    ///
    /// Releasing earlier loses the frames still queued: iceoryx2 only attaches a
    /// subscriber to a publisher, and maps the publisher's data segments, inside
    /// `Subscriber::receive`, while dropping the publisher unlinks its segments and, if the
    /// subscriber never attached, the connection holding the queued offsets.
    fn release(self, mut credit: Credit) {
        let no_interrupt: Interrupt = &|| Ok(());
        let pending = matches!(
            self.wait_until(
                &mut credit,
                Goal::Drained,
                Some(Duration::ZERO),
                no_interrupt
            ),
            Err(Error::Timeout { .. })
        );
        if pending {
            linger::spawn(move |exiting| {
                // Ends when drained, when the receiver goes (`EV_PEER_GONE`/`EV_PEER_DEAD`
                // wake us) or at process exit; any of them means: release now.
                let _ = self.wait_until(&mut credit, Goal::Drained, None, exiting);
                drop(self);
            });
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // In a forked child (see `fork.rs`) these ports are copies of the parent's:
        // releasing them would unregister the parent's ports. Leak them instead.
        if self.generation.is_current() {
            // SAFETY: taken exactly once, here; `self.link` is not used afterwards.
            let link = unsafe { ManuallyDrop::take(&mut self.link) };
            let credit = std::mem::take(
                self.credit
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            link.release(credit);
        }
    }
}

/// A writable frame buffer in the sender's shared memory, exactly as long as requested.
///
/// Holds the iceoryx2 sample, which keeps the publisher's memory mapped while the loan
/// lives (even if the `Sender` is dropped first). Dropping an unsent loan returns it.
pub struct Loan {
    sample: SampleMut<Svc, [u8], FrameAlign>,
    /// Cached payload slice: iceoryx2's `payload_mut` takes two mutexes per call.
    ptr: *mut u8,
    len: usize,
    sender_id: u64,
}

// SAFETY: `SampleMut` is `Send` for the thread-safe service; `ptr` points into memory that
// `sample` owns exclusively until it is sent or dropped.
unsafe impl Send for Loan {}

impl Deref for Loan {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: see `unsafe impl Send`; initialised as argued in `Sender::loan`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for Loan {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("len", &self.len).finish()
    }
}
