//! Passing file descriptors over a Unix socket (SCM_RIGHTS): the control socket and
//! stdio that a spawn request hands the zygote, the pidfd that its `spawned` reply hands
//! back.
//!
//! * The fds ride on the first byte of one `sendmsg` and come out of the `recvmsg` that
//!   reads that byte, so a reader that queues them in arrival order pairs each with its
//!   message even when the message arrives in pieces (`fds_stay_with_their_message`).
//! * Received fds are close-on-exec at once (`MSG_CMSG_CLOEXEC`): the spawner thread
//!   may fork+exec a node while the reader thread holds a fresh pidfd.
//! * A truncated control message (`MSG_CTRUNC`: the kernel dropped fds that did not fit)
//!   is an error, never a message with fds missing.
//!
//! A file of its own because it knows nothing of the protocol: raw `sendmsg`/`recvmsg`,
//! the `unsafe` they need, and their tests.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most fds one message carries (a request: control socket + stdin/stdout/stderr).
const MAX_FDS: usize = 8;

/// One `sendmsg` of `data` (non-empty) with `fds` attached as SCM_RIGHTS. Returns the
/// bytes sent, which may be fewer than `data.len()`; the fds go with the first byte.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    assert!(!data.is_empty(), "fds must travel with at least one byte");
    assert!(fds.len() <= MAX_FDS, "too many fds for one message");
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // u64 cells: cmsghdr alignment.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` zeroed, aligned bytes, room for one
        // cmsghdr carrying `payload` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: msg and everything it points to outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends all of `data`, with `fds` attached to its first byte.
pub(crate) fn send_all_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let mut sent = send_with_fds(sock, data, fds)?;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY: sending from a live buffer.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        sent += n as usize;
    }
    Ok(())
}

/// One `recvmsg` into `buf`; fds that came with the bytes are appended to `fds`
/// (close-on-exec). Returns the byte count, 0 at EOF. Fails if fds were truncated.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    // SAFETY: see send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg points to live, writable buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: walking the control buffer the kernel filled, with the CMSG_* macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    // The kernel installed these fds for us: we own them now.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "file descriptors were truncated in transit",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::super::host_to_zygote::frame;
    use super::super::zygote_to_host::take_message;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds is a 2-element out-array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds from the kernel.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn scm_rights_passes_fds_to_ourselves() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        send_all_with_fds(a.as_fd(), b"hello", &[w1.as_raw_fd(), w2.as_raw_fd()]).unwrap();
        drop((w1, w2)); // only the received copies are left
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(got.len(), 2);
        for fd in &got {
            // SAFETY: F_GETFD on an fd we own.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_ne!(
                flags & libc::FD_CLOEXEC,
                0,
                "received fds are close-on-exec"
            );
        }
        let mut w2 = std::fs::File::from(got.pop().unwrap());
        let mut w1 = std::fs::File::from(got.pop().unwrap());
        w1.write_all(b"one").unwrap();
        w2.write_all(b"two").unwrap();
        drop((w1, w2));
        let mut out = String::new();
        std::fs::File::from(r1).read_to_string(&mut out).unwrap();
        assert_eq!(out, "one");
        out.clear();
        std::fs::File::from(r2).read_to_string(&mut out).unwrap();
        assert_eq!(out, "two");
    }

    #[test]
    fn scm_rights_without_fds_and_at_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        send_all_with_fds(a.as_fd(), b"x", &[]).unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap(), 1);
        assert!(got.is_empty());
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap(), 0);
    }

    #[test]
    fn fds_stay_with_their_message() {
        // Two messages, each with its fd: the queue order pairs them up again.
        let (a, b) = UnixStream::pair().unwrap();
        let (_r1, w1) = pipe();
        let (_r2, w2) = pipe();
        send_all_with_fds(a.as_fd(), &frame(b"first"), &[w1.as_raw_fd()]).unwrap();
        send_all_with_fds(a.as_fd(), &frame(b"second"), &[w2.as_raw_fd()]).unwrap();
        drop(a);
        let (mut buf, mut fds, mut chunk) = (Vec::new(), Vec::new(), [0u8; 3]);
        let mut messages = Vec::new();
        loop {
            // A tiny buffer: messages arrive in pieces.
            let n = recv_with_fds(b.as_fd(), &mut chunk, &mut fds).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(m) = take_message(&mut buf).unwrap() {
                messages.push(m);
            }
        }
        assert_eq!(messages, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(fds.len(), 2);
    }
}
