//! The receiving end of a channel and its read-only samples.
//!
//! **Borrow limit.** iceoryx2 caps how many samples a subscriber may hold at once, and a
//! Python user may keep any number of numpy views alive (each holds a `Sample`). So the
//! first `max_borrowed` live frames are zero-copy views into shared memory; while that
//! many are alive, further frames are received into one reserve slot (the service allows
//! `max_borrowed + 1`), copied to the heap and released at once. Receiving therefore never
//! fails or deadlocks because the user holds samples.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample as IoxSample;

use super::channel::{self, FrameAlign, Services, EV_CONNECTED, EV_FRAME};
use super::node::{self, ProcessNode};
use super::settings::Svc;
use super::wait::{self, Deadline};
use super::{ChannelConfig, Interrupt};
use crate::error::{Error, Result};
use crate::fork::Generation;

/// Receiving end of channel `name`. `Send + Sync`.
pub struct Receiver {
    name: String,
    max_borrowed: usize,
    /// Zero-copy samples of this receiver currently alive (decremented by `Sample::drop`).
    live: Arc<AtomicUsize>,
    /// Serialises "check `live`, receive" so concurrent receives cannot overshoot the
    /// borrow limit.
    take_lock: Mutex<()>,
    /// A sender was connected at some point (seen in the publisher count, by a frame or by
    /// an event on `ready`); its absence now means "closed".
    sender_seen: AtomicBool,
    /// The fork generation that opened the ports (see `Drop`).
    generation: Generation,
    ports: ManuallyDrop<ReceiverPorts>,
}

/// Declaration order is drop order: the subscriber goes first so that when the `credit`
/// notifier's drop emits `EV_PEER_GONE`, the sender already sees zero subscribers.
struct ReceiverPorts {
    subscriber: Subscriber<Svc, [u8], FrameAlign>,
    credit: Notifier<Svc>,
    ready: Listener<Svc>,
    services: Services,
    _node: Arc<ProcessNode>,
}

impl Receiver {
    /// Opens the receiving end of channel `name`. The sender may be created before or
    /// after; frames it sends before this call wait for it (they are not lost).
    pub fn open(name: &str, cfg: &ChannelConfig) -> Result<Receiver> {
        let ctx = |what: &str| format!("channel '{name}': {what}");
        let node = node::process_node()?;
        let services = channel::open_services(&node, name, cfg)?;
        // Listener before subscriber: a frame sent as soon as the subscriber exists must
        // find the listener there to wake.
        let ready = services
            .ready
            .listener_builder()
            .create()
            .map_err(|e| Error::ipc(ctx("creating the ready listener"), e))?;
        let subscriber = services.frames.subscriber_builder().create().map_err(|e| {
            Error::ipc(
                ctx("creating the subscriber (is there already a receiver?)"),
                e,
            )
        })?;
        let credit = services
            .credit
            .notifier_builder()
            .default_event_id(EV_FRAME)
            .create()
            .map_err(|e| Error::ipc(ctx("creating the credit notifier"), e))?;
        // Wakes a sender waiting for a receiver. If this fails, the sender still sees us
        // on its next 50 ms re-check.
        let _ = credit.notify_with_custom_event_id(EV_CONNECTED);
        Ok(Receiver {
            name: name.to_owned(),
            max_borrowed: cfg.max_borrowed,
            live: Arc::new(AtomicUsize::new(0)),
            take_lock: Mutex::new(()),
            sender_seen: AtomicBool::new(false),
            generation: Generation::now(),
            ports: ManuallyDrop::new(ReceiverPorts {
                subscriber,
                credit,
                ready,
                services,
                _node: node,
            }),
        })
    }

    /// The channel name this receiver was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next frame.
    ///
    /// Errors: `Timeout`, `Interrupted`/the interrupt's error, `Closed` once the sender is
    /// gone and every frame it sent has been received.
    pub fn recv(&self, timeout: Option<Duration>, interrupt: Interrupt) -> Result<Sample> {
        let deadline = Deadline::new("recv", timeout);
        loop {
            if let Some(sample) = self.take()? {
                return Ok(sample);
            }
            if self.sender_gone() {
                // It may have sent a last frame between our take and its departure.
                return self.take()?.ok_or_else(|| Error::Closed(self.name.clone()));
            }
            let slice = deadline.next_slice(interrupt)?;
            wait::wait_events(
                &self.ports.ready,
                slice,
                || self.ctx("waiting for a frame"),
                |_| self.saw_sender_event(),
            )?;
        }
    }

    /// Returns the next frame if one is pending, without blocking. `Err(Closed)` once the
    /// sender is gone and nothing is pending.
    ///
    /// Returning `None` also consumes the wake-up on [`Receiver::wait_fd`], so an event loop
    /// does not spin on a readable fd.
    pub fn try_recv(&self) -> Result<Option<Sample>> {
        if let Some(sample) = self.take()? {
            return Ok(Some(sample));
        }
        // Clear the fd, then look again: a frame sent just before the clear is found now,
        // one sent after it makes the fd readable again.
        wait::drain_events(
            &self.ports.ready,
            || self.ctx("clearing wake-ups"),
            |_| self.saw_sender_event(),
        )?;
        if let Some(sample) = self.take()? {
            return Ok(Some(sample));
        }
        if self.sender_gone() {
            return self
                .take()?
                .map(Some)
                .ok_or_else(|| Error::Closed(self.name.clone()));
        }
        Ok(None)
    }

