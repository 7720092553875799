//! Channel tests. Both ends live in one process (threads); cross-process behaviour is
//! covered by the Python tests, except `dead_sender_is_reclaimed` which kills a child.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iceoryx2::prelude::SemanticString as _;
use iceoryx2::service::port_factory::PortFactory as _;

use super::channel::{self, Services};
use super::*;
use super::{node, settings};
use crate::error::Error;

const NO_INTERRUPT: Interrupt = &|| Ok(());
const LONG: Option<Duration> = Some(Duration::from_secs(20));

/// Channel names unique across parallel tests and concurrent test processes.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test-{}-{tag}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Small queue and borrow limits: iceoryx2 preallocates
/// `capacity + max_borrowed + 1 + max_loans` chunks of the largest frame size.
fn small(capacity: usize) -> ChannelConfig {
    ChannelConfig {
        capacity,
        max_payload: 16 << 20,
        initial_payload: 64,
        max_borrowed: 2,
        max_loans: 2,
    }
}

fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq * 7) as u8)
        .collect()
}

fn send_seq(tx: &Sender, seq: u64, len: usize) {
    let mut loan = tx.loan(len.max(8)).unwrap();
    loan.copy_from_slice(&pattern(seq, len.max(8)));
    loan[..8].copy_from_slice(&seq.to_le_bytes());
    tx.send(loan, LONG, NO_INTERRUPT).unwrap();
}

fn seq_of(sample: &[u8]) -> u64 {
    u64::from_le_bytes(sample[..8].try_into().unwrap())
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// File names iceoryx2 derives from a channel's services (not the channel name: it uses
/// hashes and numeric ids).
pub(crate) fn service_ids(services: &Services) -> Vec<String> {
    let mut ids = vec![
        services.frames.service_hash().as_str().to_owned(),
        services.frames.unique_service_id().value().to_string(),
    ];
    for events in [&services.ready, &services.credit] {
        ids.push(events.service_hash().as_str().to_owned());
        ids.push(events.unique_service_id().value().to_string());
    }
    ids
}

/// Entries under /dev/shm and /tmp/iceoryx2 whose name contains one of `ids`.
fn leftovers(ids: &[String]) -> Vec<String> {
    fn walk(dir: &Path, ids: &[String], found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(id.as_str())) {
                found.push(path.display().to_string());
            }
            if path.is_dir() {
                walk(&path, ids, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/dev/shm"), ids, &mut found);
    walk(Path::new("/tmp/iceoryx2"), ids, &mut found);
    found
}

#[test]
fn round_trip_of_several_sizes() {
    let name = unique("sizes");
    let cfg = small(4);
    let rx = Receiver::open(&name, &cfg).unwrap();
    let tx = Sender::create(&name, &cfg).unwrap();
    for (seq, &len) in [1usize, 7, 1024, 65536, 1 << 20, 10 << 20, 3, 4096]
        .iter()
        .enumerate()
    {
        let payload = pattern(seq as u64, len);
        tx.send_copy(
            &[&payload[..len / 2], &payload[len / 2..]],
            LONG,
            NO_INTERRUPT,
        )
        .unwrap();
        let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
        assert_eq!(sample.len(), len);
        assert_eq!(
            checksum(&sample),
            checksum(&payload),
            "frame {seq} of {len} bytes"
        );
        assert!(sample.is_zero_copy());
        assert_eq!(sample.as_ptr() as usize % channel::FRAME_ALIGNMENT, 0);
    }
}

#[test]
fn empty_frame() {
    let name = unique("empty");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    tx.send_copy(&[], LONG, NO_INTERRUPT).unwrap();
    assert_eq!(rx.recv(LONG, NO_INTERRUPT).unwrap().len(), 0);
}

#[test]
fn memory_grows_with_frame_size_and_old_samples_stay_valid() {
    let name = unique("grow");
    let cfg = small(8);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let mut held = Vec::new();
    let mut len = 16;
    let mut seq = 0;
    while len <= 8 << 20 {
        let loan = tx.loan(len).unwrap();
        assert_eq!(loan.len(), len);
        assert_eq!(loan.as_ptr() as usize % channel::FRAME_ALIGNMENT, 0);
        send_seq(&tx, seq, len);
        drop(loan);
        let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
        assert_eq!(seq_of(&sample), seq);
        assert_eq!(sample[8..], pattern(seq, len)[8..]);
        // Keep samples from the older, smaller segments alive while memory grows.
        if held.len() < cfg.max_borrowed {
            held.push((seq, len, sample));
        }
        len *= 4;
        seq += 1;
    }
    for (seq, len, sample) in held {
        assert_eq!(sample[8..], pattern(seq, len)[8..]);
    }
}

#[test]
fn full_queue_blocks_sender_without_loss_or_reordering() {
    let name = unique("backpressure");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    const N: u64 = 60;
    let producer = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            for seq in 0..N {
                send_seq(&tx, seq, 256);
                sent.store(seq + 1, Ordering::SeqCst);
            }
        })
    };
    for seq in 0..N {
        if seq % 10 == 0 {
            thread::sleep(Duration::from_millis(20)); // slow receiver
        }
        let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
        assert_eq!(seq_of(&sample), seq);
        assert_eq!(sample[8..], pattern(seq, 256)[8..]);
        // The sender can be at most `capacity` frames ahead of what we took.
        assert!(sent.load(Ordering::SeqCst) <= seq + 1 + cfg.capacity as u64);
    }
    producer.join().unwrap();
    assert!(matches!(rx.try_recv(), Ok(None) | Err(Error::Closed(_))));
}

