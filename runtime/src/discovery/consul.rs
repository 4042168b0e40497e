//! [`ConsulRegistry`]: nodes kept as services of a Consul agent, over Consul's HTTP API
//! (the Agent API to register, the Health API to look up and watch), each with a TTL
//! check that the service's heartbeat passes, so a node whose process dies turns critical,
//! leaves the lookups, and is removed by the agent a while later.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};

use super::backend::{Follow, Named, follow, whole_seconds};
use super::{Node, Registration, Registry, RegistryError, RegistryFuture, Watch};
use crate::call::{address_list, causes};

/// How long one ordinary request may take before the registry reports Consul unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a watch's blocking query waits for a change unless told otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The longest wait Consul honours.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Consul's smallest `DeregisterCriticalServiceAfter` (it raises shorter ones to this).
const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// How much longer than its TTL a node's check stays critical before the agent removes the
/// node, unless [`ConsulRegistry::with_deregister_after`] says otherwise (at least
/// [`MIN_DEREGISTER_AFTER`]).
const DEREGISTER_SLACK: Duration = Duration::from_secs(5);

/// The least time between the starts of two queries of one watch, so a service whose
/// index moves all the time (Consul's indexes also move for changes elsewhere) is not
/// queried in a tight loop.
const QUERY_SPACING: Duration = Duration::from_millis(100);

/// The largest answer read from Consul.
const MAX_ANSWER: usize = 32 << 20;

/// The HTTP client used for every request.
type HttpClient = Client<HttpConnector, String>;

/// A registry in Consul: each node is a service instance registered with the Consul
/// agent at the given address (`PUT /v1/agent/service/register`; its id is the node id,
/// its name the service, its address and port the node's, its `Meta` the node's
/// metadata), with a TTL check `service:<node id>` of the registration's TTL.
///
/// Registering marks the check passing (`PUT /v1/agent/check/pass/service:<node id>`);
/// registering the same node again with nothing changed (the service's heartbeat) only
/// passes the check again. If that fails (the agent restarted and forgot the node, or
/// removed it after its check stayed critical) the node is registered anew. A node whose
/// heartbeats stop turns critical after its TTL, which hides it from lookups, and the agent
/// removes it once it has been critical for the TTL plus 5 s, or one minute, whichever is
/// longer (Consul's minimum; [`with_deregister_after`](Self::with_deregister_after) to
/// change). Deregistering is `PUT /v1/agent/service/deregister/<node id>`.
///
/// Lookups read the passing instances (`GET /v1/health/service/<service>?passing=true`); a
/// node's host is the instance's address, or its Consul node's address when it has none.
/// Watches follow Consul's blocking queries on the same endpoint (`index` from the last
/// `X-Consul-Index`, `wait` 60 s unless [`with_wait`](Self::with_wait) says otherwise), as
/// Consul documents them: the index is reset when it goes backwards and queries are at
/// least 100 ms apart.
///
/// Every request is given 5 s (a blocking query its wait, plus Consul's wait / 16 of
/// jitter, plus 5 s); a failure, a timeout, an error status or an unreachable agent is a
/// [`RegistryError::Unavailable`] naming the address and the request. A watch ends with
/// such an error when a query fails (the client's registry cache then keeps the last nodes
/// and watches again).
///
/// Plain HTTP only: for an agent behind TLS, put a local agent or a proxy in front.
///
/// Clones share the HTTP connections and what was registered.
#[derive(Clone)]
pub struct ConsulRegistry {
    http: HttpClient,
    /// `http://host:port`, or why the address given is not one.
    base: Result<Arc<str>, Arc<str>>,
    /// The address as given, for error messages.
    named: Named,
    token: Option<Arc<str>>,
    datacenter: Option<Arc<str>>,
    wait: Duration,
    deregister_after: Option<Duration>,
    /// The registration body last sent for each node, by (service, node id), so the
    /// heartbeat of an unchanged node only passes its check. Held across a whole register
    /// or deregister, so two registrations of one node do not interleave.
    registered: Arc<tokio::sync::Mutex<HashMap<(String, String), String>>>,
}

/// A request that failed: its status if Consul answered, and the message.
struct Failure {
    status: Option<StatusCode>,
    error: RegistryError,
}

impl From<Failure> for RegistryError {
    fn from(failure: Failure) -> Self {
        failure.error
    }
}

