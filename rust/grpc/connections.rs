//! The connections `zerohop serve` accepts, bounded.
//!
//! tonic's own `TcpIncoming` accepts everything and, when `accept` fails (out of file
//! descriptors: `EMFILE`/`ENFILE`), hands the error to the server loop, which logs it and
//! polls again at once: the pending connection is still there, so accept fails again, and
//! the server spins a core while every new client times out. Nor does it bound how many
//! connections are open, or close one that never speaks HTTP/2 (50 of 50 silent sockets
//! stayed open 45 s). tonic 0.14 and hyper offer no handshake timeout and no connection
//! cap for a server, so this module is the incoming stream the server is given instead:
//!
//! * **A connection cap** (`[server] max_connections`): a connection past it is accepted
//!   and closed at once (the client sees its connection reset at once instead of waiting
//!   in the backlog), and counted.
//! * **A handshake timeout** (`[server] handshake_timeout_secs`): a connection that sends
//!   no byte within it is closed (reads fail with `TimedOut`, so hyper drops it). Once
//!   the client has spoken, HTTP/2 and the streams' own idle timeout take over.
//! * **Out of file descriptors**: accept is retried after a short back-off instead of at
//!   once, and the event is logged (the first time and every 100th), never spun on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics;

/// How long accepting waits after running out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(100);

/// The accepted connections of a listener, within the caps.
pub struct Incoming {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    handshake_timeout: Duration,
    backoff: Option<Pin<Box<Sleep>>>,
    /// Connections closed at once because `max_connections` were open.
    refused: u64,
    /// Accepts that failed for want of file descriptors.
    out_of_fds: u64,
}

impl Incoming {
    pub fn new(
        listener: TcpListener,
        max_connections: usize,
        handshake_timeout: Duration,
    ) -> Incoming {
        Incoming {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            handshake_timeout,
            backoff: None,
            refused: 0,
            out_of_fds: 0,
        }
    }
}

fn out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The first occurrence, then every 100th: a log line per event would flood the log.
fn worth_logging(count: u64) -> bool {
    count == 1 || count.is_multiple_of(100)
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = this.backoff.as_mut() {
                ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, _)) => match Arc::clone(&this.slots).try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        metrics::connections_open(1);
                        let handshake = Box::pin(tokio::time::sleep(this.handshake_timeout));
                        return Poll::Ready(Some(Ok(Connection {
                            stream,
                            _slot: slot,
                            handshake: Some(handshake),
                        })));
                    }
                    Err(_) => {
                        this.refused += 1;
                        metrics::connection_refused("max_connections");
                        if worth_logging(this.refused) {
                            eprintln!(
                                "zerohop serve: connection refused: server.max_connections \
                                 are open ({} refused so far)",
                                this.refused
                            );
                        }
                        drop(stream);
                    }
                },
                Err(err) if out_of_fds(&err) => {
                    this.out_of_fds += 1;
                    metrics::connection_refused("out_of_fds");
                    if worth_logging(this.out_of_fds) {
                        eprintln!(
                            "zerohop serve: cannot accept a connection: {err} ({} times so \
                             far); retrying in {} ms",
                            this.out_of_fds,
                            FD_BACKOFF.as_millis()
                        );
                    }
                    this.backoff = Some(Box::pin(tokio::time::sleep(FD_BACKOFF)));
                }
                // A connection that failed before it was accepted (reset, aborted): its
                // own business, not the listener's.
                Err(_) => {}
            }
        }
    }
}

/// An accepted connection: holds its slot under the cap until it closes, and fails its
/// reads if the client sends nothing within the handshake timeout.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the first byte arrives.
    handshake: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .handshake
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    this.handshake = None;
                    metrics::connection_refused("handshake_timeout");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within server.handshake_timeout_secs",
                    )));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        metrics::connections_open(-1);
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