#[test]
fn send_times_out_when_the_receiver_never_reads() {
    let name = unique("send-timeout");
    let cfg = small(1);
    let tx = Sender::create(&name, &cfg).unwrap();
    let _rx = Receiver::open(&name, &cfg).unwrap();
    tx.send_copy(&[b"first"], LONG, NO_INTERRUPT).unwrap();
    let start = Instant::now();
    let err = tx
        .send_copy(&[b"second"], Some(Duration::from_millis(150)), NO_INTERRUPT)
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, Error::Timeout { what: "send", .. }),
        "{err:?}"
    );
    assert!(elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(2));
}

#[test]
fn send_times_out_without_receiver() {
    let name = unique("no-receiver");
    let tx = Sender::create(&name, &small(2)).unwrap();
    tx.flush(Some(Duration::ZERO), NO_INTERRUPT).unwrap(); // nothing to flush
    let err = tx
        .send_copy(&[b"x"], Some(Duration::from_millis(100)), NO_INTERRUPT)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[test]
fn recv_times_out() {
    let name = unique("recv-timeout");
    let cfg = small(2);
    let _tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let start = Instant::now();
    let err = rx
        .recv(Some(Duration::from_millis(120)), NO_INTERRUPT)
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { what: "recv", .. }),
        "{err:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(120));
    assert!(matches!(rx.try_recv(), Ok(None)));
}

/// An interrupt that fires `after` from now, like Ctrl-C arriving during a blocking call.
fn interrupt_after(after: Duration) -> impl Fn() -> crate::error::Result<()> {
    let fired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&fired);
    thread::spawn(move || {
        thread::sleep(after);
        flag.store(true, Ordering::SeqCst);
    });
    move || {
        if fired.load(Ordering::SeqCst) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

#[test]
fn interrupt_aborts_blocked_recv_promptly() {
    let name = unique("int-recv");
    let cfg = small(2);
    let _tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let interrupt = interrupt_after(Duration::from_millis(100));
    let start = Instant::now();
    let err = rx.recv(None, &interrupt).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(100 + 50 + 150),
        "{elapsed:?}"
    );
}

#[test]
fn interrupt_aborts_blocked_send_promptly() {
    let name = unique("int-send");
    let cfg = small(1);
    let tx = Sender::create(&name, &cfg).unwrap();
    let _rx = Receiver::open(&name, &cfg).unwrap();
    tx.send_copy(&[b"fills the queue"], LONG, NO_INTERRUPT)
        .unwrap();
    let interrupt = interrupt_after(Duration::from_millis(100));
    let start = Instant::now();
    let err = tx.send_copy(&[b"blocked"], None, &interrupt).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(100 + 50 + 150),
        "{elapsed:?}"
    );
}

#[test]
fn holding_more_than_max_borrowed_samples_copies_instead_of_deadlocking() {
    let name = unique("borrow");
    let cfg = small(4); // max_borrowed = 2
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    const N: u64 = 12;
    let producer = thread::spawn(move || {
        for seq in 0..N {
            send_seq(&tx, seq, 4096);
        }
        tx.flush(LONG, NO_INTERRUPT).unwrap();
    });
    let mut held = Vec::new();
    for seq in 0..N {
        let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
        assert_eq!(seq_of(&sample), seq);
        assert_eq!(
            sample.is_zero_copy(),
            seq < cfg.max_borrowed as u64,
            "frame {seq}"
        );
        held.push(sample);
    }
    producer.join().unwrap();
    for (seq, sample) in held.iter().enumerate() {
        assert_eq!(sample[8..], pattern(seq as u64, 4096)[8..]);
    }
}

