//! A fake Consul agent for the Consul registry's tests (no Consul server is installed
//! here): a small hyper server on 127.0.0.1 that keeps service instances in memory and
//! answers exactly the endpoints `micro_otel::discovery::ConsulRegistry` uses, as
//! HashiCorp documents them, and records every request it gets so tests can assert on the
//! exact paths, queries, headers and bodies.
//!
//! - `PUT /v1/agent/service/register`: a service definition (`ID`, `Name`, `Address`,
//!   `Port`, `Meta`, `Tags`, one `Check` with `CheckID`, `TTL`,
//!   `DeregisterCriticalServiceAfter`). Stricter than Consul: an unknown field (a typo) is
//!   refused, and only TTL checks exist. `Meta` is checked against Consul's documented
//!   rules (at most 64 pairs, keys of letters, digits, `-` and `_` up to 128 characters
//!   not starting with `consul-`, values up to 512 characters). A check starts critical,
//!   Consul's initial status, on every registration.
//! - `PUT /v1/agent/check/pass/<check id>`: the check passes for its TTL; past it, the
//!   check turns critical; critical for its `DeregisterCriticalServiceAfter`, the instance
//!   is removed (not raised to Consul's one-minute minimum, so tests can see it).
//! - `PUT /v1/agent/service/deregister/<id>`.
//! - `GET /v1/health/service/<name>` with `passing`, `dc` (only `dc1` exists; another is
//!   Consul's "No path to datacenter"), and blocking queries: `index` and `wait` (Go
//!   durations, at most 10 minutes, 5 minutes by default; no wait/16 jitter is added). The
//!   answer carries `X-Consul-Index`. One index for the whole agent, moved by every
//!   change (including changes of other services, as Consul's indexes may be).
//!
//! With [`ConsulFake::require_token`], a request without that `X-Consul-Token` is refused
//! with 403, as an agent with ACLs refuses it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The only datacenter of the fake.
pub const DATACENTER: &str = "dc1";

/// How often the fake checks TTLs and critical instances.
const TICK: Duration = Duration::from_millis(20);

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `PUT`…
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The query as sent (`passing=true&index=3&wait=60s`), empty if none.
    pub query: String,
    /// The `X-Consul-Token` header, if sent.
    pub token: Option<String>,
    /// The body as JSON (`Null` if empty; a JSON string of the text if not JSON).
    pub body: Value,
}

impl Recorded {
    /// The path and query as sent (`/v1/health/service/echo?passing=true`).
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// The state of a TTL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Passed within its TTL.
    Passing,
    /// Never passed, or not within its TTL.
    Critical,
}

/// One registered service instance, as the fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `ID`.
    pub id: String,
    /// `Name`.
    pub service: String,
    /// `Address` (may be empty).
    pub address: String,
    /// `Port`.
    pub port: u16,
    /// `Meta`.
    pub meta: BTreeMap<String, String>,
    /// The TTL check, if the instance has one.
    pub check: Option<Check>,
}

/// A TTL check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// `CheckID`.
    pub id: String,
    /// `TTL`.
    pub ttl: Duration,
    /// `DeregisterCriticalServiceAfter`, if given.
    pub deregister_after: Option<Duration>,
    /// Passing or critical now.
    pub status: Status,
    /// When a passing check turns critical.
    passing_until: Instant,
    /// When the check turned critical.
    critical_since: Instant,
}

/// What the agent holds.
struct State {
    /// The agent's index, moved by every change.
    index: u64,
    instances: BTreeMap<String, Instance>,
    requests: Vec<Recorded>,
    token: Option<String>,
}

impl State {
    /// Moves the index after a change and wakes blocking queries.
    fn changed(&mut self, index: &watch::Sender<u64>) {
        self.index += 1;
        index.send_replace(self.index);
    }
}

/// The fake's state and the index blocking queries wait on.
struct Shared {
    state: Mutex<State>,
    index: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns checks past their TTL critical and removes instances critical for longer
    /// than their `DeregisterCriticalServiceAfter`.
    fn tick(&self, now: Instant) {
        let mut state = self.state();
        let mut changed = false;
        state.instances.retain(|_, instance| {
            let Some(check) = &mut instance.check else {
                return true;
            };
            if check.status == Status::Passing && now >= check.passing_until {
                check.status = Status::Critical;
                check.critical_since = now;
                changed = true;
            }
            let reaped = check.status == Status::Critical
                && check
                    .deregister_after
                    .is_some_and(|after| now >= check.critical_since + after);
            changed |= reaped;
            !reaped
        });
        if changed {
            state.changed(&self.index);
        }
    }
}

