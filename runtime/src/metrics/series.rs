//! [`Series`]: the instruments of one method (and, on the client, one target) bound to their
//! attribute sets, once per outcome, the first time that outcome happens. Recording into a
//! bound instrument skips hashing and comparing the attributes on every call, which is most
//! of what a metric costs otherwise.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use foldhash::fast::FixedState;
use tonic::{Code, Status};

use crate::call::{Ended, Method};

/// Outcome slots: one per status code, and one for a call its caller gave up on.
const OUTCOMES: usize = 18;

/// The slot of a call its caller stopped waiting for: CANCELLED, but no failure of the call.
const GIVEN_UP: usize = 17;

/// How an operation ended, as a slot of a [`Series`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome(usize);

impl Outcome {
    pub(crate) fn of(how: Ended<'_>) -> Self {
        match how {
            Ended::Ok => Self(0),
            Ended::Failed(status) => Self::failed(status),
            Ended::Cancelled(_) => Self(GIVEN_UP),
        }
    }

    /// The outcome of a call that failed with `status`.
    pub(crate) fn failed(status: &Status) -> Self {
        Self((status.code() as usize).min(GIVEN_UP - 1))
    }

    /// The status code reported.
    pub(crate) fn code(self) -> Code {
        match self.0 {
            GIVEN_UP => Code::Cancelled,
            code => Code::from_i32(code as i32),
        }
    }

    /// Whether the caller gave up (rather than the call failing).
    pub(crate) fn given_up(self) -> bool {
        self.0 == GIVEN_UP
    }
}

/// One series: a counter bound once, and per outcome a `T` of bound histograms.
pub(crate) struct Series<C, T> {
    started: OnceLock<C>,
    outcomes: [OnceLock<T>; OUTCOMES],
}

impl<C, T> Default for Series<C, T> {
    fn default() -> Self {
        Self {
            started: OnceLock::new(),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl<C, T> Series<C, T> {
    /// The bound counter, bound by `bind` the first time.
    pub(crate) fn started(&self, bind: impl FnOnce() -> C) -> &C {
        self.started.get_or_init(bind)
    }

    /// The instruments of `outcome`, bound by `bind` the first time it happens.
    pub(crate) fn outcome(&self, outcome: Outcome, bind: impl FnOnce(Outcome) -> T) -> &T {
        self.outcomes[outcome.0].get_or_init(|| bind(outcome))
    }
}

/// The series of one method, by target.
type ByTarget<C, T> = HashMap<Arc<str>, Arc<Series<C, T>>, FixedState>;

/// The series of each method and target seen so far.
pub(crate) struct SeriesMap<C, T> {
    by_method: RwLock<HashMap<usize, ByTarget<C, T>, FixedState>>,
}

impl<C, T> Default for SeriesMap<C, T> {
    fn default() -> Self {
        Self {
            by_method: RwLock::default(),
        }
    }
}

impl<C, T> SeriesMap<C, T> {
    /// The series of `method` called on `target` (`""` on the server). Methods are
    /// `'static` items of generated code, told apart by address; targets by name.
    pub(crate) fn get(&self, method: &'static Method, target: &str) -> Arc<Series<C, T>> {
        let key = std::ptr::from_ref(method) as usize;
        let known = self.by_method.read().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = known.get(&key).and_then(|targets| targets.get(target)) {
            return series.clone();
        }
        drop(known);
        let mut known = self.by_method.write().unwrap_or_else(|e| e.into_inner());
        known
            .entry(key)
            .or_default()
            .entry(Arc::from(target))
            .or_default()
            .clone()
    }
}