#[test]
fn released_samples_free_zero_copy_slots() {
    let name = unique("borrow-release");
    let cfg = small(4);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let a = {
        send_seq(&tx, 0, 64);
        rx.recv(LONG, NO_INTERRUPT).unwrap()
    };
    let b = {
        send_seq(&tx, 1, 64);
        rx.recv(LONG, NO_INTERRUPT).unwrap()
    };
    send_seq(&tx, 2, 64);
    assert!(!rx.recv(LONG, NO_INTERRUPT).unwrap().is_zero_copy());
    drop(a);
    send_seq(&tx, 3, 64);
    let d = rx.recv(LONG, NO_INTERRUPT).unwrap();
    assert!(d.is_zero_copy());
    assert_eq!(seq_of(&b), 1);
    assert_eq!(seq_of(&d), 3);
}

#[test]
fn sample_outlives_receiver_and_sender() {
    let name = unique("outlive");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    send_seq(&tx, 42, 1 << 20);
    let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
    assert!(sample.is_zero_copy());
    drop(rx);
    drop(tx);
    let sample = thread::spawn(move || sample).join().unwrap(); // Send
    assert_eq!(seq_of(&sample), 42);
    assert_eq!(sample[8..], pattern(42, 1 << 20)[8..]);
}

#[test]
fn frames_sent_before_the_receiver_connects_are_not_lost() {
    let name = unique("early");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let producer = thread::spawn(move || {
        for seq in 0..5 {
            send_seq(&tx, seq, 128);
        }
        tx.flush(LONG, NO_INTERRUPT).unwrap();
    });
    thread::sleep(Duration::from_millis(150));
    let rx = Receiver::open(&name, &cfg).unwrap();
    for seq in 0..5 {
        assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), seq);
    }
    producer.join().unwrap();
}

#[test]
fn receiver_first_then_sender_fills_queue_before_first_recv() {
    // The subscriber only attaches to a later publisher's connection when it next
    // receives; credit accounting must keep the sender from overfilling meanwhile.
    let name = unique("late-sender");
    let cfg = small(2);
    let rx = Receiver::open(&name, &cfg).unwrap();
    let tx = Sender::create(&name, &cfg).unwrap();
    let producer = thread::spawn(move || {
        for seq in 0..6 {
            send_seq(&tx, seq, 128);
        }
        tx.flush(LONG, NO_INTERRUPT).unwrap();
    });
    thread::sleep(Duration::from_millis(150));
    for seq in 0..6 {
        assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), seq);
    }
    producer.join().unwrap();
}

#[test]
fn payload_too_large_is_rejected_before_allocating() {
    let name = unique("too-large");
    let cfg = ChannelConfig {
        max_payload: 1000,
        initial_payload: 100,
        ..small(2)
    };
    let tx = Sender::create(&name, &cfg).unwrap();
    assert!(tx.loan(1000).is_ok());
    let err = tx.loan(1001).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadTooLarge {
                size: 1001,
                max: 1000
            }
        ),
        "{err:?}"
    );
    let err = tx
        .send_copy(&[&[0u8; 600], &[0u8; 401]], None, NO_INTERRUPT)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadTooLarge {
                size: 1001,
                max: 1000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn receiver_sees_pending_frames_then_closed() {
    let name = unique("closed-rx");
    let cfg = small(4);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    send_seq(&tx, 0, 100);
    send_seq(&tx, 1, 100);
    tx.flush(Some(Duration::ZERO), NO_INTERRUPT).unwrap_err(); // not yet taken
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 0);
    drop(tx);
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 1);
    let start = Instant::now();
    let err = rx.recv(LONG, NO_INTERRUPT).unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(rx.try_recv(), Err(Error::Closed(_))));
}

#[test]
fn blocked_sender_sees_closed_when_receiver_goes() {
    let name = unique("closed-tx");
    let cfg = small(1);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    tx.send_copy(&[b"fills the queue"], LONG, NO_INTERRUPT)
        .unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        drop(rx);
    });
    let err = tx.send_copy(&[b"blocked"], LONG, NO_INTERRUPT).unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    closer.join().unwrap();
}

