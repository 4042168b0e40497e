//! Retries: when a failed attempt may be sent again, how long to wait, and a budget that
//! stops retries from multiplying load when a whole service is failing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};

use crate::call::causes;
use crate::discovery::Outcome;

/// When and how a client retries a call on another node.
///
/// A failed attempt is retried when:
/// - it never reached a node (connection refused): always, idempotent or not;
/// - the method is idempotent (proto `idempotency_level`, or [`Idempotent`] on the
///   request) and the node was unreachable or answered UNAVAILABLE.
///
/// Business errors (NOT_FOUND, INVALID_ARGUMENT…) are never retried, nor is a call whose
/// deadline has passed; streams are not retried. Defaults: 3 attempts, backoff from 20 ms
/// doubling to at most 1 s with full jitter, and a budget of retries that lets through at
/// most one retry per ten successful calls once failures have used up its 10 tokens.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    budget_tokens: u32,
    budget_ratio: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            budget_tokens: 10,
            budget_ratio: 0.1,
        }
    }
}

/// Marks a request as safe to retry on any retryable error, whatever its method's proto
/// says: `request.extensions_mut().insert(Idempotent)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

impl RetryPolicy {
    /// No retries: every call is one attempt.
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Attempts per call, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry, doubled for each further one up to `max`; each
    /// wait is drawn at random below that bound (full jitter).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The retry budget: `tokens` to start with (and at most); each failure takes one, each
    /// success gives back `ratio`; retries stop while fewer than half the tokens are left.
    pub fn budget(mut self, tokens: u32, ratio: f64) -> Self {
        self.budget_tokens = tokens.max(1);
        self.budget_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// Attempts per call.
    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long to wait before attempt `attempt + 1`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let bound = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        bound.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// The budget this policy starts with.
    pub(crate) fn new_budget(&self) -> Budget {
        Budget {
            milli_tokens: AtomicU32::new(self.budget_tokens * 1000),
            max: self.budget_tokens * 1000,
            per_success: (self.budget_ratio * 1000.0) as u32,
        }
    }
}

/// Whether a failed attempt may be sent again.
pub(crate) fn retryable(outcome: Outcome, status: &Status, idempotent: bool) -> bool {
    match outcome {
        Outcome::Unreachable => idempotent || never_sent(status),
        Outcome::Failed(Code::Unavailable) => idempotent,
        _ => false,
    }
}

/// Whether the request surely never reached the node: the connection was refused.
fn never_sent(status: &Status) -> bool {
    causes(status).any(|error| {
        error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// gRPC's retry throttling: a shared pool of tokens that failures drain and successes
/// refill, so that retries stop when most calls fail.
#[derive(Debug)]
pub(crate) struct Budget {
    milli_tokens: AtomicU32,
    max: u32,
    per_success: u32,
}

impl Budget {
    /// Records an attempt's outcome.
    pub(crate) fn record(&self, success: bool) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(if success {
                    (t + self.per_success).min(self.max)
                } else {
                    t.saturating_sub(1000)
                })
            });
    }

    /// Whether a retry may go out now.
    pub(crate) fn allows_retry(&self) -> bool {
        self.milli_tokens.load(Ordering::Relaxed) > self.max / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let policy =
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(50));
        for attempt in 1..6 {
            let bound = Duration::from_millis((10 << (attempt - 1)).min(50));
            for _ in 0..50 {
                assert!(policy.delay(attempt) <= bound);
            }
        }
    }

    #[test]
    fn the_budget_stops_retries_when_most_calls_fail_and_recovers() {
        let budget = RetryPolicy::default().budget(10, 0.1).new_budget();
        assert!(budget.allows_retry());
        for _ in 0..5 {
            budget.record(false);
        }
        assert!(!budget.allows_retry(), "half the tokens gone");
        for _ in 0..20 {
            budget.record(true);
        }
        assert!(budget.allows_retry());
    }

    #[test]
    fn business_errors_are_never_retried() {
        let not_found = Status::not_found("no");
        assert!(!retryable(
            Outcome::Failed(Code::NotFound),
            &not_found,
            true
        ));
        let busy = Status::unavailable("busy");
        assert!(retryable(Outcome::Failed(Code::Unavailable), &busy, true));
        assert!(!retryable(Outcome::Failed(Code::Unavailable), &busy, false));
        assert!(!retryable(
            Outcome::Cancelled,
            &Status::deadline_exceeded("late"),
            true
        ));
    }
}