/// A fake Consul agent on 127.0.0.1; stops (closing every connection) when dropped.
pub struct ConsulFake {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl ConsulFake {
    /// Starts a fake agent on a free 127.0.0.1 port, with index 1 and no instances.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("bound");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: 1,
                instances: BTreeMap::new(),
                requests: Vec::new(),
                token: None,
            }),
            index: watch::Sender::new(1),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self {
            address,
            shared,
            server,
        }
    }

    /// `127.0.0.1:port`, as `ConsulRegistry::new` takes it.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Refuses requests without `X-Consul-Token: token` from now on.
    pub fn require_token(&self, token: &str) {
        self.shared.state().token = Some(token.to_owned());
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// Every request so far, forgotten by the fake.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.shared.state().requests)
    }

    /// The instances held now, by id.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared.state().instances.values().cloned().collect()
    }

    /// The instance `id`, if held.
    pub fn instance(&self, id: &str) -> Option<Instance> {
        self.shared.state().instances.get(id).cloned()
    }

    /// The agent's index now.
    pub fn index(&self) -> u64 {
        self.shared.state().index
    }

    /// Forgets every instance, as an agent restarted without its data.
    pub fn forget_everything(&self) {
        let mut state = self.shared.state();
        state.instances.clear();
        state.changed(&self.shared.index);
    }

    /// Sets the agent's index to `index`, lower than before: what Consul documents can
    /// happen (a restored snapshot, a new leader) and clients must handle by starting over.
    pub fn set_index(&self, index: u64) {
        let mut state = self.shared.state();
        state.index = index;
        self.shared.index.send_replace(index);
    }

    /// Registers an instance from a service definition as the HTTP endpoint would (for
    /// instances registered by someone else, e.g. without an `Address`).
    pub fn register(&self, definition: Value) -> Result<(), String> {
        let body = serde_json::to_vec(&definition).map_err(|e| e.to_string())?;
        register(&self.shared, &body).map_err(|(_, why)| why)
    }
}

impl Drop for ConsulFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Accepts connections and keeps TTLs until aborted (which aborts every connection).
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tick.tick() => shared.tick(Instant::now()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// An answer with a plain-text body.
fn text(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
}

/// Answers one request (and records it).
async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<String> {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let Some(path) = percent_decode(parts.uri.path()) else {
        return text(StatusCode::BAD_REQUEST, "invalid path encoding");
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let token = parts
        .headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let required = {
        let mut state = shared.state();
        state.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            token: token.clone(),
            body: if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
            },
        });
        state.token.clone()
    };
    if let Some(required) = required {
        match token {
            None => {
                return text(
                    StatusCode::FORBIDDEN,
                    "Permission denied: anonymous token lacks permission",
                );
            }
            Some(token) if token != required => {
                return text(StatusCode::FORBIDDEN, "ACL not found");
            }
            Some(_) => {}
        }
    }

    let put = parts.method == Method::PUT;
    if path == "/v1/agent/service/register" {
        if !put {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        return match register(shared, &body) {
            Ok(()) => text(StatusCode::OK, ""),
            Err((status, why)) => text(status, why),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        if !put {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        let mut state = shared.state();
        if state.instances.remove(id).is_none() {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                ),
            );
        }
        state.changed(&shared.index);
        return text(StatusCode::OK, "");
    }
    if let Some(check_id) = path.strip_prefix("/v1/agent/check/pass/") {
        if !put {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        return pass(shared, check_id);
    }
    if let Some(service) = path.strip_prefix("/v1/health/service/") {
        if parts.method != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        return health(shared, service, &query).await;
    }
    text(StatusCode::NOT_FOUND, format!("no endpoint {path}"))
}

/// The body of `PUT /v1/agent/service/register`, with the documented field names only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Definition {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    check: Option<CheckDefinition>,
}

/// A check of a service definition (TTL checks only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CheckDefinition {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(rename = "TTL")]
    ttl: String,
    #[serde(default)]
    deregister_critical_service_after: Option<String>,
}

/// Registers (or replaces) an instance from a service definition.
fn register(shared: &Shared, body: &[u8]) -> Result<(), (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let definition: Definition =
        serde_json::from_slice(body).map_err(|e| bad(format!("Request decode failed: {e}")))?;
    if definition.name.is_empty() {
        return Err(bad("Missing service name".into()));
    }
    let meta = definition.meta.unwrap_or_default();
    validate_meta(&meta).map_err(|why| bad(format!("Invalid Service Meta: {why}")))?;
    let id = if definition.id.is_empty() {
        definition.name.clone()
    } else {
        definition.id
    };
    let now = Instant::now();
    let check = match definition.check {
        None => None,
        Some(check) => {
            let ttl = go_duration(&check.ttl)
                .ok_or_else(|| bad(format!("Invalid TTL {:?}", check.ttl)))?;
            let deregister_after = match &check.deregister_critical_service_after {
                None => None,
                Some(after) => Some(go_duration(after).ok_or_else(|| {
                    bad(format!("Invalid DeregisterCriticalServiceAfter {after:?}"))
                })?),
            };
            Some(Check {
                id: if check.check_id.is_empty() {
                    format!("service:{id}")
                } else {
                    check.check_id
                },
                ttl,
                deregister_after,
                status: Status::Critical,
                passing_until: now,
                critical_since: now,
            })
        }
    };
    let _ = definition.tags;
    let instance = Instance {
        id: id.clone(),
        service: definition.name,
        address: definition.address,
        port: definition.port,
        meta,
        check,
    };
    let mut state = shared.state();
    state.instances.insert(id, instance);
    state.changed(&shared.index);
    Ok(())
}