#[test]
fn wait_fd_becomes_readable_and_try_recv_clears_it() {
    fn readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        n == 1 && pfd.revents & libc::POLLIN != 0
    }
    let name = unique("fd");
    let cfg = small(4);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let fd = rx.wait_fd();
    while rx.try_recv().unwrap().is_some() {}
    assert!(!readable(fd, 50));
    send_seq(&tx, 0, 64);
    send_seq(&tx, 1, 64);
    assert!(readable(fd, 1000));
    assert_eq!(seq_of(&rx.try_recv().unwrap().unwrap()), 0);
    assert_eq!(seq_of(&rx.try_recv().unwrap().unwrap()), 1);
    assert!(rx.try_recv().unwrap().is_none());
    assert!(
        !readable(fd, 50),
        "fd must not stay readable after try_recv drained"
    );
    send_seq(&tx, 2, 64);
    assert!(readable(fd, 1000));
}

#[test]
fn nothing_lingers_after_both_ends_drop() {
    let name = unique("linger");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    for (seq, len) in [(0, 100), (1, 1 << 20), (2, 4 << 20)] {
        send_seq(&tx, seq, len); // grows the data segment twice
        assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), seq);
    }
    let mut ids = tx.resource_ids();
    ids.extend(rx.resource_ids());
    assert!(
        !leftovers(&ids).is_empty(),
        "the id scan finds live resources"
    );
    drop(tx);
    drop(rx);
    let left = leftovers(&ids);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn second_sender_or_receiver_is_refused() {
    let name = unique("single");
    let cfg = small(2);
    let _tx = Sender::create(&name, &cfg).unwrap();
    let _rx = Receiver::open(&name, &cfg).unwrap();
    assert!(matches!(
        Sender::create(&name, &cfg),
        Err(Error::Ipc { .. })
    ));
    assert!(matches!(
        Receiver::open(&name, &cfg),
        Err(Error::Ipc { .. })
    ));
}

#[test]
fn invalid_config_is_rejected() {
    let cfg = ChannelConfig {
        capacity: 0,
        ..ChannelConfig::default()
    };
    assert!(matches!(
        Sender::create(&unique("cfg"), &cfg),
        Err(Error::Config(_))
    ));
}

#[test]
fn ends_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Sender>();
    send_sync::<Receiver>();
    send_sync::<Sample>();
    send::<Loan>();
}

const CHILD_ENV: &str = "ZEROHOP_TEST_DEAD_SENDER";

/// Child half of `dead_sender_is_reclaimed`: creates a sender, sends one frame and dies
/// without running destructors. Does nothing when run normally.
#[test]
#[ignore = "helper run by dead_sender_is_reclaimed in a child process"]
fn dead_sender_child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tx = Sender::create(&name, &small(2)).unwrap();
    send_seq(&tx, 7, 1000);
    println!("IDS {}", tx.resource_ids().join(" "));
    std::process::abort();
}

#[test]
fn dead_sender_is_reclaimed() {
    let name = unique("dead");
    let cfg = small(2);
    let rx = Receiver::open(&name, &cfg).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ipc::tests::dead_sender_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, &name)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<String> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("IDS "))
        .unwrap_or_else(|| panic!("child output: {stdout}"))
        .split(' ')
        .map(str::to_owned)
        .collect();
    // The frame sent before the crash is still readable.
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 7);
    // Another node creation (parallel tests) may reclaim the dead node first, so only
    // the effect is asserted, not the count.
    reclaim_dead().unwrap();
    let err = rx
        .recv(Some(Duration::from_secs(5)), NO_INTERRUPT)
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    // The child's own ports are gone; the shared services stay while `rx` uses them.
    let child_ports = &ids[..3];
    let left = leftovers(child_ports);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn orphaned_listener_files_are_removed_and_live_ones_kept() {
    let name = unique("orphan");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let ids = tx.resource_ids();
    // Port ids carry the pid of their creator where `pid_of` reads it.
    let credit_listener: u128 = ids[2].parse().unwrap();
    assert_eq!(super::cleanup::pid_of(credit_listener), std::process::id());

    let config = settings::config().unwrap();
    let prefix = settings::prefix(config);
    let root = String::from_utf8_lossy(config.global.root_path().as_bytes()).into_owned();
    // A pid with no node: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let listener_id = |pid: u32| (u128::from(pid) << 64) | (0xfeed_u128 << 96) | 0x1234;
    let segment = |pid: u32| {
        format!(
            "/dev/shm/{prefix}{}_{}.event_mgmt",
            std::process::id(),
            listener_id(pid)
        )
    };
    let (orphan, ours) = (segment(gone), segment(std::process::id()));
    let orphan_socket = format!("{root}/{prefix}{}.event", listener_id(gone));
    // Ownerless too, but mapped: some process still uses it.
    let mapped = format!(
        "/dev/shm/{prefix}{}_{}.event_mgmt",
        std::process::id(),
        listener_id(gone) + 1
    );
    for path in [&orphan, &ours, &orphan_socket, &mapped] {
        std::fs::write(path, vec![0u8; 4096]).unwrap();
    }
    let mapping = std::fs::File::open(&mapped).unwrap();
    // SAFETY: a read-only mapping of a file we created; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&mapping),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let live_before = leftovers(&ids[..3]);

    reclaim_dead().unwrap();
    let exists = |path: &str| Path::new(path).exists();
    assert!(!exists(&orphan) && !exists(&orphan_socket), "orphan kept");
    assert!(exists(&ours), "a file of a live node's pid was removed");
    assert!(exists(&mapped), "a file a process maps was removed");
    // SAFETY: the mapping made above, unused since.
    unsafe { libc::munmap(addr, 4096) };
    for path in [&ours, &mapped] {
        std::fs::remove_file(path).unwrap();
    }
    // The channel's real listener files are untouched and it still wakes its receiver.
    assert_eq!(leftovers(&ids[..3]), live_before);
    let waiter = thread::spawn(move || seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()));
    thread::sleep(Duration::from_millis(50));
    send_seq(&tx, 5, 100);
    assert_eq!(waiter.join().unwrap(), 5);
}

