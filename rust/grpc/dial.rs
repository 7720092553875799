//! Dialing another `zerohop serve`, for a session's remote nodes.
//!
//! Everything goes through tonic's own client channel: HTTP/2, TLS (rustls, verifying
//! the server against the CA bundle runtime.toml gives for that host), and, for several
//! endpoints of one service, tonic's balanced channel. Nothing here balances or
//! discovers: a `host` is an address, and a balancer may stand behind it.
//!
//! What a host needs (its token, CA bundle, connect timeout) is the operator's, from
//! runtime.toml `[hosts."h:p"]`, never from a manifest: a manifest may come from a
//! network client, and must not be able to send the server's secrets elsewhere.

use std::collections::HashMap;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// What the dialing side knows about one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostAccess {
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// PEM certificates the host's certificate must chain to; given, the connection
    /// is TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// The most time connecting may take.
    pub connect_timeout: Duration,
}

impl Default for HostAccess {
    fn default() -> Self {
        HostAccess {
            token: None,
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Every host runtime.toml names, keyed by `host:port` (see [`host_key`]).
pub type Hosts = HashMap<String, HostAccess>;

/// Schemes a `host` may carry; the `s` ones ask for TLS.
const SCHEMES: &[(&str, bool)] = &[
    ("http://", false),
    ("grpc://", false),
    ("https://", true),
    ("grpcs://", true),
];

/// `host` without its scheme and trailing slash: the key of `[hosts."h:p"]`.
pub fn host_key(host: &str) -> &str {
    let bare = SCHEMES
        .iter()
        .find_map(|(scheme, _)| host.strip_prefix(scheme))
        .unwrap_or(host);
    bare.trim_end_matches('/')
}

/// The access runtime.toml gives `host` (defaults when it names none).
pub fn access(hosts: &Hosts, host: &str) -> HostAccess {
    hosts.get(host_key(host)).cloned().unwrap_or_default()
}

/// The tonic endpoint for `host`: TLS when its scheme asks for it or a CA bundle is
/// configured for it (a scheme asking for TLS without one is an error: there is
/// nothing to verify the host against).
fn endpoint(host: &str, access: &HostAccess) -> Result<Endpoint, String> {
    let asks_tls = SCHEMES
        .iter()
        .any(|(scheme, tls)| *tls && host.starts_with(scheme));
    let key = host_key(host);
    let tls = match (&access.ca_pem, asks_tls) {
        (Some(pem), _) => Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))),
        (None, true) => {
            return Err(format!(
                "TLS to {key} needs the CA bundle to verify it: set [hosts.\"{key}\"] ca \
                 in runtime.toml"
            ))
        }
        (None, false) => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{key}"))
        .map_err(|e| format!("'{host}' is not an address: {e}"))?
        .connect_timeout(access.connect_timeout)
        .tcp_nodelay(true)
        // A host that vanishes without closing its connection (a partition, a
        // frozen machine) is noticed within the keep-alive timeout.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| chain(&e))?;
    }
    Ok(endpoint)
}

/// A channel to `host` (connected, so an unreachable host fails here), or, with
/// `endpoints`, tonic's balanced channel over all of them (each connected as it is
/// first used). Connecting is tried `retries` more times, `backoff` apart.
pub async fn connect(
    host: &str,
    endpoints: &[String],
    hosts: &Hosts,
    retries: u32,
    backoff: Duration,
) -> Result<Channel, String> {
    if !endpoints.is_empty() {
        let list = endpoints
            .iter()
            .map(|h| endpoint(h, &access(hosts, h)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Channel::balance_list(list.into_iter()));
    }
    let endpoint = endpoint(host, &access(hosts, host))?;
    let mut attempt = 0;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(_) if attempt < retries => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
            }
            Err(err) => {
                let tries = match attempt {
                    0 => String::new(),
                    n => format!(" ({} attempts)", n + 1),
                };
                return Err(format!("cannot connect{tries}: {}", chain(&err)));
            }
        }
    }
}

/// An error with its sources (tonic's own message is only "transport error").
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_drop_scheme_and_slash() {
        assert_eq!(host_key("gpu-1:50051"), "gpu-1:50051");
        assert_eq!(host_key("https://gpu-1:50051/"), "gpu-1:50051");
        assert_eq!(host_key("grpc://[::1]:7"), "[::1]:7");
    }

    #[test]
    fn tls_without_a_ca_names_the_setting() {
        let err = endpoint("grpcs://gpu-1:50051", &HostAccess::default()).unwrap_err();
        assert!(err.contains("[hosts.\"gpu-1:50051\"] ca"), "{err}");
        assert!(endpoint("gpu-1:50051", &HostAccess::default()).is_ok());
    }
}
