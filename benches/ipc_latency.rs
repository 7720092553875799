//! One-way latency of a loaned send, sender thread -> receiver thread, one frame in flight.
//!
//! Measured from just before `Sender::send` to the moment `Receiver::recv` returns in the
//! receiving thread, which was blocked in `recv` (so a thread wake-up is included). The
//! timestamp travels in the first 8 bytes of the frame; the rest of the payload is neither
//! written nor read per iteration (it is zero-copy: transport cost should not depend on size).
//! The next frame is sent only after the receiver reported the previous one, so there is no
//! queueing.
//!
//! `cargo bench --bench ipc_latency` (add `-- --quick` for a short run). Besides criterion's
//! mean, p50/p99 over 2000 frames per size are printed.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use _native::ipc::{ChannelConfig, Interrupt, Receiver, Sender};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const NO_INTERRUPT: Interrupt = &|| Ok(());
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
const SIZES: [(usize, &str); 4] = [
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (10 << 20, "10MiB"),
];

/// How the receiving thread waits for a frame.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    /// `recv` (blocks on the iceoryx2 listener): what pipelines use.
    Blocking,
    /// `try_recv` in a busy loop: transport cost without the thread wake-up.
    Spin,
}

struct Pair {
    tx: Sender,
    latencies: mpsc::Receiver<Duration>,
    epoch: Instant,
    len: usize,
}

impl Pair {
    fn new(len: usize, wait: Wait) -> Pair {
        let name = format!(
            "bench-ipc-{}-{len}-{}",
            std::process::id(),
            wait == Wait::Spin
        );
        let cfg = ChannelConfig {
            capacity: 4,
            ..ChannelConfig::default()
        };
        let rx = Receiver::open(&name, &cfg).unwrap();
        let tx = Sender::create(&name, &cfg).unwrap();
        let epoch = Instant::now();
        let (report, latencies) = mpsc::channel();
        thread::spawn(move || {
            let next = || match wait {
                Wait::Blocking => rx.recv(None, NO_INTERRUPT),
                Wait::Spin => loop {
                    match rx.try_recv() {
                        Ok(Some(sample)) => break Ok(sample),
                        Ok(None) => std::hint::spin_loop(),
                        Err(e) => break Err(e),
                    }
                },
            };
            while let Ok(sample) = next() {
                let now = epoch.elapsed().as_nanos() as u64;
                let sent = u64::from_le_bytes(sample[..8].try_into().unwrap());
                drop(sample);
                if report.send(Duration::from_nanos(now - sent)).is_err() {
                    break;
                }
            }
        });
        let pair = Pair {
            tx,
            latencies,
            epoch,
            len,
        };
        // Warm up: grow the shared memory to the frame size, map it on the receiver side.
        for _ in 0..10 {
            pair.one();
        }
        pair
    }

    fn one(&self) -> Duration {
        let mut loan = self.tx.loan(self.len).unwrap();
        let now = self.epoch.elapsed().as_nanos() as u64;
        loan[..8].copy_from_slice(&now.to_le_bytes());
        self.tx.send(loan, TIMEOUT, NO_INTERRUPT).unwrap();
        self.latencies.recv().unwrap()
    }
}

fn percentiles(label: &str, mut one: impl FnMut() -> Duration) {
    let mut samples: Vec<Duration> = (0..2000).map(|_| one()).collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label:<28} p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

/// Platform baseline: one-way wake-up latency of a thread blocked on a std channel (futex),
/// measured the same way. No shared memory, no iceoryx2.
fn std_channel_baseline() {
    let epoch = Instant::now();
    let (to_rx, from_tx) = mpsc::channel::<u64>();
    let (report, latencies) = mpsc::channel::<Duration>();
    thread::spawn(move || {
        while let Ok(sent) = from_tx.recv() {
            let now = epoch.elapsed().as_nanos() as u64;
            if report.send(Duration::from_nanos(now - sent)).is_err() {
                break;
            }
        }
    });
    percentiles("baseline std mpsc (futex)", || {
        to_rx.send(epoch.elapsed().as_nanos() as u64).unwrap();
        latencies.recv().unwrap()
    });
}

fn one_way_latency(c: &mut Criterion) {
    std_channel_baseline();
    for (len, label) in SIZES {
        let pair = Pair::new(len, Wait::Spin);
        percentiles(&format!("ipc {label} spinning receiver"), || pair.one());
    }
    let mut group = c.benchmark_group("ipc_one_way");
    group.sample_size(30);
    for (len, label) in SIZES {
        let pair = Pair::new(len, Wait::Blocking);
        percentiles(&format!("ipc {label} blocking recv"), || pair.one());
        group.bench_with_input(BenchmarkId::from_parameter(label), &pair, |b, pair| {
            b.iter_custom(|iters| (0..iters).map(|_| pair.one()).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, one_way_latency);
criterion_main!(benches);