/// Consul's documented rules for service metadata.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("cannot contain more than 64 key/value pairs".into());
    }
    for (key, value) in meta {
        if key.is_empty()
            || key.len() > 128
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("Key {key:?} is invalid"));
        }
        if key.starts_with("consul-") {
            return Err(format!(
                "Key prefix 'consul-' is reserved for internal use ({key:?})"
            ));
        }
        if value.len() > 512 {
            return Err(format!(
                "Value for key {key:?} is too long (limit: 512 characters)"
            ));
        }
    }
    Ok(())
}

/// `PUT /v1/agent/check/pass/<check id>`.
fn pass(shared: &Shared, check_id: &str) -> Response<String> {
    let mut state = shared.state();
    let Some(check) = state
        .instances
        .values_mut()
        .filter_map(|i| i.check.as_mut())
        .find(|c| c.id == check_id)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("CheckID {check_id:?} does not have associated TTL"),
        );
    };
    check.passing_until = Instant::now() + check.ttl;
    // Like Consul, a check already passing changes nothing the catalog shows.
    if check.status != Status::Passing {
        check.status = Status::Passing;
        state.changed(&shared.index);
    }
    text(StatusCode::OK, "")
}

/// `GET /v1/health/service/<service>`, blocking when `index` is given.
async fn health(shared: &Shared, service: &str, query: &str) -> Response<String> {
    let mut passing = false;
    let mut index = 0u64;
    let mut wait = Duration::from_secs(300);
    for (key, value) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        let Some(value) = percent_decode(&value.replace('+', " ")) else {
            return text(StatusCode::BAD_REQUEST, "invalid query encoding");
        };
        match key {
            "passing" => passing = value.is_empty() || value == "true" || value == "1",
            "dc" if value != DATACENTER => {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
            }
            "index" => match value.parse() {
                Ok(i) => index = i,
                Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
            },
            "wait" => match go_duration(&value) {
                Some(w) => wait = w.min(Duration::from_secs(600)),
                None => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
            },
            _ => {}
        }
    }
    if index > 0 {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = shared.index.subscribe();
        while *changes.borrow_and_update() <= index {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    let state = shared.state();
    let entries: Vec<Value> = state
        .instances
        .values()
        .filter(|i| i.service == service)
        .filter(|i| !passing || i.check.as_ref().is_none_or(|c| c.status == Status::Passing))
        .map(|i| {
            let mut checks = vec![json!({"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"})];
            if let Some(check) = &i.check {
                checks.push(json!({
                    "CheckID": check.id,
                    "Status": match check.status { Status::Passing => "passing", Status::Critical => "critical" },
                    "ServiceID": i.id,
                    "ServiceName": i.service,
                }));
            }
            json!({
                "Node": {"ID": "0e4e4c3a-fake", "Node": "fake-agent", "Address": "127.0.0.1", "Datacenter": DATACENTER},
                "Service": {"ID": i.id, "Service": i.service, "Tags": [], "Address": i.address, "Meta": i.meta, "Port": i.port},
                "Checks": checks,
            })
        })
        .collect();
    let mut response = text(StatusCode::OK, Value::Array(entries).to_string());
    response
        .headers_mut()
        .insert("X-Consul-Index", state.index.into());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A Go duration (`300ms`, `10s`, `1m30s`, `1.5h`), as Consul parses them.
fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `text` with `%XX` escapes decoded, or `None` if they are malformed or not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The whole request body.
async fn read_body(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut read = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            read.extend_from_slice(&data);
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_consul_reads_them() {
        assert_eq!(go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "10x", "1..5s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn percent_escapes_decode_and_malformed_ones_are_refused() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn service_metadata_follows_consuls_rules() {
        let meta = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(validate_meta(&meta("zone_1-a", "east")).is_ok());
        assert!(validate_meta(&meta("a.b", "x")).is_err());
        assert!(validate_meta(&meta("consul-x", "x")).is_err());
        assert!(validate_meta(&meta("k", &"v".repeat(513))).is_err());
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_meta(&many).is_err());
    }
}
