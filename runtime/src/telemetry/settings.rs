//! [`Settings`]: everything a [`super::Telemetry`] is built from, resolved in one place:
//! what the code set, then the `OTEL_*` variables, then the specification's defaults.
//!
//! The one exception to "code first" is the service name given to
//! [`super::Telemetry::builder`]: it is the name to use when the operator does not set
//! `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).

use std::time::Duration;

use opentelemetry_sdk::metrics::Temporality;

use super::sampling::Sampling;
use crate::environment::ConfigError;

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Destination {
    /// To an OTLP collector.
    Otlp(Otlp),
    /// Printed on standard output.
    Console,
}

/// The wire protocol of an OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (the default here, port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, paths `/v1/traces`...).
    HttpProtobuf,
}

/// One signal's OTLP exporter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Otlp {
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) gzip: bool,
    /// Set when the endpoint is `https://` (boxed: most endpoints are plain text).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Box<crate::tls::ClientTls>>,
}

/// A batching processor's limits (`OTEL_BSP_*` for spans, `OTEL_BLRP_*` for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) max_queue_size: usize,
    pub(crate) max_export_batch_size: usize,
    pub(crate) scheduled_delay: Duration,
    pub(crate) export_timeout: Duration,
}

/// What the code set on a [`super::TelemetryBuilder`]; `None` leaves it to the
/// environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct InCode {
    pub(crate) service_name: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) protocol: Option<Protocol>,
    /// The TLS of an `https://` collector endpoint.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ClientTls>,
    /// `Some(false)` after `no_export`: no signal leaves the process.
    pub(crate) export: Option<bool>,
    pub(crate) traces_elsewhere: bool,
    pub(crate) sampling: Option<Sampling>,
    pub(crate) spans: PartialBatch,
    pub(crate) metric_interval: Option<Duration>,
    pub(crate) logs: Option<bool>,
}

/// Batch limits set in code.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PartialBatch {
    pub(crate) max_queue_size: Option<usize>,
    pub(crate) max_export_batch_size: Option<usize>,
    pub(crate) scheduled_delay: Option<Duration>,
    pub(crate) export_timeout: Option<Duration>,
}

/// Which propagators cross the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Propagators {
    pub(crate) trace_context: bool,
    pub(crate) baggage: bool,
}

/// Everything telemetry is built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// `OTEL_SDK_DISABLED=true`: nothing is recorded or exported.
    pub(crate) disabled: bool,
    pub(crate) service_name: String,
    pub(crate) traces: Vec<Destination>,
    pub(crate) metrics: Vec<Destination>,
    pub(crate) logs: Vec<Destination>,
    pub(crate) propagators: Propagators,
    pub(crate) sampling: Sampling,
    pub(crate) spans: Batch,
    pub(crate) log_records: Batch,
    pub(crate) metric_interval: Duration,
    pub(crate) metric_timeout: Duration,
    pub(crate) temporality: Temporality,
    pub(crate) exponential_histograms: bool,
}

/// Reads a variable: the process environment, or a table in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values taken as unset (as the specification asks).
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The three signals, with their variable infixes and HTTP paths.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "v1/traces",
            Signal::Metrics => "v1/metrics",
            Signal::Logs => "v1/logs",
        }
    }
}