/// Measures what the receiver's per-frame credit notification costs. Run with
/// `cargo test --release --lib notify_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a test"]
fn notify_cost() {
    let name = unique("notify-cost");
    let node = node::process_node().unwrap();
    let services = channel::open_services(&node, &name, &small(2)).unwrap();
    let listener = services.credit.listener_builder().create().unwrap();
    let notifier = services.credit.notifier_builder().create().unwrap();
    const N: u32 = 20_000;
    let per = |d: Duration| d / N;

    // Listener not draining (the sender has credit): iceoryx2 skips the socket write.
    let start = Instant::now();
    for _ in 0..N {
        notifier
            .notify_with_custom_event_id(channel::EV_FRAME)
            .unwrap();
    }
    let cheap = per(start.elapsed());
    let mut counted = 0;
    listener.try_wait(|ev| counted += ev.count).unwrap();
    assert_eq!(counted, u64::from(N), "counts are exact");

    // Listener drained before every notify (a sender blocked on credit): each notify
    // writes a datagram.
    let mut expensive = Duration::ZERO;
    let mut drain = Duration::ZERO;
    for _ in 0..N {
        let t = Instant::now();
        listener.try_wait(|_| {}).unwrap();
        drain += t.elapsed();
        let t = Instant::now();
        notifier
            .notify_with_custom_event_id(channel::EV_FRAME)
            .unwrap();
        expensive += t.elapsed();
    }
    println!(
        "notify, listener not draining: {:?}; notify after a drain: {:?}; try_wait drain: {:?}",
        cheap,
        per(expensive),
        per(drain)
    );
}

/// How much of a grown segment is actually committed (tmpfs pages are allocated on first
/// touch) after streaming 10 MiB frames through a default-config channel.
#[test]
#[ignore = "measurement, not a test"]
fn committed_memory() {
    let name = unique("committed");
    let cfg = ChannelConfig::default();
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let consumer = thread::spawn(move || {
        for _ in 0..300 {
            drop(rx.recv(LONG, NO_INTERRUPT).unwrap());
        }
        rx
    });
    for seq in 0..300 {
        send_seq(&tx, seq, 10 << 20);
    }
    let rx = consumer.join().unwrap();
    let ids = tx.resource_ids();
    let out = std::process::Command::new("du")
        .arg("-sh")
        .arg("--apparent-size")
        .args(leftovers(&ids[..1]))
        .output()
        .unwrap();
    let out2 = std::process::Command::new("du")
        .arg("-sh")
        .args(leftovers(&ids[..1]))
        .output()
        .unwrap();
    println!(
        "data segments, apparent:\n{}committed:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out2.stdout)
    );
    drop(rx);
}

