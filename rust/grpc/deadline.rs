//! The client's deadline (`grpc-timeout`), answered with DEADLINE_EXCEEDED.
//!
//! tonic enforces the header itself, outside every service and layer, and reports an
//! expired one as CANCELLED ("Timeout expired"). Whether a client then sees that or its
//! own DEADLINE_EXCEEDED depends on whose timer fires first. So a session stops a
//! little before the deadline and the call ends with DEADLINE_EXCEEDED, whichever
//! side is faster.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// How much earlier than the client's deadline a session stops: a few wait slices
/// (every blocking wait checks its interrupt at least every 50 ms).
const MARGIN: Duration = Duration::from_millis(150);

/// When the call must have ended, if the client set a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// Reads `grpc-timeout` (1–8 digits and a unit, per the gRPC HTTP/2 protocol); an
    /// absent or malformed header means no deadline, as tonic treats it.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Self> {
        let timeout = parse(metadata.get("grpc-timeout")?.to_str().ok()?)?;
        Some(Deadline {
            at: Instant::now() + timeout.saturating_sub(MARGIN),
            timeout,
        })
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    pub fn status(&self) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!(
            "the call's deadline ({:.3} s) passed; its session was stopped",
            self.timeout.as_secs_f64()
        ))
    }
}

fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_the_rest() {
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1999m"), Some(Duration::from_millis(1999)));
        assert_eq!(parse("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "12", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
