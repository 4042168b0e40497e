//! Deadlines: the `grpc-timeout` header both ways, and bounding a call by its deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The header name, built once: looking up by `&str` re-parses the name on every call.
const GRPC_TIMEOUT_HEADER: http::HeaderName = http::HeaderName::from_static(GRPC_TIMEOUT);

/// Reads the `grpc-timeout` header as a deadline from now. A malformed value is ignored,
/// as gRPC servers do.
pub(crate) fn from_metadata(metadata: &MetadataMap) -> Option<Instant> {
    let headers: &http::HeaderMap = metadata.as_ref();
    let value = headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    parse_timeout(value).map(|timeout| Instant::now() + timeout)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H M S m u n`).
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Writes the time left until `deadline` as a `grpc-timeout` header (millisecond precision,
/// at most 8 digits as the gRPC spec requires). Rounded up: a timer started from the header
/// (tonic's channel starts one) must not end before the call's own deadline, or the call
/// fails as CANCELLED instead of DEADLINE_EXCEEDED.
pub(crate) fn to_metadata(deadline: Instant, metadata: &mut MetadataMap) {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_nanos();
    let millis = left.div_ceil(1_000_000);
    let value = if millis < 100_000_000 {
        format!("{}m", millis.max(1))
    } else {
        format!("{}S", left.div_ceil(1_000_000_000).min(99_999_999))
    };
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(GRPC_TIMEOUT, value);
    }
}

/// Runs `fut`, answering DEADLINE_EXCEEDED (and dropping, so cancelling, `fut`) once
/// `deadline` passes.
pub(crate) fn bound<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, Status>>,
) -> impl Future<Output = Result<T, Status>> {
    // A combinator, not an `async fn`: that would hold `fut` twice (argument and awaitee).
    tokio::time::timeout_at(deadline.into(), fut).map(|result| {
        result.unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_grpc_timeouts() {
        for bad in ["", "m", "10", "10x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn written_timeout_reads_back_within_a_millisecond() {
        let mut md = MetadataMap::new();
        to_metadata(Instant::now() + Duration::from_millis(1500), &mut md);
        let back = parse_timeout(md.get(GRPC_TIMEOUT).unwrap().to_str().unwrap()).unwrap();
        assert!(back <= Duration::from_millis(1500) && back >= Duration::from_millis(1490));
    }

    #[test]
    fn a_timeout_read_back_never_ends_before_the_deadline_it_was_written_from() {
        for micros in [900, 10_900, 1_500_300] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            let mut md = MetadataMap::new();
            to_metadata(deadline, &mut md);
            let read = from_metadata(&md).unwrap();
            assert!(read >= deadline, "{micros}us: {md:?}");
        }
    }
}