impl Settings {
    /// Resolves `code` against `env`.
    pub(crate) fn resolve(code: &InCode, env: Env<'_>) -> Result<Self, ConfigError> {
        let disabled = match env("OTEL_SDK_DISABLED") {
            Some(v) => boolean("OTEL_SDK_DISABLED", &v)?,
            None => false,
        };
        let service_name = env("OTEL_SERVICE_NAME")
            .or_else(|| resource_service_name(env))
            .unwrap_or_else(|| code.service_name.clone());
        let traces = if code.traces_elsewhere {
            Vec::new()
        } else {
            destinations(code, env, Signal::Traces)?
        };
        let mut logs = destinations(code, env, Signal::Logs)?;
        if code.logs == Some(false) {
            logs.clear();
        }
        let sampling = match &code.sampling {
            Some(sampling) => sampling.clone(),
            None => match env("OTEL_TRACES_SAMPLER") {
                Some(value) => {
                    let arg = env("OTEL_TRACES_SAMPLER_ARG");
                    Sampling::from_env(&value, arg.as_deref())
                        .map_err(|e| ConfigError::new("OTEL_TRACES_SAMPLER", &value, e))?
                }
                None => Sampling::ParentBased(Box::new(Sampling::AlwaysOn)),
            },
        };
        sampling
            .validate()
            .map_err(|e| ConfigError::new("sampling", &format!("{sampling:?}"), e))?;
        let temporality = match env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            None => Temporality::Cumulative,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                "lowmemory" => Temporality::LowMemory,
                _ => {
                    return Err(ConfigError::new(
                        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                        &v,
                        "expected cumulative, delta or lowmemory",
                    ));
                }
            },
        };
        let aggregation = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION";
        let exponential_histograms = match env(aggregation) {
            None => false,
            Some(v) => match v.trim() {
                "explicit_bucket_histogram" => false,
                "base2_exponential_bucket_histogram" => true,
                _ => {
                    return Err(ConfigError::new(
                        aggregation,
                        &v,
                        "expected explicit_bucket_histogram or base2_exponential_bucket_histogram",
                    ));
                }
            },
        };
        Ok(Self {
            disabled,
            service_name,
            traces,
            metrics: destinations(code, env, Signal::Metrics)?,
            logs,
            propagators: propagators(env)?,
            sampling,
            spans: Batch {
                max_queue_size: pick(
                    code.spans.max_queue_size,
                    env,
                    "OTEL_BSP_MAX_QUEUE_SIZE",
                    2048,
                )?,
                max_export_batch_size: pick(
                    code.spans.max_export_batch_size,
                    env,
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    512,
                )?,
                scheduled_delay: millis(
                    code.spans.scheduled_delay,
                    env,
                    "OTEL_BSP_SCHEDULE_DELAY",
                    5000,
                )?,
                export_timeout: millis(
                    code.spans.export_timeout,
                    env,
                    "OTEL_BSP_EXPORT_TIMEOUT",
                    30000,
                )?,
            },
            log_records: Batch {
                max_queue_size: pick(None, env, "OTEL_BLRP_MAX_QUEUE_SIZE", 2048)?,
                max_export_batch_size: pick(None, env, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512)?,
                scheduled_delay: millis(None, env, "OTEL_BLRP_SCHEDULE_DELAY", 1000)?,
                export_timeout: millis(None, env, "OTEL_BLRP_EXPORT_TIMEOUT", 30000)?,
            },
            metric_interval: millis(
                code.metric_interval,
                env,
                "OTEL_METRIC_EXPORT_INTERVAL",
                60000,
            )?,
            metric_timeout: millis(None, env, "OTEL_METRIC_EXPORT_TIMEOUT", 30000)?,
            temporality,
            exponential_histograms,
        })
    }
}

/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, if it has one.
fn resource_service_name(env: Env<'_>) -> Option<String> {
    env("OTEL_RESOURCE_ATTRIBUTES")?
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == "service.name")
        .map(|(_, value)| percent_decode(value.trim()))
}

/// Where `signal` goes: the code's choice, else `OTEL_<SIGNAL>_EXPORTER` (a list of
/// `otlp`, `console`, `none`; default `otlp`).
fn destinations(
    code: &InCode,
    env: Env<'_>,
    signal: Signal,
) -> Result<Vec<Destination>, ConfigError> {
    if code.export == Some(false) {
        return Ok(Vec::new());
    }
    if code.endpoint.is_some() {
        return Ok(vec![Destination::Otlp(otlp(code, env, signal)?)]);
    }
    let variable = format!("OTEL_{}_EXPORTER", signal.upper());
    let Some(value) = env(&variable) else {
        return Ok(match cfg!(feature = "otlp") {
            true => vec![Destination::Otlp(otlp(code, env, signal)?)],
            false => Vec::new(),
        });
    };
    let mut chosen = Vec::new();
    for name in value.split(',').map(str::trim) {
        match name {
            "otlp" if cfg!(feature = "otlp") => {
                chosen.push(Destination::Otlp(otlp(code, env, signal)?))
            }
            "otlp" => {
                return Err(ConfigError::new(
                    &variable,
                    &value,
                    "otlp needs the `otlp` feature",
                ));
            }
            "console" if cfg!(feature = "console") => chosen.push(Destination::Console),
            "console" => {
                return Err(ConfigError::new(
                    &variable,
                    &value,
                    "console needs the `console` feature",
                ));
            }
            "none" => {}
            _ => {
                return Err(ConfigError::new(
                    &variable,
                    &value,
                    "expected otlp, console or none",
                ));
            }
        }
    }
    Ok(chosen)
}