/// A successful answer.
struct Answer {
    /// `X-Consul-Index`, if Consul sent one.
    index: Option<u64>,
    body: Bytes,
}

/// The body of `PUT /v1/agent/service/register`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentRegistration<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    address: &'a str,
    port: u16,
    meta: &'a BTreeMap<String, String>,
    tags: [&'a str; 0],
    check: TtlCheck,
}

/// The TTL check registered with each node.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TtlCheck {
    #[serde(rename = "CheckID")]
    check_id: String,
    #[serde(rename = "TTL")]
    ttl: String,
    deregister_critical_service_after: String,
}

/// One entry of `GET /v1/health/service/<service>` (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: HealthNode,
    service: HealthService,
}

/// The Consul node (machine) an instance runs on.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    #[serde(default)]
    address: String,
}

/// The service instance.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

impl ConsulRegistry {
    /// The address [`new`](Self::new) is usually given: a local agent on Consul's port.
    pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

    /// The registry `MICRO_REGISTRY=consul` names: the one agent listed
    /// ([`DEFAULT_ADDRESS`](Self::DEFAULT_ADDRESS) when none is), with the ACL token of
    /// `CONSUL_HTTP_TOKEN`, as Consul's own CLI and Go client read it.
    pub(crate) fn from_addresses(addresses: &str) -> Result<Self, String> {
        let registry = match address_list(addresses).collect::<Vec<_>>().as_slice() {
            [] => Self::new(Self::DEFAULT_ADDRESS),
            [agent] => Self::new(agent),
            _ => {
                return Err(
                    "consul talks to one agent (usually the local one): give one address".into(),
                );
            }
        };
        Ok(match std::env::var("CONSUL_HTTP_TOKEN") {
            Ok(token) if !token.trim().is_empty() => registry.with_token(token.trim()),
            _ => registry,
        })
    }