    /// File descriptor that becomes readable when a frame may be available (for asyncio
    /// `loop.add_reader` / tokio `AsyncFd`). After it fires, call [`Receiver::try_recv`]
    /// until it returns `None`. Valid as long as the receiver lives.
    pub fn wait_fd(&self) -> RawFd {
        // SAFETY: only reads the descriptor number; ownership stays with the listener.
        unsafe { self.ports.ready.file_descriptor().native_handle() }
    }

    fn ctx(&self, what: &str) -> String {
        format!("channel '{}': {what}", self.name)
    }

    /// Any event on `ready` proves that a sender existed: its notifier lives within its
    /// publisher's lifetime, except for the `EV_PEER_GONE`/`EV_PEER_DEAD` emitted after
    /// the publisher is gone. A sender created and dropped between two calls of ours is
    /// never seen in the publisher count, only through these events.
    fn saw_sender_event(&self) {
        self.sender_seen.store(true, Ordering::Relaxed);
    }

    /// True if a sender was connected before and is not anymore.
    fn sender_gone(&self) -> bool {
        let senders = self
            .ports
            .services
            .frames
            .dynamic_config()
            .number_of_publishers();
        if senders > 0 {
            self.sender_seen.store(true, Ordering::Relaxed);
            false
        } else {
            self.sender_seen.load(Ordering::Relaxed)
        }
    }

    /// Takes one frame out of the queue if there is one (zero-copy or heap copy, see the
    /// module docs) and gives the sender one credit back.
    fn take(&self) -> Result<Option<Sample>> {
        let _guard = self
            .take_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // `live` only grows under `take_lock`, so this check cannot be overtaken. It is an
        // upper bound of iceoryx2's own borrow count (a sample is released before `live`
        // is decremented), so a zero-copy receive below always has a free slot.
        let zero_copy = self.live.load(Ordering::Acquire) < self.max_borrowed;
        let Some(sample) = self
            .ports
            .subscriber
            .receive()
            .map_err(|e| Error::ipc(self.ctx("receiving a frame"), e))?
        else {
            return Ok(None);
        };
        self.sender_seen.store(true, Ordering::Relaxed);
        // The queue slot is free now. If the wake-up fails, the count is still recorded
        // (iceoryx2 bumps the counter before signalling) and the sender re-reads it within
        // 50 ms, so there is nothing better to do than go on.
        let _ = self.ports.credit.notify_with_custom_event_id(EV_FRAME);
        if zero_copy {
            self.live.fetch_add(1, Ordering::AcqRel);
            Ok(Some(Sample::zero_copy(sample, Arc::clone(&self.live))))
        } else {
            let bytes = sample.payload().to_vec();
            drop(sample);
            Ok(Some(Sample(Backing::Heap(bytes))))
        }
    }

    #[cfg(test)]
    pub(crate) fn resource_ids(&self) -> Vec<String> {
        let p = &self.ports;
        let mut ids = vec![
            p.subscriber.id().value().to_string(),
            p.credit.id().value().to_string(),
            p.ready.id().value().to_string(),
        ];
        ids.extend(super::tests::service_ids(&p.services));
        ids
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // See `Sender::drop`: never release a forked parent's ports from the child.
        if self.generation.is_current() {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.ports) };
        }
    }
}

/// One received frame, read-only.
///
/// Either a zero-copy view into the sender's shared memory or a heap copy (see the module
/// docs); both deref to the frame bytes. It stays valid after the `Receiver` (and the
/// sender) are dropped: the iceoryx2 sample holds an `Arc` to the subscriber's state,
/// which owns the mapping of the sender's data segment.
pub struct Sample(Backing);

enum Backing {
    Shm(ShmFrame),
    Heap(Vec<u8>),
}

struct ShmFrame {
    sample: ManuallyDrop<IoxSample<Svc, [u8], FrameAlign>>,
    /// Cached payload slice: iceoryx2's `payload()` takes the subscriber mutex per call.
    ptr: *const u8,
    len: usize,
    live: Arc<AtomicUsize>,
}

impl Drop for ShmFrame {
    fn drop(&mut self) {
        // Release to iceoryx2 first, then free our slot, keeping `live` >= iceoryx2's count.
        // SAFETY: dropped exactly once, here.
        unsafe { ManuallyDrop::drop(&mut self.sample) };
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

// SAFETY: the iceoryx2 sample is `Send` for the thread-safe service and is only touched
// again in `drop` (`&mut`). Through `&Sample` only the frame bytes are reachable, and they
// are immutable while the sample is borrowed (the sender cannot reuse the chunk before
// it is released), so sharing `&Sample` across threads is sound.
unsafe impl Send for ShmFrame {}
unsafe impl Sync for ShmFrame {}

impl Sample {
    fn zero_copy(sample: IoxSample<Svc, [u8], FrameAlign>, live: Arc<AtomicUsize>) -> Self {
        let bytes = sample.payload();
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        Sample(Backing::Shm(ShmFrame {
            sample: ManuallyDrop::new(sample),
            ptr,
            len,
            live,
        }))
    }

    /// True if this sample is a view into shared memory, false if it is a heap copy.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.0, Backing::Shm(_))
    }
}

impl Deref for Sample {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: `ptr`/`len` describe the payload of the sample kept alive in `frame`.
            Backing::Shm(frame) => unsafe { std::slice::from_raw_parts(frame.ptr, frame.len) },
            Backing::Heap(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("len", &self.len())
            .field("zero_copy", &self.is_zero_copy())
            .finish()
    }
}
