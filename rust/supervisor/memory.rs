//! Memory limits per node and per session, held by the kernel's own accounting.
//!
//! Why this way:
//! * **The kernel counts, and stops.** Where this process may create cgroups (cgroup v2
//!   with the memory controller delegated, or the v1 memory controller — what containers
//!   and this project's VMs have), each session gets a cgroup with the session's limit
//!   and each node a child with its own. A node past its limit is killed by the kernel
//!   inside its own cgroup: never the host's OOM killer picking a victim, never a node
//!   of another session. The supervisor then reads the cgroup's OOM count and peak and
//!   reports a resource limit naming the node, the limit and the peak.
//! * **Otherwise the RSS watch.** Without cgroups, the supervisor reads each limited
//!   node's resident memory every [`WATCH_INTERVAL`] and kills one past its limit. It
//!   catches steady growth, not a spike faster than the interval; the README says so.
//! * **Admitted right after the fork.** A node joins its cgroup before it is told to
//!   start, so its imports and model loads count; the pages it shares with the zygote
//!   it was forked from stay charged where they were.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How often the RSS watch looks at limited nodes when there are no cgroups.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How limits are held on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v2: `memory.max`, `memory.peak`, `memory.events` under this directory.
    CgroupV2(PathBuf),
    /// cgroup v1 memory controller: `memory.limit_in_bytes`, `memory.max_usage_in_bytes`,
    /// `memory.oom_control` under this directory.
    CgroupV1(PathBuf),
    /// No cgroup may be created here: resident memory read every `WATCH_INTERVAL`.
    RssWatch,
}

impl Mechanism {
    /// How it is named in errors and the README.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::CgroupV2(_) => "cgroup v2",
            Mechanism::CgroupV1(_) => "cgroup v1 memory controller",
            Mechanism::RssWatch => "RSS watch",
        }
    }
}

/// Set to `rss`, the RSS watch holds the limits even where cgroups could (to try what
/// a machine without them gets).
pub const ACCOUNTING_ENV: &str = "ZEROHOP_MEMORY_ACCOUNTING";

/// What this process may use, found once (by creating and removing a probe cgroup).
pub fn mechanism() -> &'static Mechanism {
    static FOUND: LazyLock<Mechanism> = LazyLock::new(|| {
        if std::env::var(ACCOUNTING_ENV).is_ok_and(|v| v == "rss") {
            return Mechanism::RssWatch;
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut candidates = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
                (Some(id), Some(c), Some(p)) => (id, c, p.trim_start_matches('/')),
                _ => continue,
            };
            if controllers.split(',').any(|c| c == "memory") {
                let dir = Path::new("/sys/fs/cgroup/memory").join(path);
                candidates.push(Mechanism::CgroupV1(dir));
            } else if controllers.is_empty() {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    candidates.push(Mechanism::CgroupV2(Path::new(root).join(path)));
                }
            }
        }
        candidates
            .into_iter()
            .find(probe)
            .unwrap_or(Mechanism::RssWatch)
    });
    &FOUND
}

/// Whether a child cgroup with a memory limit can be made under `mechanism`'s directory.
fn probe(mechanism: &Mechanism) -> bool {
    let (dir, limit_file) = match mechanism {
        Mechanism::CgroupV2(dir) => (dir, "memory.max"),
        Mechanism::CgroupV1(dir) => (dir, "memory.limit_in_bytes"),
        Mechanism::RssWatch => return false,
    };
    let probe = dir.join(format!("zerohop-probe-{}", std::process::id()));
    if fs::create_dir(&probe).is_err() {
        return false;
    }
    let works = fs::write(probe.join(limit_file), "1073741824").is_ok();
    let _ = fs::remove_dir(&probe);
    works
}

/// A cgroup this session made (a session's, or a node's inside it); removed on drop,
/// once the processes in it are gone.
#[derive(Debug)]
pub struct Cage {
    dir: PathBuf,
    v2: bool,
    pub limit: Option<u64>,
}

impl Cage {
    /// A cgroup named `name` under `parent` (None: under this process's own), limited
    /// to `limit` bytes. None when this machine has no cgroups for us (the RSS watch).
    pub fn new(parent: Option<&Cage>, name: &str, limit: Option<u64>) -> io::Result<Option<Cage>> {
        let (base, v2) = match (parent, mechanism()) {
            (Some(cage), _) => (cage.dir.clone(), cage.v2),
            (None, Mechanism::CgroupV2(dir)) => (dir.clone(), true),
            (None, Mechanism::CgroupV1(dir)) => (dir.clone(), false),
            (None, Mechanism::RssWatch) => return Ok(None),
        };
        let dir = base.join(name);
        fs::create_dir(&dir)?;
        let cage = Cage { dir, v2, limit };
        if v2 && parent.is_none() {
            // Children of a v2 cgroup get a memory controller only when asked.
            let _ = fs::write(cage.dir.join("cgroup.subtree_control"), "+memory");
        }
        if let Some(bytes) = limit {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            fs::write(cage.dir.join(file), bytes.to_string())?;
            if !v2 {
                // Swap would let a node past its limit go on, slowly: count it too
                // where the kernel accounts swap (an error where it does not).
                let _ = fs::write(
                    cage.dir.join("memory.memsw.limit_in_bytes"),
                    bytes.to_string(),
                );
            }
        }
        Ok(Some(cage))
    }

    /// Moves process `pid` into this cgroup.
    pub fn admit(&self, pid: i32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The most memory the cgroup has held (v2 kernels without `memory.peak`: now).
    pub fn peak(&self) -> Option<u64> {
        let files: &[&str] = if self.v2 {
            &["memory.peak", "memory.current"]
        } else {
            &["memory.max_usage_in_bytes"]
        };
        files.iter().find_map(|f| read_number(&self.dir.join(f)))
    }

    /// Whether the kernel killed a process of this cgroup (or, for a session's, of the
    /// cgroups inside it) for going past its limit; `sigkilled`: one of its processes
    /// just died of SIGKILL (v1 counts OOM kills only in the victim's own cgroup, so a
    /// session's hit limit and a SIGKILL are what there is to go by).
    pub fn oom_killed(&self, sigkilled: bool) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let count = |key: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .find_map(|n| n.trim().parse::<u64>().ok())
        };
        let hit = || !self.v2 && read_number(&self.dir.join("memory.failcnt")).unwrap_or(0) > 0;
        count("oom_kill ").unwrap_or(0) > 0 || (sigkilled && hit())
    }
}

impl Drop for Cage {
    fn drop(&mut self) {
        // A cgroup goes once it is empty; a process just killed leaves it shortly after.
        let deadline = Instant::now() + Duration::from_secs(2);
        while fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `bytes` for people: `200 MB`, `1.5 GB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999_999 => format!("{:.0} kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.0} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cage_limits_and_goes() {
        let Some(cage) = Cage::new(
            None,
            &format!("zerohop-test-{}", std::process::id()),
            Some(64 << 20),
        )
        .unwrap() else {
            return; // no cgroups here: the RSS watch is what runs
        };
        let node = Cage::new(Some(&cage), "n0", Some(32 << 20))
            .unwrap()
            .unwrap();
        assert!(!node.oom_killed(true));
        let dir = node.dir.clone();
        drop(node);
        assert!(!dir.exists());
        drop(cage);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(200_000_000), "200 MB");
        assert_eq!(human(1_500_000_000), "1.50 GB");
    }
}