/// Regression guard for the 64-byte payload alignment: iceoryx2's `payload_alignment(64)`
/// on `[u8]` would reserve 64 bytes per payload byte (1 GiB of segment for 1 MiB frames
/// with this config); the aligned user header must keep it near `chunks * 2 MiB`.
#[test]
fn alignment_does_not_inflate_shared_memory() {
    let tx = Sender::create(&unique("segsize"), &small(4)).unwrap();
    drop(tx.loan(1 << 20).unwrap());
    let ids = tx.resource_ids();
    let segment_bytes: u64 = leftovers(&ids[..1])
        .iter()
        .filter(|path| path.ends_with(".data"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum();
    // 4 + 2 + 1 + 2 = 9 chunks of 2 MiB (1 MiB + headers, power of two), up to 16 after
    // iceoryx2's power-of-two growth of the chunk count.
    assert!(
        segment_bytes > 0 && segment_bytes <= 40 << 20,
        "{segment_bytes} bytes"
    );
}

#[test]
fn receiver_can_reopen_after_closing() {
    let name = unique("reopen");
    let cfg = small(2);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    send_seq(&tx, 0, 64);
    send_seq(&tx, 1, 64); // queue full, never taken
    drop(rx);
    let err = tx.send_copy(&[b"x"], LONG, NO_INTERRUPT).unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    let rx = Receiver::open(&name, &cfg).unwrap();
    for seq in 2..6 {
        send_seq(&tx, seq, 64);
        assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), seq);
    }
}

const FORK_ENV: &str = "ZEROHOP_TEST_FORK";

/// Child half of `forked_child_gets_its_own_node`, run in a fresh (single-test) process
/// because forking a process with many busy test threads is not safe.
#[test]
#[ignore = "helper run by forked_child_gets_its_own_node in a child process"]
fn fork_helper() {
    let Ok(name) = std::env::var(FORK_ENV) else {
        return;
    };
    let cfg = small(4);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    send_seq(&tx, 1, 64);
    // SAFETY: fork in a process whose other threads only wait for this test to finish;
    // the child leaves with `_exit` and never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            // Dropping the inherited copies must not unregister the parent's ports.
            drop(tx);
            drop(rx);
            // A new channel works: the child made its own node.
            let other = format!("{name}-child");
            let tx = Sender::create(&other, &cfg).unwrap();
            let rx = Receiver::open(&other, &cfg).unwrap();
            send_seq(&tx, 9, 64);
            assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 9);
        }))
        .is_ok();
        // SAFETY: leaves the child without running the parent's destructors/atexit.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    // The parent's channel is intact.
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 1);
    send_seq(&tx, 2, 64);
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 2);
    println!("FORK OK");
}

#[test]
fn forked_child_gets_its_own_node() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ipc::tests::fork_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(FORK_ENV, unique("fork"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FORK OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flush_then_drop_delivers_frames_in_a_grown_segment() {
    // The flush returns once the frame is taken. (Dropping without it no longer loses the
    // frame either, see `frames_survive_sender_drop_in_another_thread`.)
    let name = unique("flush");
    let cfg = small(4);
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    send_seq(&tx, 0, 64);
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 0);
    let producer = thread::spawn(move || {
        send_seq(&tx, 1, 4 << 20); // needs a new, larger segment
        tx.flush(LONG, NO_INTERRUPT).unwrap();
    });
    let last = rx.recv(LONG, NO_INTERRUPT).unwrap();
    producer.join().unwrap();
    assert_eq!(seq_of(&last), 1);
    assert_eq!(last[8..], pattern(1, 4 << 20)[8..]);
    assert!(matches!(rx.recv(LONG, NO_INTERRUPT), Err(Error::Closed(_))));
}

/// Receives the frames `seqs` in order, then expects `Closed` promptly from both `recv`
/// and `try_recv`.
fn expect_frames_then_closed(rx: &Receiver, seqs: std::ops::Range<u64>, len: usize) {
    for seq in seqs {
        let sample = rx.recv(Some(Duration::from_secs(5)), NO_INTERRUPT).unwrap();
        assert_eq!(seq_of(&sample), seq);
        assert_eq!(sample[8..], pattern(seq, len)[8..]);
    }
    let start = Instant::now();
    let err = rx
        .recv(Some(Duration::from_secs(5)), NO_INTERRUPT)
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert!(matches!(rx.try_recv(), Err(Error::Closed(_))));
}

#[test]
fn frames_survive_sender_drop_receiver_first_same_thread() {
    // The reported bug: the sender comes and goes between two receiver calls, so the
    // subscriber never attached to its publisher.
    let name = unique("drop-rx-first");
    let cfg = ChannelConfig::default();
    let rx = Receiver::open(&name, &cfg).unwrap();
    let tx = Sender::create(&name, &cfg).unwrap();
    tx.send_copy(&[b"hello"], Some(Duration::from_secs(5)), NO_INTERRUPT)
        .unwrap();
    drop(tx);
    let sample = rx.recv(Some(Duration::from_secs(2)), NO_INTERRUPT).unwrap();
    assert_eq!(&sample[..], b"hello");
    let start = Instant::now();
    let err = rx
        .recv(Some(Duration::from_secs(3)), NO_INTERRUPT)
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(rx.try_recv(), Err(Error::Closed(_))));
}

