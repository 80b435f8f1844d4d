//! The local control API: HTTP/JSON on a unix socket (root only, mode
//! 0600). Every call is a model operation, answered once this host's
//! datapath has applied it (the follower's pass, not one of its own),
//! so when it answers, the kernel matches (or the change was undone).

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use axum::{
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tracing::warn;

use crate::{
    agent::{Agent, AgentError},
    control::ControlError,
    dataplane::conntrack::{FlowFilter, FlowView},
    dataplane::maps::MapFill,
    model::{
        Backend, Endpoint, EndpointSpec, ModelError, Network, NetworkSpec, Policy, PolicySpec,
        Service, ServiceSpec, ServiceUpdate,
    },
    store::Store,
};

pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";

/// An error as the API returns it: `{"error": "..."}` with a status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Model(ModelError::NotFound { .. }) => StatusCode::NOT_FOUND,
            ControlError::Model(
                ModelError::Exists { .. } | ModelError::InUse { .. } | ModelError::Full { .. },
            ) => StatusCode::CONFLICT,
            ControlError::Model(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, crate::logging::chain(&e))
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Control(c) => c.into(),
            other => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::logging::chain(&other),
            ),
        }
    }
}

type Shared<S> = Arc<Agent<S>>;

#[derive(Serialize, Deserialize)]
pub struct Status {
    pub networks: usize,
    pub endpoints: usize,
    #[serde(default)]
    pub services: usize,
    pub maps: Vec<MapFill>,
    pub pin_path: String,
    /// Pinned attachments: `xdp-<uplink>`, `uplink-tc-<uplink>` and
    /// `tc-<host veth>`.
    pub attachments: Vec<String>,
    /// Each uplink's hook (`xdp native`, `tc`, ...) and why.
    #[serde(default)]
    pub uplinks: Vec<crate::dataplane::uplink::UplinkAttachment>,
    /// The addresses published ports are taken on.
    #[serde(default)]
    pub publish_addresses: Vec<std::net::Ipv4Addr>,
    /// Masquerading: the devices it leaves by and its ports.
    #[serde(default)]
    pub egress: crate::dataplane::egress::HostEgress,
}

async fn list_networks<S: Store>(
    State(agent): State<Shared<S>>,
) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(agent.control().networks().await?))
}

async fn create_network<S: Store>(
    State(agent): State<Shared<S>>,
    Json(spec): Json<NetworkSpec>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    agent
        .check_mtu(spec.mtu, spec.overlay)
        .map_err(crate::control::ControlError::from)?;
    let network = agent.control().create_network(&spec).await?;
    agent.settle().await?;
    Ok((StatusCode::CREATED, Json(network)))
}

async fn get_network<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(agent.control().network(&name).await?))
}

async fn delete_network<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Network>, ApiError> {
    let network = agent.control().delete_network(&name).await?;
    agent.settle().await?;
    Ok(Json(network))
}

async fn list_endpoints<S: Store>(
    State(agent): State<Shared<S>>,
) -> Result<Json<Vec<Endpoint>>, ApiError> {
    Ok(Json(agent.control().endpoints().await?))
}

/// Creates the endpoint and its link; if the link cannot be made (no such
/// sandbox, ...), the endpoint is removed again and the reason returned.
async fn create_endpoint<S: Store>(
    State(agent): State<Shared<S>>,
    Json(spec): Json<EndpointSpec>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    if spec.external_host.is_none() && !spec.netns.exists() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("netns: {} does not exist", spec.netns.display()),
        ));
    }
    let endpoint = agent.control().create_endpoint(&spec).await?;
    let applied = agent.settle().await?;
    if let Some(reason) = applied.failures.get(&endpoint.id) {
        if let Err(e) = agent.control().delete_endpoint(&endpoint.id).await {
            warn!(error = %crate::logging::chain(&e), "rolling back a failed endpoint");
        }
        agent.settle().await?;
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("endpoint {}: {reason}; nothing was kept", endpoint.name),
        ));
    }
    Ok((StatusCode::CREATED, Json(endpoint)))
}

async fn get_endpoint<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(agent.control().endpoint(&name).await?))
}

async fn delete_endpoint<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let endpoint = agent.control().delete_endpoint(&name).await?;
    agent.settle().await?;
    Ok(Json(endpoint))
}

async fn list_hosts<S: Store>(
    State(agent): State<Shared<S>>,
) -> Result<Json<Vec<crate::model::Host>>, ApiError> {
    Ok(Json(agent.control().hosts().await?))
}

/// `POST /hosts`: an external host (no netd there) by name and underlay address.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExternalHostSpec {
    pub name: String,
    pub underlay_ip: std::net::Ipv4Addr,
}

async fn add_external_host<S: Store>(
    State(agent): State<Shared<S>>,
    Json(spec): Json<ExternalHostSpec>,
) -> Result<(StatusCode, Json<crate::model::Host>), ApiError> {
    let host = agent
        .control()
        .add_external_host(&spec.name, spec.underlay_ip)
        .await?;
    agent.settle().await?;
    Ok((StatusCode::CREATED, Json(host)))
}

