//! The three iceoryx2 services behind one channel, and the event ids they carry.

use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{event, publish_subscribe};

use super::node::ProcessNode;
use super::settings::Svc;
use super::ChannelConfig;
use crate::error::{Error, Result};

/// Frames: dynamic `[u8]` slices behind an alignment-only user header.
pub(crate) type FrameService = publish_subscribe::PortFactory<Svc, [u8], FrameAlign>;
pub(crate) type EventService = event::PortFactory<Svc>;

/// Default id of both notifiers: "frame sent" on `ready`, "frame taken" on `credit`.
pub(crate) const EV_FRAME: EventId = EventId::new(0);
/// The receiver's subscriber exists (sent once on `credit` by `Receiver::open`).
pub(crate) const EV_CONNECTED: EventId = EventId::new(1);
/// Emitted by iceoryx2 itself when the peer's notifier is dropped: the peer closed.
pub(crate) const EV_PEER_GONE: EventId = EventId::new(2);
/// Emitted by iceoryx2 when a dead peer's notifier is cleaned up (`reclaim_dead`).
pub(crate) const EV_PEER_DEAD: EventId = EventId::new(3);
/// A small id space keeps the listener's per-id counter array (drained on every wait) tiny.
const EVENT_ID_MAX: usize = 3;

/// Alignment of the first byte of every frame. Frames start with a 128-byte header and
/// want their payload 64-byte aligned (cache line / SIMD), so the frame start must be too.
pub(crate) const FRAME_ALIGNMENT: usize = 64;

/// Empty user header whose only job is to 64-byte align the payload.
///
/// Why not `payload_alignment(64)`: iceoryx2 0.10 sizes a slice chunk as
/// `align(element_size, payload_alignment) * len` (`MessageTypeDetails::chunk_layout`), so
/// on `[u8]` it reserves 64 bytes per byte. A 64-aligned zero-sized user header instead
/// makes the chunk 64-aligned and places the payload right after it
/// (`payload_ptr_from_header`), costing at most 63 bytes of padding per chunk.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
#[repr(align(64))]
pub(crate) struct FrameAlign;

// SAFETY: zero-sized and data-free, so identical in every process; the explicit type
// name keeps both ends compatible even if this module or the crate is renamed (iceoryx2
// compares user header type names when opening a service).
unsafe impl ZeroCopySend for FrameAlign {
    unsafe fn type_name() -> &'static str {
        "zerohop::FrameAlign64"
    }
}

const _: () = assert!(std::mem::align_of::<FrameAlign>() == FRAME_ALIGNMENT);
const _: () = assert!(std::mem::size_of::<FrameAlign>() == 0);

pub(crate) struct Services {
    pub(crate) frames: FrameService,
    /// sender -> receiver
    pub(crate) ready: EventService,
    /// receiver -> sender
    pub(crate) credit: EventService,
}

/// Opens (or creates, whichever end comes first) the services of channel `name`.
///
/// Both ends use `open_or_create` with identical settings so that start order between
/// processes does not matter.
pub(crate) fn open_services(
    node: &ProcessNode,
    name: &str,
    cfg: &ChannelConfig,
) -> Result<Services> {
    cfg.validate()?;
    let ctx = |what: &str| format!("channel '{name}': {what}");
    let service_name = |suffix: &str| -> Result<ServiceName> {
        let full = format!("zerohop/{name}{suffix}");
        ServiceName::new(&full)
            .map_err(|e| Error::Config(format!("invalid channel name '{name}': {e:?}")))
    };

    let node = node.lock();
    let frames = node
        .service_builder(&service_name("")?)
        .publish_subscribe::<[u8]>()
        .user_header::<FrameAlign>()
        // Never overwrite unread frames: a full queue blocks the sender instead.
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(cfg.capacity)
        // +1: the receiver keeps one slot in reserve to copy frames out when the user
        // already holds `max_borrowed` zero-copy samples (see `receiver.rs`).
        .subscriber_max_borrowed_samples(cfg.max_borrowed + 1)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
        .map_err(|e| Error::ipc(ctx("opening the frame service"), e))?;

    let event_service = |suffix: &str, what: &str| -> Result<EventService> {
        node.service_builder(&service_name(suffix)?)
            .event()
            .max_notifiers(1)
            .max_listeners(1)
            .event_id_max_value(EVENT_ID_MAX)
            .notifier_dropped_event(EV_PEER_GONE)
            .notifier_dead_event(EV_PEER_DEAD)
            .open_or_create()
            .map_err(|e| Error::ipc(ctx(what), e))
    };
    let ready = event_service("/ready", "opening the ready event service")?;
    let credit = event_service("/credit", "opening the credit event service")?;
    Ok(Services {
        frames,
        ready,
        credit,
    })
}