#[test]
fn frames_survive_sender_drop_sender_first_same_thread() {
    let name = unique("drop-tx-first");
    let cfg = ChannelConfig::default();
    let tx = Sender::create(&name, &cfg).unwrap();
    let rx = Receiver::open(&name, &cfg).unwrap();
    for seq in 0..3 {
        send_seq(&tx, seq, 100);
    }
    drop(tx);
    expect_frames_then_closed(&rx, 0..3, 100);
}

#[test]
fn frames_survive_sender_drop_in_another_thread() {
    for receiver_first in [true, false] {
        let name = unique("drop-thread");
        let cfg = small(4);
        let (rx, tx) = if receiver_first {
            let rx = Receiver::open(&name, &cfg).unwrap();
            (rx, Sender::create(&name, &cfg).unwrap())
        } else {
            let tx = Sender::create(&name, &cfg).unwrap();
            (Receiver::open(&name, &cfg).unwrap(), tx)
        };
        // Fills the queue, and (1 MiB > initial_payload) grows the data segment: without
        // a flush, the receiver has not mapped it when the sender is dropped.
        thread::spawn(move || {
            for seq in 0..4 {
                send_seq(&tx, seq, 1 << 20);
            }
        })
        .join()
        .unwrap();
        expect_frames_then_closed(&rx, 0..4, 1 << 20);
    }
}

#[test]
fn recv_sees_closed_when_an_unseen_sender_leaves() {
    // Sender created and dropped without sending, never observed by the receiver.
    let name = unique("unseen");
    let cfg = small(2);
    let rx = Receiver::open(&name, &cfg).unwrap();
    drop(Sender::create(&name, &cfg).unwrap());
    expect_frames_then_closed(&rx, 0..0, 0);

    // Same with `try_recv` only (event loops).
    let name = unique("unseen-try");
    let rx = Receiver::open(&name, &cfg).unwrap();
    drop(Sender::create(&name, &cfg).unwrap());
    assert!(matches!(rx.try_recv(), Err(Error::Closed(_))));
}

#[test]
fn blocked_recv_without_timeout_wakes_up_closed() {
    let name = unique("blocked-recv");
    let cfg = small(2);
    let rx = Receiver::open(&name, &cfg).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let result = rx.recv(None, NO_INTERRUPT).map(|s| s.to_vec());
        done_tx.send(Instant::now()).unwrap();
        result
    });
    thread::sleep(Duration::from_millis(100));
    let tx = Sender::create(&name, &cfg).unwrap();
    let dropped = {
        drop(tx);
        Instant::now()
    };
    let woke = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("recv(None) must wake up when the sender leaves");
    let err = waiter.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    let delay = woke.saturating_duration_since(dropped);
    assert!(delay < Duration::from_millis(500), "{delay:?}");
}

#[test]
fn blocked_send_sees_closed_promptly_when_receiver_drops() {
    for receiver_first in [true, false] {
        let name = unique("blocked-send");
        let cfg = small(1);
        let (rx, tx) = if receiver_first {
            let rx = Receiver::open(&name, &cfg).unwrap();
            (rx, Sender::create(&name, &cfg).unwrap())
        } else {
            let tx = Sender::create(&name, &cfg).unwrap();
            (Receiver::open(&name, &cfg).unwrap(), tx)
        };
        tx.send_copy(&[b"fills the queue"], LONG, NO_INTERRUPT)
            .unwrap();
        let closer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            drop(rx);
            Instant::now()
        });
        let err = tx.send_copy(&[b"blocked"], None, NO_INTERRUPT).unwrap_err();
        let returned = Instant::now();
        let dropped = closer.join().unwrap();
        assert!(matches!(err, Error::Closed(_)), "{err:?}");
        let delay = returned.saturating_duration_since(dropped);
        assert!(delay < Duration::from_millis(500), "{delay:?}");
        // A flush (nothing can be delivered anymore) fails the same way or finds nothing.
        assert!(matches!(
            tx.flush(Some(Duration::from_millis(100)), NO_INTERRUPT),
            Ok(()) | Err(Error::Closed(_))
        ));
    }
}

