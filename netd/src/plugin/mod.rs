//! Docker's plugin protocol: netd as a libnetwork remote network driver
//! and IPAM driver, on /run/docker/plugins/netd.sock. Every call becomes
//! the same model operation as the CLI's, through the store and the one
//! reconcile path; answers are JSON, errors `{"Err": "..."}`.

pub mod docker_api;
mod ipam;
mod network;
mod port_map;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use crate::{agent::Agent, store::Store};

pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netd.sock";
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// A refusal, in words a Docker user understands.
#[derive(Debug)]
pub struct PluginError(pub String);

impl<E: std::error::Error + 'static> From<E> for PluginError {
    fn from(e: E) -> Self {
        PluginError(crate::logging::chain(&e))
    }
}

pub type Answer = Result<Value, PluginError>;

/// Docker sends `null` for empty maps, lists and strings: read it as empty.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Parses a request body; a malformed one names what was wrong.
pub fn parse<T: DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(body)
        .map_err(|e| PluginError(format!("{method}: bad request body: {e}")))
}

fn reply(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        value.to_string(),
    )
        .into_response()
}

/// What the plugin's calls work with.
pub struct Plugin<S> {
    pub agent: Arc<Agent<S>>,
    /// The Docker API, for networks' names and containers' names and
    /// labels; None: not asked.
    pub docker_api: Option<Arc<docker_api::DockerApi>>,
}

async fn dispatch<S: Store>(
    State(plugin): State<Arc<Plugin<S>>>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Response {
    let agent = &plugin.agent;
    let answer = match method.as_str() {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        m if m.starts_with("NetworkDriver.") => {
            match network::call(&plugin, &m["NetworkDriver.".len()..], &body).await {
                Some(answer) => answer,
                None => {
                    return reply(
                        StatusCode::NOT_FOUND,
                        json!({ "Err": format!("unknown method {m}") }),
                    )
                }
            }
        }
        m if m.starts_with("IpamDriver.") => {
            match ipam::call(agent, &m["IpamDriver.".len()..], &body).await {
                Some(answer) => answer,
                None => {
                    return reply(
                        StatusCode::NOT_FOUND,
                        json!({ "Err": format!("unknown method {m}") }),
                    )
                }
            }
        }
        m => {
            return reply(
                StatusCode::NOT_FOUND,
                json!({ "Err": format!("unknown method {m}") }),
            )
        }
    };
    match answer {
        Ok(value) => reply(StatusCode::OK, value),
        Err(PluginError(message)) => {
            tracing::warn!(method = %method, error = %message, "docker plugin call refused");
            reply(
                StatusCode::BAD_REQUEST,
                json!({ "Err": format!("netd: {message}") }),
            )
        }
    }
}

/// `docker_api`: dockerd's socket, where networks' names are read after
/// CreateNetwork and containers' names and labels after Join; None leaves
/// them out.
pub fn router<S: Store>(agent: Arc<Agent<S>>, docker_api: Option<PathBuf>) -> Router {
    let docker_api = docker_api.map(|socket| Arc::new(docker_api::DockerApi::new(socket)));
    Router::new()
        .route("/{method}", post(dispatch::<S>))
        .with_state(Arc::new(Plugin { agent, docker_api }))
}

/// What a user changes when the plugin socket is taken.
pub const SOCKET_FIX: &str =
    "give this one its own --docker-plugin-socket PATH, or turn the plugin off with --docker-plugin=false";

/// Binds the plugin socket (root only), replacing a stale one but never a live one.
pub async fn bind(path: &Path) -> Result<UnixListener, crate::api::SocketError> {
    crate::api::bind(path, SOCKET_FIX).await
}
