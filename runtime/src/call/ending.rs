//! [`Watch`]: tells an [`Ending`] once how an operation ended: when its reply comes back,
//! when its reply stream ends, or when the caller stops waiting. The built-in wrappers end
//! spans and record durations through it, so a stream is measured over its whole life.

use std::time::Instant;

use tonic::Status;

use super::Reply;
use super::message::StreamEnd;

/// How an operation ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended<'a> {
    /// It succeeded (a stream: it ran to its end).
    Ok,
    /// It failed with this status (including a deadline that passed while it ran).
    Failed(&'a Status),
    /// The caller stopped waiting before it finished: a CANCELLED status, which is the
    /// caller's own choice rather than a failure of the operation.
    Cancelled(&'a Status),
}

impl Ended<'_> {
    /// The status an operation ending this way reports, `None` for OK.
    pub(crate) fn status(&self) -> Option<&Status> {
        match self {
            Ended::Ok => None,
            Ended::Failed(status) | Ended::Cancelled(status) => Some(status),
        }
    }
}

/// Told once how an operation ended.
pub(crate) trait Ending: Send + 'static {
    /// Records the outcome.
    fn ended(self, how: Ended<'_>);
}

/// An operation under way: its [`Ending`] is told the outcome by [`Watch::finish`], or,
/// when the watch is dropped first (the caller reset the call, a deadline cut it short, a
/// reply stream was abandoned), DEADLINE_EXCEEDED once the deadline has passed, else
/// CANCELLED.
pub(crate) struct Watch<E: Ending> {
    ending: Option<E>,
    deadline: Option<Instant>,
}

impl<E: Ending> Watch<E> {
    /// Watches an operation that must be done by `deadline`, if it has one.
    pub(crate) fn new(ending: E, deadline: Option<Instant>) -> Self {
        Self {
            ending: Some(ending),
            deadline,
        }
    }

    /// The ending to be told, to complete before the operation ends.
    pub(crate) fn ending_mut(&mut self) -> Option<&mut E> {
        self.ending.as_mut()
    }

    /// The operation's result has arrived: a message or an error ends the operation now,
    /// a reply stream when it ends.
    pub(crate) fn finish(mut self, result: Result<Reply, Status>) -> Result<Reply, Status> {
        match result {
            Ok(mut reply) if reply.payload.is_stream() => {
                reply.payload = reply.payload.on_end(move |end| match end {
                    StreamEnd::Finished => self.tell(Ended::Ok),
                    StreamEnd::Failed(status) => self.tell(Ended::Failed(status)),
                    StreamEnd::Dropped => drop(self),
                });
                Ok(reply)
            }
            Ok(reply) => {
                self.tell(Ended::Ok);
                Ok(reply)
            }
            Err(status) => {
                self.tell(Ended::Failed(&status));
                Err(status)
            }
        }
    }

    fn tell(&mut self, how: Ended<'_>) {
        if let Some(ending) = self.ending.take() {
            ending.ended(how);
        }
    }
}

impl<E: Ending> Drop for Watch<E> {
    fn drop(&mut self) {
        if self.ending.is_none() {
            return;
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                self.tell(Ended::Failed(&Status::deadline_exceeded(
                    "deadline exceeded",
                )));
            }
            _ => self.tell(Ended::Cancelled(&Status::cancelled(
                "cancelled by the caller before the call finished",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::StreamExt as _;

    use super::*;
    use crate::call::Payload;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Ending for Seen {
        fn ended(self, how: Ended<'_>) {
            let what = match how {
                Ended::Ok => "ok".to_owned(),
                Ended::Failed(s) => format!("failed {:?}", s.code()),
                Ended::Cancelled(s) => format!("cancelled {:?}", s.code()),
            };
            self.0.lock().unwrap().push(what);
        }
    }

    fn stream_reply() -> Result<Reply, Status> {
        Ok(Reply::new(Payload::stream(futures_util::stream::iter([
            Ok::<_, Status>(()),
        ]))))
    }

    #[tokio::test]
    async fn each_way_of_ending_is_told_once() {
        let seen = Seen::default();
        let _ = Watch::new(seen.clone(), None).finish(Ok(Reply::new(Payload::message(()))));
        let _ = Watch::new(seen.clone(), None).finish(Err(Status::not_found("x")));
        drop(Watch::new(seen.clone(), None));
        let past = Instant::now() - Duration::from_millis(1);
        drop(Watch::new(seen.clone(), Some(past)));
        let reply = Watch::new(seen.clone(), None)
            .finish(stream_reply())
            .unwrap();
        assert_eq!(
            seen.0.lock().unwrap().len(),
            4,
            "a stream ends when it ends"
        );
        let mut stream = reply.payload.into_stream().unwrap();
        while stream.next().await.is_some() {}
        drop(stream);
        let abandoned = Watch::new(seen.clone(), None)
            .finish(stream_reply())
            .unwrap();
        drop(abandoned);
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "ok",
                "failed NotFound",
                "cancelled Cancelled",
                "failed DeadlineExceeded",
                "ok",
                "cancelled Cancelled"
            ]
        );
    }
}