/// `signal`'s OTLP exporter: per-signal variables first, then the general ones.
fn otlp(code: &InCode, env: Env<'_>, signal: Signal) -> Result<Otlp, ConfigError> {
    let own = |what: &str| format!("OTEL_EXPORTER_OTLP_{}_{what}", signal.upper());
    let general = |what: &str| format!("OTEL_EXPORTER_OTLP_{what}");
    let either = |what: &str| -> Option<(String, String)> {
        let (own, general) = (own(what), general(what));
        env(&own)
            .map(|v| (own, v))
            .or_else(|| env(&general).map(|v| (general, v)))
    };
    let protocol = match (code.protocol, either("PROTOCOL")) {
        (Some(protocol), _) => protocol,
        (None, None) => Protocol::Grpc,
        (None, Some((variable, value))) => match value.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            "http/json" => {
                return Err(ConfigError::new(
                    &variable,
                    &value,
                    "http/json is not supported; use grpc or http/protobuf",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    &variable,
                    &value,
                    "expected grpc or http/protobuf",
                ));
            }
        },
    };
    let with_path = |base: &str| match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf => format!("{}/{}", base.trim_end_matches('/'), signal.path()),
    };
    let endpoint = match (
        &code.endpoint,
        env(&own("ENDPOINT")),
        env(&general("ENDPOINT")),
    ) {
        (Some(base), _, _) => with_path(base),
        (None, Some(exact), _) => exact,
        (None, None, Some(base)) => with_path(&base),
        (None, None, None) => match protocol {
            Protocol::Grpc => "http://localhost:4317".to_owned(),
            Protocol::HttpProtobuf => with_path("http://localhost:4318"),
        },
    };
    let endpoint = with_scheme(endpoint, protocol, &either, &own("ENDPOINT"))?;
    #[cfg(feature = "tls")]
    let tls = tls(code, &either, &endpoint)?;
    #[cfg(not(feature = "tls"))]
    if endpoint.starts_with("https://") {
        return Err(ConfigError::new(
            &own("ENDPOINT"),
            &endpoint,
            "an https:// collector needs micro-otel's `tls` feature",
        ));
    }
    let headers = match either("HEADERS") {
        None => Vec::new(),
        Some((variable, value)) => {
            headers(&value).map_err(|e| ConfigError::new(&variable, &value, e))?
        }
    };
    let timeout = match either("TIMEOUT") {
        None => Duration::from_secs(10),
        Some((variable, value)) => Duration::from_millis(number(&variable, &value)?),
    };
    let gzip = match either("COMPRESSION") {
        None => false,
        Some((variable, value)) => match value.trim() {
            "gzip" => true,
            "none" => false,
            _ => return Err(ConfigError::new(&variable, &value, "expected gzip or none")),
        },
    };
    Ok(Otlp {
        endpoint,
        protocol,
        headers,
        timeout,
        gzip,
        #[cfg(feature = "tls")]
        tls,
    })
}

/// One of a signal's `OTEL_EXPORTER_OTLP_*` variables: its name and value, the signal's own
/// first.
type Either<'a> = dyn Fn(&str) -> Option<(String, String)> + 'a;

/// `endpoint` with its scheme. A gRPC endpoint without one is `https://` unless
/// `OTEL_EXPORTER_OTLP_INSECURE` is true, as the spec says; an http/protobuf one needs it.
fn with_scheme(
    endpoint: String,
    protocol: Protocol,
    either: &Either<'_>,
    variable: &str,
) -> Result<String, ConfigError> {
    let insecure = match either("INSECURE") {
        None => false,
        Some((variable, value)) => boolean(&variable, &value)?,
    };
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return Ok(endpoint);
    }
    match protocol {
        Protocol::Grpc if insecure => Ok(format!("http://{endpoint}")),
        Protocol::Grpc => Ok(format!("https://{endpoint}")),
        Protocol::HttpProtobuf => Err(ConfigError::new(
            variable,
            &endpoint,
            "expected an http:// or https:// URL",
        )),
    }
}