async fn remove_host<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::model::Host>, ApiError> {
    let host = agent.control().remove_host(&name).await?;
    agent.settle().await?;
    Ok(Json(host))
}

/// A service with the backends it has now.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    pub backends: Vec<Backend>,
}

impl ServiceView {
    fn of(service: Service, endpoints: &[Endpoint]) -> Self {
        ServiceView {
            backends: service.backends_in(endpoints),
            service,
        }
    }
}

async fn view<S: Store>(agent: &Agent<S>, service: Service) -> Result<ServiceView, ApiError> {
    Ok(ServiceView::of(
        service,
        &agent.control().endpoints().await?,
    ))
}

async fn list_services<S: Store>(
    State(agent): State<Shared<S>>,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    let endpoints = agent.control().endpoints().await?;
    let services = agent.control().services().await?;
    Ok(Json(
        services
            .into_iter()
            .map(|s| ServiceView::of(s, &endpoints))
            .collect(),
    ))
}

async fn create_service<S: Store>(
    State(agent): State<Shared<S>>,
    Json(spec): Json<ServiceSpec>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let service = agent.control().create_service(&spec).await?;
    agent.settle().await?;
    Ok((StatusCode::CREATED, Json(view(&agent, service).await?)))
}

/// `POST /batch/services`: every service of the list, or none.
async fn create_services<S: Store>(
    State(agent): State<Shared<S>>,
    Json(specs): Json<Vec<ServiceSpec>>,
) -> Result<(StatusCode, Json<Vec<Service>>), ApiError> {
    let created = agent.control().create_services(&specs).await?;
    agent.settle().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn get_service<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let service = agent.control().service(&name).await?;
    Ok(Json(view(&agent, service).await?))
}

async fn update_service<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
    Json(update): Json<ServiceUpdate>,
) -> Result<Json<ServiceView>, ApiError> {
    let service = agent.control().update_service(&name, &update).await?;
    agent.settle().await?;
    Ok(Json(view(&agent, service).await?))
}

async fn delete_service<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Service>, ApiError> {
    let service = agent.control().delete_service(&name).await?;
    agent.settle().await?;
    Ok(Json(service))
}

async fn list_conntrack<S: Store>(
    State(agent): State<Shared<S>>,
    Query(filter): Query<FlowFilter>,
) -> Result<Json<Vec<FlowView>>, ApiError> {
    Ok(Json(agent.conntrack(&filter).await?))
}

/// `GET /conntrack/nat`: masquerading's flows.
async fn list_nat<S: Store>(
    State(agent): State<Shared<S>>,
) -> Json<Vec<crate::dataplane::nat_table::NatView>> {
    Json(agent.nat_flows().await)
}

/// `DELETE /conntrack?service=NAME&backend=IP`: how many flows went.
async fn flush_conntrack<S: Store>(
    State(agent): State<Shared<S>>,
    Query(filter): Query<FlowFilter>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(name) = &filter.service {
        agent.control().service(name).await?;
    }
    let flushed = agent.flush_conntrack(&filter).await?;
    Ok(Json(serde_json::json!({ "flushed": flushed })))
}

/// A policy with its rules' hits on this host.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyView {
    #[serde(flatten)]
    pub policy: Policy,
    /// Rules that decided anything here: direction, number from 1, hits.
    pub hits: Vec<RuleHitsView>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RuleHitsView {
    pub direction: String,
    pub rule: usize,
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub audited_packets: u64,
    pub audited_bytes: u64,
}

async fn policy_views<S: Store>(agent: &Agent<S>, policies: Vec<Policy>) -> Vec<PolicyView> {
    let hits = agent.rule_hits(&policies).await;
    let labelled = crate::agent::label_rules(&policies, &hits);
    policies
        .into_iter()
        .map(|policy| PolicyView {
            hits: labelled
                .iter()
                .filter(|(name, ..)| *name == policy.name)
                .map(|(_, direction, rule, h)| RuleHitsView {
                    direction: direction.to_string(),
                    rule: *rule,
                    allowed_packets: h.allowed_packets,
                    allowed_bytes: h.allowed_bytes,
                    denied_packets: h.denied_packets,
                    denied_bytes: h.denied_bytes,
                    audited_packets: h.audited_packets,
                    audited_bytes: h.audited_bytes,
                })
                .collect(),
            policy,
        })
        .collect()
}

async fn list_policies<S: Store>(
    State(agent): State<Shared<S>>,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    let policies = agent.control().policies().await?;
    Ok(Json(policy_views(&agent, policies).await))
}

/// Creates a policy; returns once this host enforces it.
async fn create_policy<S: Store>(
    State(agent): State<Shared<S>>,
    Json(spec): Json<PolicySpec>,
) -> Result<(StatusCode, Json<Policy>), ApiError> {
    let policy = agent.control().create_policy(&spec).await?;
    agent.settle().await?;
    Ok((StatusCode::CREATED, Json(policy)))
}

