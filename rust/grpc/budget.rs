//! Queues bounded by bytes: what a stream holds for a client that does not read, or
//! has sent ahead of its pipeline, is at most `[server] max_buffered_bytes_per_stream`
//! in each direction.
//!
//! A count bound (the old 32 responses) means 32 × 64 MiB for a client that stops
//! reading a video stream; a byte bound means the same memory whatever the frame size.
//! Each item reserves its size from a semaphore before it is queued and gives it back
//! when the consumer takes it, so the producer (the session's driver, or the task
//! reading the client's requests) waits while the queue is full — the pipeline behind
//! it waits in turn, nothing is dropped. An item larger than the whole budget takes
//! all of it: it waits for an empty queue and then passes alone, so no frame the
//! payload cap allows is refused here.
//!
//! Room is reserved *before* the item is built where that is possible
//! ([`Sender::reserve`]): the driver reserves a frame's size before copying it out of
//! shared memory, so a full queue holds no extra copy in the waiting thread.
//!
//! What lies outside the queue is one item per party: the message tonic is encoding or
//! HTTP/2 is sending (h2 buffers one DATA frame past the peer's window; hyper asks for
//! the next only when it has gone), and on the input side the message being decoded
//! and the chunk the feeder is sending into the session.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;

/// Bytes an item costs besides its payload (its struct and the queue's node).
fn cost<T>(bytes: usize) -> usize {
    bytes.saturating_add(std::mem::size_of::<T>())
}

/// A queue of `T` holding at most `budget` bytes (clamped to `1..=u32::MAX`).
pub fn channel<T>(budget: usize) -> (Sender<T>, Receiver<T>) {
    let budget = budget.clamp(1, u32::MAX as usize) as u32;
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(budget as usize));
    (Sender { tx, room, budget }, Receiver { rx })
}

/// The receiving side is gone: nobody will take the item.
#[derive(Debug)]
pub struct Closed;

pub struct Sender<T> {
    tx: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    budget: u32,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            room: Arc::clone(&self.room),
            budget: self.budget,
        }
    }
}

/// Room for one item, reserved; queue the item with [`Slot::send`] (dropping the slot
/// gives the room back).
pub struct Slot<T> {
    tx: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    permit: OwnedSemaphorePermit,
}

impl<T> Slot<T> {
    pub fn send(self, item: T) {
        // A receiver gone since the reservation drops the item, as a send would fail.
        let _ = self.tx.send((item, self.permit));
    }
}

impl<T> Sender<T> {
    /// Waits for room for an item of `bytes` payload bytes; fails once the receiver is
    /// gone (a full queue whose consumer left must not wait for ever).
    pub async fn reserve(&self, bytes: usize) -> Result<Slot<T>, Closed> {
        let want = cost::<T>(bytes).min(self.budget as usize) as u32;
        let room = Arc::clone(&self.room);
        let permit = tokio::select! {
            permit = room.acquire_many_owned(want) => permit.map_err(|_| Closed)?,
            _ = self.tx.closed() => return Err(Closed),
        };
        // A receiver dropped with items queued gives their room back as it goes.
        if self.tx.is_closed() {
            return Err(Closed);
        }
        Ok(Slot {
            tx: self.tx.clone(),
            permit,
        })
    }

    /// Queues `item` of `bytes` payload bytes once there is room.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), Closed> {
        self.reserve(bytes).await?.send(item);
        Ok(())
    }

    /// The receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Taking an item gives its room back.
pub struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>,
}

impl<T> Receiver<T> {
    /// The next item, blocking the calling thread (never call on the async runtime);
    /// `None` once every sender is gone and the queue is empty.
    pub fn blocking_recv(&mut self) -> Option<T> {
        self.rx.blocking_recv().map(|(item, _room)| item)
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|(item, _room)| item))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    const ITEM: usize = std::mem::size_of::<u32>();

    #[tokio::test]
    async fn a_full_queue_waits_until_an_item_is_taken() {
        let (tx, mut rx) = channel::<u32>(100 + 2 * ITEM);
        tx.send(1, 60).await.unwrap();
        tx.send(2, 40).await.unwrap();
        // Full: the third waits...
        let third = tokio::time::timeout(Duration::from_millis(50), tx.send(3, 1)).await;
        assert!(third.is_err(), "a full queue took more");
        // ...until the first is taken.
        assert_eq!(rx.next().await, Some(1));
        tx.send(3, 1).await.unwrap();
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.next().await, Some(2));
        assert_eq!(rx.next().await, Some(3));
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_passes_alone() {
        let (tx, mut rx) = channel::<u32>(1000);
        tx.send(1, 10).await.unwrap();
        let big = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 1 << 30)).await;
        assert!(
            big.is_err(),
            "the large item did not wait for an empty queue"
        );
        assert_eq!(rx.next().await, Some(1));
        tx.send(2, 1 << 30).await.unwrap();
        let after = tokio::time::timeout(Duration::from_millis(50), tx.send(3, 1)).await;
        assert!(
            after.is_err(),
            "the large item did not take the whole budget"
        );
        assert_eq!(rx.next().await, Some(2));
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_fails_when_the_receiver_goes() {
        let (tx, rx) = channel::<u32>(10);
        tx.send(1, 10).await.unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2, 10).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let outcome = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(matches!(outcome, Ok(Ok(Err(Closed)))));
        assert!(tx.is_closed());
    }

    #[test]
    fn a_blocking_receiver_gives_room_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = channel::<u32>(10 + ITEM);
        runtime.block_on(tx.send(1, 10)).unwrap();
        assert_eq!(rx.blocking_recv(), Some(1));
        runtime.block_on(tx.send(2, 10)).unwrap();
        drop(tx);
        assert_eq!(rx.blocking_recv(), Some(2));
        assert_eq!(rx.blocking_recv(), None);
    }
}
