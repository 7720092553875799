//! The iceoryx2 settings every part of `ipc` shares: the service flavour of all ports,
//! this process's iceoryx2 configuration (its file prefix, which `ZEROHOP_SHM_PREFIX` may
//! set), and the files in /dev/shm that prefix names.
//!
//! A module of its own, below both `node.rs` (which creates the process's node, and then
//! reclaims orphaned files with `cleanup.rs`) and `cleanup.rs` (which lists every node of
//! the prefix): so the dependency between those two goes one way, node to cleanup.

use std::path::PathBuf;
use std::sync::OnceLock;

use iceoryx2::prelude::*;

use crate::error::{Error, Result};

/// Thread-safe port flavour: `Sender`/`Receiver` must be `Send + Sync` for the Python glue.
pub(crate) type Svc = ipc_threadsafe::Service;

/// Environment variable naming the prefix of every file zerohop's channels create in
/// /dev/shm and /tmp/iceoryx2 (iceoryx2's `global.prefix`, default `iox2_`). Processes
/// only see channels of their own prefix: it separates deployments (and concurrent test
/// runs) on one machine. Node processes inherit it through their environment.
pub const PREFIX_ENV: &str = "ZEROHOP_SHM_PREFIX";

/// The iceoryx2 configuration of this process: iceoryx2's global one (its config file or
/// defaults), with the prefix of [`PREFIX_ENV`] if set. Loaded once, with iceoryx2's
/// logging quietened first.
pub(crate) fn config() -> Result<&'static Config> {
    static CONFIG: OnceLock<std::result::Result<Config, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // iceoryx2 logs at `Info` by default and warns when there is no config file,
            // which is our normal case. Real trouble (errors) should still print;
            // `IOX2_LOG_LEVEL` overrides this for debugging.
            set_log_level(LogLevel::Error);
            let mut config = Config::global_config().clone();
            set_log_level_from_env_or(LogLevel::Error);
            if let Ok(prefix) = std::env::var(PREFIX_ENV) {
                config.global.prefix = FileName::new(prefix.as_bytes()).map_err(|e| {
                    format!("{PREFIX_ENV}={prefix:?} is not a valid file name: {e:?}")
                })?;
            }
            Ok(config)
        })
        .as_ref()
        .map_err(|message| Error::Config(message.clone()))
}

/// The prefix of every file zerohop's channels create (iceoryx2's `global.prefix`).
pub(crate) fn prefix(config: &Config) -> String {
    String::from_utf8_lossy(config.global.prefix.as_bytes()).into_owned()
}

/// Our files in /dev/shm ending in `suffix`: each path with the part of its name between
/// the prefix and the suffix.
pub(crate) fn shm_files(config: &Config, suffix: &str) -> Vec<(PathBuf, String)> {
    let prefix = prefix(config);
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_prefix(&prefix)?.strip_suffix(suffix)?;
            Some((entry.path(), stem.to_owned()))
        })
        .collect()
}
