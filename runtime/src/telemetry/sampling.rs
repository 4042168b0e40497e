//! Head sampling: [`Sampling`], the choice a [`super::Telemetry`] makes for new traces, and
//! [`SamplingRules`], a ratio per service, proto service, method or topic.

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingResult, ShouldSample};

use crate::semconv;

/// Which traces are recorded. Head sampling decides when a trace starts, before anything
/// is known of how it ends: it cannot keep every trace that fails. For that, export
/// everything (or a generous ratio) to a collector and let its tail sampling keep the
/// errors and the slow traces.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Every trace (`always_on`).
    AlwaysOn,
    /// None (`always_off`); context still crosses the wire.
    AlwaysOff,
    /// This fraction of traces, by trace id (`traceidratio`).
    Ratio(f64),
    /// A ratio per service, proto service, method or topic for new traces (see
    /// [`SamplingRules`]); spans with a parent follow it (`parentbased_rules`).
    Rules(SamplingRules),
    /// Spans with a parent follow the parent's decision; new traces are decided by the
    /// inner choice (`parentbased_*`, the default being `parentbased_always_on`).
    ParentBased(Box<Sampling>),
}

impl Sampling {
    /// The SDK sampler for this choice; `service` is the name rules match server spans by.
    pub(crate) fn sampler(&self, service: &str) -> Sampler {
        match self {
            Sampling::AlwaysOn => Sampler::AlwaysOn,
            Sampling::AlwaysOff => Sampler::AlwaysOff,
            Sampling::Ratio(ratio) => Sampler::TraceIdRatioBased(*ratio),
            Sampling::Rules(rules) => Sampler::ParentBased(Box::new(RulesSampler {
                rules: rules.clone(),
                service: service.to_owned(),
            })),
            Sampling::ParentBased(inner) => Sampler::ParentBased(Box::new(inner.sampler(service))),
        }
    }

    /// Checks the ratios: each within 0..=1.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Sampling::Ratio(ratio) => check_ratio(*ratio),
            Sampling::Rules(rules) => rules.validate(),
            Sampling::ParentBased(inner) => inner.validate(),
            Sampling::AlwaysOn | Sampling::AlwaysOff => Ok(()),
        }
    }

    /// Parses `OTEL_TRACES_SAMPLER` and its `OTEL_TRACES_SAMPLER_ARG`: every value the
    /// specification lists that needs no remote backend, and `parentbased_rules`, whose
    /// argument is the rules themselves or a file holding them.
    pub(crate) fn from_env(sampler: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            let Some(arg) = arg else { return Ok(1.0) };
            let ratio = arg
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio"))?;
            check_ratio(ratio).map(|()| ratio)
        };
        let rules = || -> Result<SamplingRules, String> {
            let arg =
                arg.ok_or("parentbased_rules needs OTEL_TRACES_SAMPLER_ARG: rules, or a file")?;
            SamplingRules::from_arg(arg)
        };
        let parent = |inner| Ok(Sampling::ParentBased(Box::new(inner)));
        match sampler.trim() {
            "always_on" => Ok(Sampling::AlwaysOn),
            "always_off" => Ok(Sampling::AlwaysOff),
            "traceidratio" => Ok(Sampling::Ratio(ratio()?)),
            "parentbased_always_on" => parent(Sampling::AlwaysOn),
            "parentbased_always_off" => parent(Sampling::AlwaysOff),
            "parentbased_traceidratio" => parent(Sampling::Ratio(ratio()?)),
            "parentbased_rules" => Ok(Sampling::Rules(rules()?)),
            "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => Err(
                "needs a remote sampling backend, which micro-otel does not talk to; use \
                 parentbased_rules, or a collector's tail sampling"
                    .into(),
            ),
            _ => Err(
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                      parentbased_always_off, parentbased_traceidratio or parentbased_rules"
                    .into(),
            ),
        }
    }
}

fn check_ratio(ratio: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(format!("a sampling ratio is between 0 and 1, not {ratio}"))
    }
}

/// Sampling ratios by what a span is about, with a ratio for the rest, as in the go-micro +
/// OTLP guide (`payment.service` 100 %, `order.service` 50 %, the rest 10 %).
///
/// A rule's key is matched, most specific first, against a span's method
/// (`user.User/GetUser`), its proto service (`user.User`), then the registry service: the
/// one called on a client span (`server.address`), this process's own (the telemetry's
/// service name) on a server span; or, for pub/sub, the topic.
///
/// ```
/// use micro_otel::telemetry::SamplingRules;
///
/// let rules = SamplingRules::new(0.1)
///     .rule("payment.service", 1.0)
///     .rule("order.service", 0.5);
/// assert_eq!(rules, SamplingRules::parse("payment.service=1, order.service=0.5, *=0.1").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRules {
    rules: Vec<(String, f64)>,
    rest: f64,
}

impl SamplingRules {
    /// No rules yet; spans no rule matches are sampled at `rest`.
    pub fn new(rest: f64) -> Self {
        Self {
            rules: Vec::new(),
            rest,
        }
    }

    /// Samples spans about `key` (a registry service, proto service, method or topic) at
    /// `ratio`.
    pub fn rule(mut self, key: impl Into<String>, ratio: f64) -> Self {
        self.rules.push((key.into(), ratio));
        self
    }