    /// A registry in the Consul agent at `address` (`host:port` or `http://host:port`; port
    /// 8500 if none is given). Nothing is sent until the first operation, so the agent need
    /// not be up yet: until it is, operations fail with [`RegistryError::Unavailable`]. A
    /// malformed (or `https://`) address fails every operation the same way, saying why.
    pub fn new(address: impl AsRef<str>) -> Self {
        let address = address.as_ref();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            http,
            base: base_url(address).map(Into::into).map_err(Into::into),
            named: Named::new("consul", address.trim()),
            token: None,
            datacenter: None,
            wait: DEFAULT_WAIT,
            deregister_after: None,
            registered: Arc::default(),
        }
    }

    /// Sends `token` as `X-Consul-Token` with every request (for agents with ACLs).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into());
        self
    }

    /// Looks services up in datacenter `dc` (`?dc=`) rather than the agent's own. Nodes are
    /// always registered in the agent's datacenter.
    pub fn with_datacenter(mut self, dc: impl Into<String>) -> Self {
        self.datacenter = Some(dc.into().into());
        self
    }

    /// How long a watch's blocking query waits for a change before asking again (default
    /// 60 s; whole seconds, from 1 s to Consul's limit of 10 minutes). Shorter notices a
    /// silently dead connection sooner, at the cost of more requests.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait.clamp(Duration::from_secs(1), MAX_WAIT);
        self
    }

    /// How long a node's check may stay critical before the agent removes the node
    /// (default: its TTL plus 5 s, at least one minute). Consul raises anything under a
    /// minute to a minute, and reaps every 30 s.
    pub fn with_deregister_after(mut self, after: Duration) -> Self {
        self.deregister_after = Some(after);
        self
    }

    /// Sends one request and reads the whole answer within `limit`; any status but 2xx is
    /// a failure carrying Consul's message.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: String,
        limit: Duration,
    ) -> Result<Answer, Failure> {
        let failed = |status: Option<StatusCode>, why: String| Failure {
            status,
            error: self
                .named
                .unavailable(format_args!("{method} {path_and_query}"), why),
        };
        let base = self
            .base
            .as_ref()
            .map_err(|why| failed(None, why.to_string()))?;
        let uri: Uri = format!("{base}{path_and_query}")
            .parse()
            .map_err(|e| failed(None, format!("not a URI: {e}")))?;
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", &**token);
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body)
            .map_err(|e| failed(None, format!("building the request: {e}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| failed(None, error_chain(&e)))?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            let body = read_body(response.into_body())
                .await
                .map_err(|why| failed(Some(status), why))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(300).collect();
                return Err(failed(Some(status), format!("{status}: {text}")));
            }
            Ok(Answer { index, body })
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| failed(None, format!("no answer within {limit:?}")))?
    }

    /// A `PUT` to the Agent API.
    async fn put(&self, path: &str, body: String) -> Result<(), Failure> {
        self.send(Method::PUT, path, body, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// The registration body of `node`.
    fn registration(&self, service: &str, node: &Node, ttl: Duration) -> Result<String, String> {
        let (host, port) = split_host_port(&node.address)?;
        let ttl = whole_seconds(ttl);
        let deregister_after = whole_seconds(self.deregister_after.unwrap_or_else(|| {
            (Duration::from_secs(ttl) + DEREGISTER_SLACK).max(MIN_DEREGISTER_AFTER)
        }));
        serde_json::to_string(&AgentRegistration {
            id: &node.id,
            name: service,
            address: host,
            port,
            meta: &node.metadata,
            tags: [],
            check: TtlCheck {
                check_id: check_id(&node.id),
                ttl: format!("{ttl}s"),
                deregister_critical_service_after: format!("{deregister_after}s"),
            },
        })
        .map_err(|e| e.to_string())
    }

    /// Marks the TTL check of `node_id` passing.
    async fn pass(&self, node_id: &str) -> Result<(), Failure> {
        let path = format!(
            "/v1/agent/check/pass/service:{}",
            encode_path_segment(node_id)
        );
        self.put(&path, String::new()).await
    }

    async fn register_node(&self, registration: Registration<'_>) -> Result<(), RegistryError> {
        let Registration {
            service, node, ttl, ..
        } = registration;
        let body = self.registration(service, node, ttl).map_err(|why| {
            RegistryError::Invalid(format!(
                "{}: register node {} of {service}: {why}",
                self.named, node.id
            ))
        })?;
        let slot = (service.to_owned(), node.id.clone());
        let mut registered = self.registered.lock().await;

        // The heartbeat: nothing changed, the check only needs passing again.
        if registered.get(&slot) == Some(&body) {
            match self.pass(&node.id).await {
                Ok(()) => return Ok(()),
                Err(failure) => {
                    tracing::debug!(node = %node.id, error = %failure.error, "passing the check failed; registering again");
                }
            }
        }
        registered.remove(&slot);
        self.put("/v1/agent/service/register", body.clone()).await?;
        self.pass(&node.id).await?;
        registered.insert(slot, body);
        Ok(())
    }

    async fn deregister_node(&self, service: &str, node_id: &str) -> Result<(), RegistryError> {
        let slot = (service.to_owned(), node_id.to_owned());
        let mut registered = self.registered.lock().await;
        let path = format!(
            "/v1/agent/service/deregister/{}",
            encode_path_segment(node_id)
        );
        match self.put(&path, String::new()).await {
            Ok(()) => {}
            // The agent no longer knows the node (it was removed already): gone either way.
            Err(Failure {
                status: Some(StatusCode::NOT_FOUND),
                error,
            }) => {
                tracing::debug!(node = %node_id, %error, "deregistering a node the agent no longer knows");
            }
            Err(failure) => return Err(failure.into()),
        }
        registered.remove(&slot);
        Ok(())
    }

    /// The health query of `service`'s passing instances: blocking after `index` when
    /// `index` is not 0.
    fn health_query(&self, service: &str, index: u64) -> String {
        let mut query = format!(
            "/v1/health/service/{}?passing=true",
            encode_path_segment(service)
        );
        if let Some(dc) = &self.datacenter {
            query.push_str("&dc=");
            query.push_str(&encode_path_segment(dc));
        }
        if index > 0 {
            query.push_str(&format!("&index={index}&wait={}s", self.wait.as_secs()));
        }
        query
    }

    /// The passing nodes of `service` (sorted by id) and the `X-Consul-Index` they were
    /// read at; a blocking query when `index` is not 0.
    async fn nodes(&self, service: &str, index: u64) -> Result<(Vec<Node>, u64), RegistryError> {
        let query = self.health_query(service, index);
        let limit = if index > 0 {
            self.wait + self.wait / 16 + REQUEST_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        let answer = self.send(Method::GET, &query, String::new(), limit).await?;
        let broken = |why: String| self.named.unavailable(format_args!("GET {query}"), why);
        let index = answer
            .index
            .ok_or_else(|| broken("the answer has no X-Consul-Index header".into()))?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
            .map_err(|e| broken(format!("not a list of health entries: {e}")))?;
        let mut nodes: Vec<Node> = entries.into_iter().filter_map(decode).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((nodes, index))
    }
}

/// The check id Consul gives a service's TTL check here: `service:<node id>`.
fn check_id(node_id: &str) -> String {
    format!("service:{node_id}")
}

/// The node in one health entry, or `None` (with a warning) if the entry is not one.
fn decode(entry: serde_json::Value) -> Option<Node> {
    match serde_json::from_value::<HealthEntry>(entry) {
        Ok(HealthEntry { node, service }) => {
            // Consul documents that an instance without an address is at its node's.
            let host = if service.address.is_empty() {
                node.address
            } else {
                service.address
            };
            if host.is_empty() {
                tracing::warn!(id = %service.id, "skipping a Consul instance with no address");
                return None;
            }
            Some(Node {
                address: join_host_port(&host, service.port),
                id: service.id,
                metadata: service.meta.unwrap_or_default(),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "skipping a Consul health entry that is not an instance");
            None
        }
    }
}

/// `http://host:port` for `address` (`host:port` or `http://host:port`, port 8500 when
/// none is given), or why it is not an address this client can use.
fn base_url(address: &str) -> Result<String, String> {
    let address = address.trim().trim_end_matches('/');
    let rest = match address.split_once("://") {
        None => address,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err("https is not supported (this client speaks plain HTTP)".into());
        }
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?}")),
    };
    if rest.is_empty() {
        return Err("no address given".into());
    }
    let uri: Uri = format!("http://{rest}/")
        .parse()
        .map_err(|e| format!("not an address: {e}"))?;
    let authority = uri.authority().ok_or("not an address: no host")?;
    if uri.path() != "/" || uri.query().is_some() {
        return Err("an address with a path is not supported".into());
    }
    Ok(match authority.port_u16() {
        Some(_) => format!("http://{authority}"),
        None => format!("http://{authority}:8500"),
    })
}

/// `host` and port of a node address `host:port` (`[v6]:port` for IPv6).
fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let not = || format!("address {address:?} is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(not)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or_else(not)?,
        None if host.contains(':') => return Err(not()),
        None => host,
    };
    let port = port.parse().map_err(|_| not())?;
    if host.is_empty() {
        return Err(not());
    }
    Ok((host, port))
}