/// The TLS of an `https://` endpoint: the code's, else `OTEL_EXPORTER_OTLP_CERTIFICATE` (the
/// CA to trust instead of the system's roots) and `_CLIENT_CERTIFICATE`/`_CLIENT_KEY` (mutual
/// TLS). Any of them with an `http://` endpoint is refused: the operator meant TLS.
#[cfg(feature = "tls")]
fn tls(
    code: &InCode,
    either: &Either<'_>,
    endpoint: &str,
) -> Result<Option<Box<crate::tls::ClientTls>>, ConfigError> {
    let wrong = |(variable, value): (String, String), e: crate::tls::TlsError| {
        ConfigError::new(&variable, &value, e.to_string())
    };
    let (ca, certificate, key) = (
        either("CERTIFICATE"),
        either("CLIENT_CERTIFICATE"),
        either("CLIENT_KEY"),
    );
    if !endpoint.starts_with("https://") {
        if let Some((variable, value)) = ca.or(certificate).or(key) {
            return Err(ConfigError::new(
                &variable,
                &value,
                format!("TLS is set up but the endpoint {endpoint} is plain text: use https://"),
            ));
        }
        return Ok(None);
    }
    if let Some(tls) = &code.tls {
        return Ok(Some(Box::new(tls.clone())));
    }
    let mut tls = crate::tls::ClientTls::new();
    if let Some(ca) = ca {
        tls = tls.ca_file(&ca.1).map_err(|e| wrong(ca, e))?;
    }
    match (certificate, key) {
        (None, None) => {}
        (Some(certificate), Some(key)) => {
            tls = tls.identity_files(&certificate.1, &key.1).map_err(|e| {
                let culprit = if e.what().starts_with("client key") {
                    key.clone()
                } else {
                    certificate.clone()
                };
                wrong(culprit, e)
            })?;
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err(ConfigError::new(
                &one.0,
                &one.1,
                "mutual TLS needs both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                 OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ));
        }
    }
    Ok(Some(Box::new(tls)))
}

/// `OTEL_PROPAGATORS`: a list of `tracecontext`, `baggage`, `none` (default
/// `tracecontext,baggage`).
fn propagators(env: Env<'_>) -> Result<Propagators, ConfigError> {
    let Some(value) = env("OTEL_PROPAGATORS") else {
        return Ok(Propagators {
            trace_context: true,
            baggage: true,
        });
    };
    let mut chosen = Propagators {
        trace_context: false,
        baggage: false,
    };
    for name in value.split(',').map(str::trim) {
        match name {
            "tracecontext" => chosen.trace_context = true,
            "baggage" => chosen.baggage = true,
            "none" => {}
            "b3" | "b3multi" | "jaeger" | "xray" | "ottrace" => {
                return Err(ConfigError::new(
                    "OTEL_PROPAGATORS",
                    &value,
                    format!(
                        "{name} is not supported (no maintained crate for it); use tracecontext"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    "OTEL_PROPAGATORS",
                    &value,
                    "expected tracecontext, baggage or none",
                ));
            }
        }
    }
    Ok(chosen)
}

/// `key=value` pairs separated by commas, values percent-decoded.
fn headers(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((
                key.trim().to_ascii_lowercase(),
                percent_decode(value.trim()),
            )),
            _ => Err(format!("{pair:?}: a header is key=value")),
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn boolean(variable: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::new(variable, value, "expected true or false")),
    }
}

fn number(variable: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(variable, value, "expected a whole number"))
}

/// A count: the code's, else `variable`'s, else `default`.
fn pick(
    code: Option<usize>,
    env: Env<'_>,
    variable: &str,
    default: usize,
) -> Result<usize, ConfigError> {
    match (code, env(variable)) {
        (Some(value), _) => Ok(value),
        (None, Some(value)) => Ok(number(variable, &value)? as usize),
        (None, None) => Ok(default),
    }
}

/// A duration in milliseconds: the code's, else `variable`'s, else `default`.
fn millis(
    code: Option<Duration>,
    env: Env<'_>,
    variable: &str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match (code, env(variable)) {
        (Some(value), _) => Ok(value),
        (None, Some(value)) => Ok(Duration::from_millis(number(variable, &value)?)),
        (None, None) => Ok(Duration::from_millis(default)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(code: &InCode, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(code, &|name| vars.get(name).cloned())
    }

    fn named(name: &str) -> InCode {
        InCode {
            service_name: name.into(),
            ..Default::default()
        }
    }

    fn otlp_of(destinations: &[Destination]) -> &Otlp {
        match destinations {
            [Destination::Otlp(otlp)] => otlp,
            other => panic!("one OTLP exporter expected, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = resolve(&named("user.service"), &[]).unwrap();
        assert!(!s.disabled);
        assert_eq!(s.service_name, "user.service");
        for signal in [&s.traces, &s.metrics, &s.logs] {
            let otlp = otlp_of(signal);
            assert_eq!(otlp.endpoint, "http://localhost:4317");
            assert_eq!(otlp.protocol, Protocol::Grpc);
            assert_eq!(otlp.timeout, Duration::from_secs(10));
            assert!(!otlp.gzip && otlp.headers.is_empty());
        }
        assert_eq!(
            s.sampling,
            Sampling::ParentBased(Box::new(Sampling::AlwaysOn))
        );
        assert_eq!(
            (
                s.spans.max_queue_size,
                s.spans.max_export_batch_size,
                s.spans.scheduled_delay
            ),
            (2048, 512, Duration::from_secs(5))
        );
        assert_eq!(s.log_records.scheduled_delay, Duration::from_secs(1));
        assert_eq!(s.metric_interval, Duration::from_secs(60));
        assert_eq!(s.metric_timeout, Duration::from_secs(30));
        assert_eq!(s.temporality, Temporality::Cumulative);
        assert!(!s.exponential_histograms);
        assert!(s.propagators.trace_context && s.propagators.baggage);
    }

    /// Each variable of the README's table, set alone, changes what it says it changes.
    #[test]
    fn each_variable_changes_its_setting() {
        let code = named("user.service");
        let with = |name: &str, value: &str| resolve(&code, &[(name, value)]).unwrap();
        assert!(with("OTEL_SDK_DISABLED", "true").disabled);
        assert_eq!(with("OTEL_SERVICE_NAME", "billing").service_name, "billing");
        assert_eq!(
            with("OTEL_RESOURCE_ATTRIBUTES", "team=pay,service.name=ledger").service_name,
            "ledger"
        );
        assert_eq!(with("OTEL_TRACES_EXPORTER", "none").traces, []);
        assert_eq!(with("OTEL_METRICS_EXPORTER", "none").metrics, []);
        assert_eq!(with("OTEL_LOGS_EXPORTER", "none").logs, []);
        if cfg!(feature = "console") {
            assert_eq!(
                with("OTEL_TRACES_EXPORTER", "console").traces,
                [Destination::Console]
            );
            assert_eq!(
                with("OTEL_METRICS_EXPORTER", "console,otlp").metrics.len(),
                2
            );
        }
        let p = with("OTEL_PROPAGATORS", "baggage").propagators;
        assert!(!p.trace_context && p.baggage);
        let p = with("OTEL_PROPAGATORS", "none").propagators;
        assert!(!p.trace_context && !p.baggage);
        let s = with("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(otlp_of(&s.logs).endpoint, "http://collector:4317");
        let s = resolve(
            &code,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        assert_eq!(
            otlp_of(&s.traces).endpoint,
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            otlp_of(&s.metrics).endpoint,
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(otlp_of(&s.logs).protocol, Protocol::HttpProtobuf);
        let s = with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/exact");
        assert_eq!(otlp_of(&s.traces).endpoint, "http://t:1/exact");
        assert_eq!(otlp_of(&s.metrics).endpoint, "http://localhost:4317");
        let s = with("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf");
        assert_eq!(
            otlp_of(&s.metrics).endpoint,
            "http://localhost:4318/v1/metrics"
        );
        assert_eq!(otlp_of(&s.traces).protocol, Protocol::Grpc);
        let s = with("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, X-Team=pay");
        assert_eq!(
            otlp_of(&s.traces).headers,
            [
                ("api-key".into(), "a b".into()),
                ("x-team".into(), "pay".into())
            ]
        );
        let s = with("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "k=v");
        assert!(otlp_of(&s.traces).headers.is_empty());
        assert_eq!(otlp_of(&s.logs).headers.len(), 1);
        let s = with("OTEL_EXPORTER_OTLP_TIMEOUT", "2500");
        assert_eq!(otlp_of(&s.metrics).timeout, Duration::from_millis(2500));
        let s = with("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "100");
        assert_eq!(otlp_of(&s.traces).timeout, Duration::from_millis(100));
        assert!(otlp_of(&with("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip").logs).gzip);
        assert!(otlp_of(&with("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip").metrics).gzip);
        let bare = |insecure: &str| {
            let s = resolve(
                &code,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                    ("OTEL_EXPORTER_OTLP_INSECURE", insecure),
                ],
            )
            .unwrap();
            otlp_of(&s.traces).endpoint.clone()
        };
        assert_eq!(bare("true"), "http://collector:4317");
        assert_eq!(bare("false"), "https://collector:4317");
        assert_eq!(
            with("OTEL_TRACES_SAMPLER", "traceidratio").sampling,
            Sampling::Ratio(1.0)
        );
        let s = resolve(
            &code,
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.sampling,
            Sampling::ParentBased(Box::new(Sampling::Ratio(0.1)))
        );
        assert_eq!(
            with("OTEL_BSP_MAX_QUEUE_SIZE", "100").spans.max_queue_size,
            100
        );
        assert_eq!(
            with("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50")
                .spans
                .max_export_batch_size,
            50
        );
        assert_eq!(
            with("OTEL_BSP_SCHEDULE_DELAY", "250").spans.scheduled_delay,
            Duration::from_millis(250)
        );
        assert_eq!(
            with("OTEL_BSP_EXPORT_TIMEOUT", "1000").spans.export_timeout,
            Duration::from_secs(1)
        );
        assert_eq!(
            with("OTEL_BLRP_MAX_QUEUE_SIZE", "10")
                .log_records
                .max_queue_size,
            10
        );
        assert_eq!(
            with("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "5")
                .log_records
                .max_export_batch_size,
            5
        );
        assert_eq!(
            with("OTEL_BLRP_SCHEDULE_DELAY", "20")
                .log_records
                .scheduled_delay,
            Duration::from_millis(20)
        );
        assert_eq!(
            with("OTEL_BLRP_EXPORT_TIMEOUT", "30")
                .log_records
                .export_timeout,
            Duration::from_millis(30)
        );
        assert_eq!(
            with("OTEL_METRIC_EXPORT_INTERVAL", "1000").metric_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            with("OTEL_METRIC_EXPORT_TIMEOUT", "500").metric_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            with("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta").temporality,
            Temporality::Delta
        );
        assert!(
            with(
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "base2_exponential_bucket_histogram"
            )
            .exponential_histograms
        );
    }

    #[test]
    fn code_wins_over_the_environment() {
        let code = InCode {
            service_name: "user.service".into(),
            endpoint: Some("http://code:4317".into()),
            sampling: Some(Sampling::Ratio(0.5)),
            spans: PartialBatch {
                max_queue_size: Some(7),
                ..Default::default()
            },
            metric_interval: Some(Duration::from_secs(2)),
            logs: Some(false),
            ..Default::default()
        };
        let s = resolve(
            &code,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ],
        )
        .unwrap();
        assert_eq!(otlp_of(&s.traces).endpoint, "http://code:4317");
        assert_eq!(s.sampling, Sampling::Ratio(0.5));
        assert_eq!(s.spans.max_queue_size, 7);
        assert_eq!(s.metric_interval, Duration::from_secs(2));
        assert!(s.logs.is_empty(), "logs switched off in code");
        let quiet = InCode {
            export: Some(false),
            ..named("x")
        };
        let s = resolve(&quiet, &[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap();
        assert!(s.traces.is_empty() && s.metrics.is_empty() && s.logs.is_empty());
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_may_be() {
        for (name, value, says) in [
            ("OTEL_SDK_DISABLED", "yes", "true or false"),
            ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console or none"),
            ("OTEL_PROPAGATORS", "b3", "not supported"),
            ("OTEL_PROPAGATORS", "w3c", "tracecontext, baggage or none"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "not supported"),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "udp",
                "grpc or http/protobuf",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "whole number"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem", "plain text"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem", "plain text"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "true or false"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "whole number"),
            ("OTEL_TRACES_SAMPLER", "sometimes", "expected always_on"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "both",
                "cumulative",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "x",
                "explicit",
            ),
        ] {
            let error = resolve(&named("s"), &[(name, value)]).unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains(name) || text.contains("OTEL_EXPORTER_OTLP"),
                "{text}"
            );
            assert!(text.contains(says), "{name}={value}: {text}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_files_are_read_and_checked_when_the_endpoint_is_https() {
        let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317");
        let s = resolve(&named("s"), &[https]).unwrap();
        assert_eq!(
            otlp_of(&s.traces).tls,
            Some(Box::new(crate::tls::ClientTls::new())),
            "https alone trusts the system's roots"
        );
        let error = resolve(
            &named("s"),
            &[
                https,
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE")
                && error.contains("/nonexistent/ca.pem"),
            "{error}"
        );
        let error = resolve(
            &named("s"),
            &[https, ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY") && error.contains("both"),
            "{error}"
        );
        let error = resolve(
            &named("s"),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "collector:4318/v1/traces",
                ),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("http:// or https://"), "{error}");
    }
}