async fn get_policy<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = agent.control().policy(&name).await?;
    let mut views = policy_views(&agent, vec![policy]).await;
    views
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no policy named {name:?}")))
}

async fn delete_policy<S: Store>(
    State(agent): State<Shared<S>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Policy>, ApiError> {
    let policy = agent.control().delete_policy(&name).await?;
    agent.settle().await?;
    Ok(Json(policy))
}

/// Each local endpoint's traffic and drops, by endpoint name.
async fn traffic<S: Store>(
    State(agent): State<Shared<S>>,
) -> Json<std::collections::BTreeMap<String, crate::endpoint_traffic::EndpointTraffic>> {
    Json(agent.traffic().read().await)
}

async fn status<S: Store>(State(agent): State<Shared<S>>) -> Result<Json<Status>, ApiError> {
    let maps = agent.map_fill().await?;
    Ok(Json(Status {
        networks: agent.control().networks().await?.len(),
        endpoints: agent.control().endpoints().await?.len(),
        services: agent.control().services().await?.len(),
        maps,
        attachments: agent.attachments(),
        uplinks: agent.uplinks().to_vec(),
        publish_addresses: agent.publish_addresses().to_vec(),
        egress: agent.egress().clone(),
        pin_path: agent.pin_path(),
    }))
}

/// `netd monitor`: the datapath's events that match the query, one JSON
/// object a line, for as long as the client reads. A listener that falls
/// behind gets a `{"type":"missed","count":N}` line.
async fn monitor<S: Store>(
    State(agent): State<Shared<S>>,
    Query(filter): Query<crate::monitor::Filter>,
) -> Result<Response, ApiError> {
    filter
        .check()
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))?;
    let listening = agent.monitor().listen(filter.kinds());
    let lines = futures_util::stream::unfold(listening, move |mut l| {
        let filter = filter.clone();
        async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let line = match l.rx.recv().await {
                    Ok(record) if filter.matches(&record) => {
                        serde_json::to_string(&*record).unwrap_or_default()
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => format!("{{\"type\":\"missed\",\"count\":{n}}}"),
                    Err(RecvError::Closed) => return None,
                };
                let bytes = axum::body::Bytes::from(line + "\n");
                return Some((Ok::<_, std::convert::Infallible>(bytes), l));
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

pub fn router<S: Store>(agent: Shared<S>) -> Router {
    Router::new()
        .route(
            "/networks",
            get(list_networks::<S>).post(create_network::<S>),
        )
        .route(
            "/networks/{name}",
            get(get_network::<S>).delete(delete_network::<S>),
        )
        .route(
            "/endpoints",
            get(list_endpoints::<S>).post(create_endpoint::<S>),
        )
        .route(
            "/endpoints/{name}",
            get(get_endpoint::<S>).delete(delete_endpoint::<S>),
        )
        .route(
            "/policies",
            get(list_policies::<S>).post(create_policy::<S>),
        )
        .route(
            "/policies/{name}",
            get(get_policy::<S>).delete(delete_policy::<S>),
        )
        .route(
            "/services",
            get(list_services::<S>).post(create_service::<S>),
        )
        .route("/batch/services", axum::routing::post(create_services::<S>))
        .route(
            "/services/{name}",
            get(get_service::<S>)
                .patch(update_service::<S>)
                .delete(delete_service::<S>),
        )
        .route(
            "/conntrack",
            get(list_conntrack::<S>).delete(flush_conntrack::<S>),
        )
        .route("/conntrack/nat", get(list_nat::<S>))
        .route("/status", get(status::<S>))
        .route("/monitor", get(monitor::<S>))
        .route("/traffic", get(traffic::<S>))
        .route("/hosts", get(list_hosts::<S>).post(add_external_host::<S>))
        .route("/hosts/{name}", delete(remove_host::<S>))
        .with_state(agent)
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another netd already serves {path}; stop it, or {fix}")]
    InUse { path: String, fix: &'static str },
    #[error("cannot listen on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a user changes when the API socket is taken.
pub const SOCKET_FIX: &str = "give this one its own --socket";

/// Binds a root-only socket, replacing a stale one but never a live one.
/// `fix` names the flags that choose another one.
pub async fn bind(path: &Path, fix: &'static str) -> Result<UnixListener, SocketError> {
    let io = |source| SocketError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse {
                path: path.display().to_string(),
                fix,
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_taken_socket_names_the_flags_that_fix_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("netd.sock");
        let _live = super::bind(&path, super::SOCKET_FIX).await.expect("first");
        let api = super::bind(&path, super::SOCKET_FIX)
            .await
            .expect_err("taken")
            .to_string();
        assert!(api.contains("--socket"), "{api}");
        let plugin = crate::plugin::bind(&path)
            .await
            .expect_err("taken")
            .to_string();
        assert!(
            plugin.contains("--docker-plugin-socket") && plugin.contains("--docker-plugin=false"),
            "{plugin}"
        );
        assert!(!plugin.contains("own --socket"), "{plugin}");
    }
}