/// Polls `leftovers(ids)` until empty or `within` has passed.
fn leftovers_after(ids: &[String], within: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = leftovers(ids);
        if left.is_empty() || start.elapsed() >= within {
            return left;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dropped_sender_lingers_until_drained_or_receiver_gone() {
    let cfg = small(4);
    // Drained: released as soon as the receiver took the last frame.
    let name = unique("linger-drained");
    let rx = Receiver::open(&name, &cfg).unwrap();
    let tx = Sender::create(&name, &cfg).unwrap();
    send_seq(&tx, 0, 64);
    let sender_ports = tx.resource_ids()[..3].to_vec();
    drop(tx);
    assert!(
        !leftovers(&sender_ports).is_empty(),
        "kept alive for the queued frame"
    );
    assert_eq!(seq_of(&rx.recv(LONG, NO_INTERRUPT).unwrap()), 0);
    // Also detaches the subscriber from the connection (iceoryx2 does so in `receive`).
    let err = rx.recv(LONG, NO_INTERRUPT).unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    let left = leftovers_after(&sender_ports, Duration::from_secs(1));
    assert!(left.is_empty(), "left behind: {left:?}");

    // Receiver gone: released with everything else.
    let name = unique("linger-rx-gone");
    let rx = Receiver::open(&name, &cfg).unwrap();
    let tx = Sender::create(&name, &cfg).unwrap();
    send_seq(&tx, 0, 64);
    let mut ids = tx.resource_ids();
    ids.extend(rx.resource_ids());
    drop(tx);
    drop(rx);
    let left = leftovers_after(&ids, Duration::from_secs(1));
    assert!(left.is_empty(), "left behind: {left:?}");
}

const EXIT_ENV: &str = "ZEROHOP_TEST_SENDER_EXIT";

/// Child half of `process_exit_releases_lingering_senders`: sends one frame, drops the
/// sender and lets the test harness exit normally (running the atexit hook).
#[test]
#[ignore = "helper run by process_exit_releases_lingering_senders in a child process"]
fn sender_exit_child() {
    let Ok(name) = std::env::var(EXIT_ENV) else {
        return;
    };
    let tx = Sender::create(&name, &small(2)).unwrap();
    send_seq(&tx, 7, 1 << 20); // grown segment: lost if released before the receiver maps it
    println!("IDS {}", tx.resource_ids().join(" "));
    drop(tx);
}

fn run_sender_exit_child(name: &str) -> (Duration, Vec<String>) {
    let start = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ipc::tests::sender_exit_child",
            "--ignored",
            "--nocapture",
        ])
        .env(EXIT_ENV, name)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let ids = stdout
        .lines()
        .find_map(|l| l.strip_prefix("IDS "))
        .unwrap_or_else(|| panic!("child output: {stdout}"))
        .split(' ')
        .map(str::to_owned)
        .collect();
    (took, ids)
}

#[test]
fn process_exit_releases_lingering_senders() {
    let cfg = small(2);
    // A receiver that keeps reading gets the frame, then `Closed`; the sender's process
    // does not wait out the grace period.
    let name = unique("exit-read");
    let rx = Receiver::open(&name, &cfg).unwrap();
    let reader = thread::spawn(move || {
        let sample = rx.recv(LONG, NO_INTERRUPT).unwrap();
        let closed = rx.recv(LONG, NO_INTERRUPT);
        (
            seq_of(&sample),
            sample[8..] == pattern(7, 1 << 20)[8..],
            closed,
        )
    });
    run_sender_exit_child(&name);
    let (seq, intact, closed) = reader.join().unwrap();
    assert_eq!(seq, 7);
    assert!(intact);
    assert!(matches!(closed, Err(Error::Closed(_))), "{closed:?}");

    // A receiver that does not read: the exit waits `EXIT_GRACE`, then releases the ports
    // (no dead node left behind, the receiver sees `Closed` instead of waiting forever).
    let name = unique("exit-idle");
    let rx = Receiver::open(&name, &cfg).unwrap();
    let (took, ids) = run_sender_exit_child(&name);
    assert!(
        took >= linger::EXIT_GRACE && took < linger::EXIT_GRACE + Duration::from_secs(5),
        "{took:?}"
    );
    let left = leftovers(&ids[..3]);
    assert!(left.is_empty(), "left behind: {left:?}");
    let err = rx
        .recv(Some(Duration::from_secs(2)), NO_INTERRUPT)
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
}