/// A node address from a host (brackets added for IPv6) and a port.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `value` percent-encoded for one path segment or query value (everything but RFC 3986's
/// unreserved characters).
fn encode_path_segment(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The whole of an answer's body, up to [`MAX_ANSWER`] bytes.
async fn read_body(mut body: Incoming) -> Result<Bytes, String> {
    let mut read = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("reading the answer: {}", error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > MAX_ANSWER {
                return Err(format!("the answer is over {MAX_ANSWER} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.into())
}

/// An error and its causes, `: `-separated (hyper's own messages say little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error).fold(error.to_string(), |message, cause| {
        format!("{message}: {cause}")
    })
}

/// A watch of one service: blocking queries, each on the index of the last answer (0
/// to read without blocking), at least [`QUERY_SPACING`] apart.
struct Following {
    registry: ConsulRegistry,
    service: String,
    index: u64,
    queried: Instant,
}

impl Follow for Following {
    async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
        tokio::time::sleep_until((self.queried + QUERY_SPACING).into()).await;
        self.queried = Instant::now();
        let (nodes, answered) = self.registry.nodes(&self.service, self.index).await?;
        // Consul's rules: an index that went backwards starts over from a plain read;
        // otherwise block on it, and never on 0 (that would not block).
        self.index = if answered < self.index {
            tracing::debug!(service = %self.service, index = self.index, answered, "the Consul index went backwards; reading afresh");
            0
        } else {
            answered.max(1)
        };
        Ok(nodes)
    }
}

impl Registry for ConsulRegistry {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        Box::pin(self.register_node(registration))
    }

    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        Box::pin(self.deregister_node(service, node_id))
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        Box::pin(async move { Ok(self.nodes(service, 0).await?.0) })
    }

    fn watch(&self, service: &str) -> Watch {
        let (registry, service) = (self.clone(), service.to_owned());
        follow(async move {
            let queried = Instant::now();
            let (nodes, index) = registry.nodes(&service, 0).await?;
            let following = Following {
                registry,
                service,
                index: index.max(1),
                queried,
            };
            Ok((following, nodes))
        })
    }
}

