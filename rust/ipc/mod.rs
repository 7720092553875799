//! Zero-copy shared-memory channels between processes, built on iceoryx2.
//!
//! A channel `name` is one iceoryx2 publish-subscribe service `zerohop/<name>` carrying
//! `[u8]` frames, plus two event services:
//!
//! * `zerohop/<name>/ready` (sender -> receiver): "a frame may be waiting"; the receiver
//!   blocks on it instead of polling.
//! * `zerohop/<name>/credit` (receiver -> sender): one `EV_FRAME` event per frame taken out
//!   of the queue, and "receiver connected" / "receiver gone".
//!
//! **Backpressure is credit based.** iceoryx2 0.10 would either drop (`DiscardData`) or
//! spin/sleep inside `send` (`RetryUntilDelivered` uses an `AdaptiveWait`, not an event);
//! its backpressure handler can only discard the sample once it gives up; and a full queue
//! whose subscriber has not attached to a late publisher yet is silently skipped
//! (`NoConnectedReceiverAndBufferIsFull`). Instead the sender counts frames it delivered and
//! the receiver's `EV_FRAME` events (the listener reports exact per-id counts) and never
//! pushes into a full queue: when `sent - taken == capacity` it blocks on the credit
//! listener. So no frame is ever dropped, and every wait is event driven.
//! The receiver's per-frame notify is cheap (~20 ns): iceoryx2 only writes to the socket
//! when the listener has drained since the previous notification, and the sender drains
//! only when it runs out of credit (see `tests.rs::notify_cost`).
//!
//! **Closing.** Dropping both ends removes every file of the channel. Dropping a sender
//! loses no frame while the receiver lives: iceoryx2 0.10 discards whatever a subscriber
//! has not attached to or mapped yet when the publisher goes, so a sender dropped with
//! frames still queued keeps its ports on a background thread until the receiver has
//! taken them or is gone (bounded at process exit, see `linger.rs`). The receiver reports
//! `Closed` after the last frame; it also learns of a sender it never saw from the
//! `EV_PEER_GONE` its `ready` notifier emits when dropped.
//!
//! **Memory.** The sender's segment holds `capacity + max_borrowed + 1 + max_loans` chunks
//! (iceoryx2's worst case, so loans never run out) of the largest frame size seen so far,
//! rounded up to a power of two. That is address space, not RAM: tmpfs commits pages on
//! first touch and chunks are reused, e.g. 10 MiB frames at the default config reserve
//! 1.9 GiB but commit ~20 MiB when the receiver keeps up (`tests.rs::committed_memory`).
//!
//! Exactly one sender and one receiver per channel; fan-out uses one channel per edge.

mod channel;
mod cleanup;
mod linger;
mod node;
mod receiver;
mod sender;
mod settings;
mod wait;

#[cfg(test)]
mod tests;

pub use cleanup::reclaim_dead;
pub use receiver::{Receiver, Sample};
pub use sender::{Loan, Sender};

use crate::error::{Error, Result};

/// Tuning of one channel. Both ends should use the same values: whoever creates the
/// iceoryx2 services fixes them, and the other end must not ask for more.
///
/// The one shape of the channel settings: the host sends it to node processes as it is
/// (serde, in their start message), and Python holds it as `zerohop._native
/// .ChannelSettings`, which runtime.toml's `[channel]` section builds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelConfig {
    /// Receiver queue depth in frames. A full queue makes `send` wait (never drop).
    pub capacity: usize,
    /// Hard cap in bytes on one frame; larger frames fail with `PayloadTooLarge` before
    /// anything is allocated.
    pub max_payload: usize,
    /// Initial frame size the sender's shared memory is laid out for. Memory grows in
    /// powers of two with the real frame sizes (up to `max_payload`), so this only saves
    /// the first reallocation.
    pub initial_payload: usize,
    /// Zero-copy samples a receiver may hold at once. Later ones are heap copies.
    pub max_borrowed: usize,
    /// Loans a sender may hold at once.
    pub max_loans: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            capacity: 100,
            max_payload: 64 << 20,
            initial_payload: 4096,
            max_borrowed: 16,
            max_loans: 4,
        }
    }
}

impl ChannelConfig {
    /// Refuses settings no channel can work with (zero sizes, an initial payload past
    /// the maximum); create and open call it too.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("capacity", self.capacity),
            ("max_payload", self.max_payload),
            ("max_borrowed", self.max_borrowed),
            ("max_loans", self.max_loans),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("ChannelConfig.{field} must be > 0")));
            }
        }
        if self.initial_payload > self.max_payload {
            return Err(Error::Config(format!(
                "ChannelConfig.initial_payload ({}) exceeds max_payload ({})",
                self.initial_payload, self.max_payload
            )));
        }
        Ok(())
    }
}

/// Checked regularly while blocked (every <= 50 ms); an `Err` aborts the wait and is
/// returned. The Python glue uses it to raise `KeyboardInterrupt` on Ctrl-C.
pub type Interrupt<'a> = &'a dyn Fn() -> Result<()>;