    /// Reads rules written `key=ratio`, separated by commas or new lines, `*` naming the
    /// rest (default 1); `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Self::new(1.0);
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for entry in entries {
            let Some((key, ratio)) = entry.split_once('=') else {
                return Err(format!("{entry:?}: a rule is key=ratio"));
            };
            let (key, ratio) = (key.trim(), ratio.trim());
            let ratio = ratio
                .parse::<f64>()
                .map_err(|_| format!("{entry:?}: {ratio:?} is not a ratio"))?;
            check_ratio(ratio).map_err(|e| format!("{entry:?}: {e}"))?;
            if key.is_empty() {
                return Err(format!("{entry:?}: the key is empty"));
            }
            match key {
                "*" => rules.rest = ratio,
                key => rules = rules.rule(key, ratio),
            }
        }
        Ok(rules)
    }

    /// The rules of `OTEL_TRACES_SAMPLER_ARG`: written out, or the path of a file holding
    /// them (an argument without `=`).
    fn from_arg(arg: &str) -> Result<Self, String> {
        if arg.contains('=') {
            return Self::parse(arg);
        }
        let text = std::fs::read_to_string(arg.trim())
            .map_err(|e| format!("reading the sampling rules file {arg}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{arg}: {e}"))
    }

    fn validate(&self) -> Result<(), String> {
        check_ratio(self.rest)?;
        for (key, ratio) in &self.rules {
            check_ratio(*ratio).map_err(|e| format!("rule {key}: {e}"))?;
        }
        Ok(())
    }

    /// The ratio for a span about `keys` (most specific first).
    fn ratio<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> f64 {
        keys.into_iter()
            .find_map(|key| {
                self.rules
                    .iter()
                    .find(|(rule, _)| rule == key)
                    .map(|(_, ratio)| *ratio)
            })
            .unwrap_or(self.rest)
    }
}

/// The rules, as an SDK sampler.
#[derive(Debug, Clone)]
struct RulesSampler {
    rules: SamplingRules,
    /// The registry name of this process's services.
    service: String,
}

impl ShouldSample for RulesSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let text = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.as_str())
        };
        let method = text(semconv::RPC_METHOD);
        let proto_service = method
            .as_deref()
            .and_then(|m| m.split_once('/'))
            .map(|(service, _)| service.to_owned());
        let registry = match kind {
            SpanKind::Client | SpanKind::Producer => text(semconv::SERVER_ADDRESS),
            _ => Some(self.service.as_str().into()),
        };
        let topic = text(semconv::MESSAGING_DESTINATION_NAME);
        let keys = [
            method.as_deref(),
            proto_service.as_deref(),
            registry.as_deref(),
            topic.as_deref(),
        ];
        let ratio = self.rules.ratio(keys.into_iter().flatten());
        Sampler::TraceIdRatioBased(ratio)
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::SamplingDecision;

    use super::*;

    fn sampled(sampler: &Sampler, kind: SpanKind, attributes: &[KeyValue], n: u128) -> usize {
        (1..=n)
            .filter(|i| {
                let id = TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
                let result = sampler.should_sample(None, id, "span", &kind, attributes, &[]);
                result.decision == SamplingDecision::RecordAndSample
            })
            .count()
    }

    #[test]
    fn the_guide_s_rules_route_by_service_method_and_topic() {
        let rules = SamplingRules::parse(
            "# the go-micro + OTLP guide's rules\n\
             payment.service = 1.0\n\
             order.service = 0.5\n\
             user.User/DeleteUser = 0\n\
             audit.events = 1\n\
             * = 0.1\n",
        )
        .unwrap();
        let rpc = |method: &'static str| vec![KeyValue::new(semconv::RPC_METHOD, method)];
        let to = |target: &'static str| {
            let mut attributes = rpc("shop.Pay/Charge");
            attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, target));
            attributes
        };
        let n = 2000;
        let server = |service: &str| Sampling::Rules(rules.clone()).sampler(service);
        assert_eq!(
            sampled(
                &server("payment.service"),
                SpanKind::Server,
                &rpc("a.B/C"),
                n
            ),
            2000
        );
        let half = sampled(&server("order.service"), SpanKind::Server, &rpc("a.B/C"), n);
        assert!(
            (900..1100).contains(&half),
            "order.service about half: {half}"
        );
        let rest = sampled(&server("user.service"), SpanKind::Server, &rpc("a.B/C"), n);
        assert!((120..280).contains(&rest), "the rest about a tenth: {rest}");
        let calls = server("user.service");
        assert_eq!(
            sampled(&calls, SpanKind::Client, &to("payment.service"), n),
            2000
        );
        assert_eq!(
            sampled(
                &server("payment.service"),
                SpanKind::Server,
                &rpc("user.User/DeleteUser"),
                n
            ),
            0,
            "a method's rule beats its service's"
        );
        let topic = vec![KeyValue::new(
            semconv::MESSAGING_DESTINATION_NAME,
            "audit.events",
        )];
        assert_eq!(sampled(&calls, SpanKind::Producer, &topic, n), 2000);
    }

    #[test]
    fn bad_rules_and_sampler_values_say_what_is_wrong() {
        for (text, says) in [
            ("payment.service", "key=ratio"),
            ("a=2", "between 0 and 1"),
            ("a=half", "not a ratio"),
            ("=0.5", "key is empty"),
        ] {
            let error = SamplingRules::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        for (sampler, arg, says) in [
            ("sometimes", None, "expected always_on"),
            ("traceidratio", Some("1.5"), "between 0 and 1"),
            ("jaeger_remote", None, "remote sampling backend"),
            ("parentbased_rules", None, "OTEL_TRACES_SAMPLER_ARG"),
            (
                "parentbased_rules",
                Some("/nonexistent/rules.txt"),
                "/nonexistent/rules.txt",
            ),
        ] {
            let error = Sampling::from_env(sampler, arg).unwrap_err();
            assert!(error.contains(says), "{sampler}: {error}");
        }
        assert_eq!(
            Sampling::from_env("parentbased_traceidratio", Some("0.25")),
            Ok(Sampling::ParentBased(Box::new(Sampling::Ratio(0.25))))
        );
    }
}