impl std::fmt::Debug for ConsulRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulRegistry")
            .field("address", &self.named)
            .field("datacenter", &self.datacenter)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_http_base_urls_and_bad_ones_say_why() {
        assert_eq!(base_url("127.0.0.1:8500").unwrap(), "http://127.0.0.1:8500");
        assert_eq!(
            base_url(" http://consul.local:9500/ ").unwrap(),
            "http://consul.local:9500"
        );
        assert_eq!(base_url("consul").unwrap(), "http://consul:8500");
        assert_eq!(base_url("[::1]:8500").unwrap(), "http://[::1]:8500");
        assert!(
            base_url("https://consul:8501")
                .unwrap_err()
                .contains("https")
        );
        assert!(
            base_url("unix:///run/consul.sock")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(base_url("consul:8500/v1").unwrap_err().contains("path"));
        assert!(base_url("").unwrap_err().contains("no address"));
        assert!(base_url("not an address").is_err());
    }

    #[test]
    fn node_addresses_split_into_host_and_port_and_join_back() {
        assert_eq!(
            split_host_port("127.0.0.1:5000").unwrap(),
            ("127.0.0.1", 5000)
        );
        assert_eq!(split_host_port("[::1]:5000").unwrap(), ("::1", 5000));
        assert_eq!(split_host_port("svc.local:1").unwrap(), ("svc.local", 1));
        for bad in [
            "127.0.0.1",
            "::1:5000",
            "[::1:5000",
            ":5000",
            "host:port",
            "h:70000",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(join_host_port("::1", 5000), "[::1]:5000");
        assert_eq!(join_host_port("10.0.0.1", 5000), "10.0.0.1:5000");
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(
            encode_path_segment("user.service-1f_~"),
            "user.service-1f_~"
        );
        assert_eq!(encode_path_segment("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }

    #[test]
    fn the_registration_body_is_consuls_service_definition_with_a_ttl_check() {
        let registry = ConsulRegistry::new("127.0.0.1:8500");
        let node = Node::new("svc-1", "[::1]:7000").with_metadata("zone", "east");
        let body = registry
            .registration("svc", &node, Duration::from_secs(90))
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "ID": "svc-1",
                "Name": "svc",
                "Address": "::1",
                "Port": 7000,
                "Meta": {"zone": "east"},
                "Tags": [],
                "Check": {
                    "CheckID": "service:svc-1",
                    "TTL": "90s",
                    "DeregisterCriticalServiceAfter": "95s",
                },
            })
        );
        // Consul's minimum of a minute, unless told otherwise.
        let short = registry
            .registration("svc", &node, Duration::from_secs(2))
            .unwrap();
        assert!(
            short.contains(r#""DeregisterCriticalServiceAfter":"60s""#),
            "{short}"
        );
        let told = registry
            .with_deregister_after(Duration::from_secs(3))
            .registration("svc", &node, Duration::from_secs(2))
            .unwrap();
        assert!(
            told.contains(r#""DeregisterCriticalServiceAfter":"3s""#),
            "{told}"
        );
    }

    #[test]
    fn health_entries_become_nodes_using_the_node_address_when_the_instance_has_none() {
        let entry = |address: &str, meta: serde_json::Value| {
            serde_json::json!({
                "Node": {"Node": "agent-1", "Address": "10.0.0.7"},
                "Service": {"ID": "a", "Service": "svc", "Address": address, "Port": 5000, "Meta": meta},
                "Checks": [],
            })
        };
        assert_eq!(
            decode(entry("10.0.0.9", serde_json::json!({"zone": "east"}))),
            Some(Node::new("a", "10.0.0.9:5000").with_metadata("zone", "east"))
        );
        assert_eq!(
            decode(entry("", serde_json::Value::Null)),
            Some(Node::new("a", "10.0.0.7:5000"))
        );
        assert_eq!(
            decode(entry("fd00::1", serde_json::json!({}))),
            Some(Node::new("a", "[fd00::1]:5000"))
        );
        assert_eq!(decode(serde_json::json!({"Service": {"ID": "x"}})), None);
    }

    #[test]
    fn a_registry_is_made_outside_any_runtime_without_contacting_consul() {
        let registry = ConsulRegistry::new("127.0.0.1:1").with_token("secret");
        let shown = format!("{registry:?}");
        assert!(
            shown.contains("127.0.0.1:1") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
