//! What the plugin protocol does not carry, read from the Docker Engine
//! API: a network's name, and an endpoint's container, with its name and
//! labels. Labels put a container behind `netd service create --selector`
//! and under policies by label, as `netd endpoint create --label` does;
//! names are what users call things by.
//!
//! Docker calls CreateNetwork before it stores the network, and Join while
//! it starts the container, before the container shows the endpoint; so
//! both are looked up after the call returns, a few times, and arrive
//! through the one model path (a store write, then the reconcile). Without
//! the API (no dockerd socket, no permission) Docker's networks still
//! work, with provisional names and without labels: logged once.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Deserialize;

use crate::{agent::Agent, client::Client, control::ControlError, model::ModelError, store::Store};

/// Docker's own default socket.
pub const DEFAULT_DOCKER_API_SOCKET: &str = "/var/run/docker.sock";

/// How long a new network or joined endpoint is looked for before giving
/// up: Docker finishes creating a network or starting a container well
/// within it.
const LOOK_FOR: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(200);

pub struct DockerApi {
    api: Client,
    socket: PathBuf,
    warned: AtomicBool,
}

/// What netd takes from a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// `GET /containers/json`'s items, the fields read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    network_settings: Option<NetworkSettings>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSettings {
    #[serde(default)]
    networks: BTreeMap<String, Option<EndpointSettings>>,
}

/// `GET /networks`'s items, the fields read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSummary {
    #[serde(rename = "Id")]
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct EndpointSettings {
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

/// The container of `endpoint_id` in a container list, if any.
fn find(list: Vec<Summary>, endpoint_id: &str) -> Option<Container> {
    list.into_iter().find_map(|c| {
        let on = c
            .network_settings?
            .networks
            .into_values()
            .flatten()
            .any(|e| e.endpoint_id == endpoint_id);
        on.then(|| Container {
            name: c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
        })
    })
}

/// `text` for a URL's query: everything but letters, digits and `-_.~`
/// as `%XX`.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl DockerApi {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            api: Client::docker(&socket),
            socket,
            warned: AtomicBool::new(false),
        }
    }

    /// The container on Docker network `network_id` with endpoint
    /// `endpoint_id`, if Docker shows it yet.
    pub async fn of_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<Container>, crate::client::ClientError> {
        let filters = serde_json::json!({ "network": [network_id] }).to_string();
        let path = format!("/containers/json?all=1&filters={}", query_escape(&filters));
        let list: Vec<Summary> = self.api.get(&path).await?;
        Ok(find(list, endpoint_id))
    }

    /// The name of Docker network `network_id`, if Docker shows it yet.
    pub async fn network_name(
        &self,
        network_id: &str,
    ) -> Result<Option<String>, crate::client::ClientError> {
        let filters = serde_json::json!({ "id": [network_id] }).to_string();
        let path = format!("/networks?filters={}", query_escape(&filters));
        let list: Vec<NetworkSummary> = self.api.get(&path).await?;
        Ok(list
            .into_iter()
            .find(|n| n.id == network_id)
            .map(|n| n.name))
    }

    /// Asks `look` until it finds something, every [`EVERY`] for up to
    /// [`LOOK_FOR`]. None when nothing came in time, or when the API cannot
    /// be reached (logged once for the life of netd).
    async fn look_for<T, F, Fut>(&self, mut look: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, crate::client::ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + LOOK_FOR;
        loop {
            match look().await {
                Ok(Some(found)) => return Some(found),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(EVERY).await
                }
                Ok(None) => return None,
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            socket = %self.socket.display(),
                            error = %crate::logging::chain(&e),
                            "no Docker API: Docker's networks keep provisional names and its \
                             containers get no labels or names in netd (logged once)"
                        );
                    }
                    return None;
                }
            }
        }
    }

    /// After a CreateNetwork: gives the network Docker's name for it, or
    /// says why it keeps the one it has. In the background.
    pub fn name_after_create<S: Store>(self: &Arc<Self>, agent: Arc<Agent<S>>, network_id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let Some(name) = me.look_for(|| me.network_name(&network_id)).await else {
                return;
            };
            match agent
                .control()
                .name_docker_network(&network_id, &name)
                .await
            {
                Ok(None) => {
                    tracing::info!(network = %network_id, name = %name, "Docker network named")
                }
                Ok(Some(why)) => {
                    tracing::warn!(network = %network_id, docker_name = %name, "the network keeps its netd name: {why}")
                }
                // Removed meanwhile.
                Err(ControlError::Model(ModelError::NotFound { .. })) => {}
                Err(e) => {
                    tracing::warn!(network = %network_id, error = %crate::logging::chain(&e), "Docker's network name not applied")
                }
            }
        });
    }

    /// After a Join: finds the endpoint's container and gives the endpoint
    /// its name and labels. In the background; a failure is logged.
    pub fn label_after_join<S: Store>(
        self: &Arc<Self>,
        agent: Arc<Agent<S>>,
        network_id: String,
        endpoint_id: String,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.label(&agent, &network_id, &endpoint_id).await {
                tracing::warn!(endpoint = %endpoint_id, error = %crate::logging::chain(&e), "container labels not applied");
            }
        });
    }

    async fn label<S: Store>(
        &self,
        agent: &Agent<S>,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), crate::agent::AgentError> {
        let Some(container) = self
            .look_for(|| self.of_endpoint(network_id, endpoint_id))
            .await
        else {
            tracing::info!(endpoint = %endpoint_id, "no container of this endpoint seen in the Docker API: it gets no labels");
            return Ok(());
        };
        match agent
            .control()
            .set_container(endpoint_id, &container.name, container.labels)
            .await
        {
            // Gone meanwhile: a container removed right after it started.
            Err(ControlError::Model(ModelError::NotFound { .. })) => return Ok(()),
            other => {
                other?;
            }
        }
        agent.settle().await?;
        tracing::info!(endpoint = %endpoint_id, container = %container.name, "container's labels applied");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_of_an_endpoint_is_found_by_its_endpoint_id() {
        let list = r#"[
            {"Names": ["/other"], "Labels": {"app": "db"},
             "NetworkSettings": {"Networks": {"n1": {"EndpointID": "e0"}}}},
            {"Names": ["/web1"], "Labels": {"app": "web", "tier": "front"},
             "NetworkSettings": {"Networks": {"n0": null, "n1": {"EndpointID": "e1"}}}},
            {"Names": ["/starting"], "Labels": null,
             "NetworkSettings": {"Networks": {"n1": {"EndpointID": ""}}}}
        ]"#;
        let parse = || serde_json::from_str::<Vec<Summary>>(list).expect("list");
        let web = find(parse(), "e1").expect("found");
        assert_eq!(web.name, "web1");
        assert_eq!(
            web.labels,
            BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("tier".to_string(), "front".to_string())
            ])
        );
        assert_eq!(find(parse(), "e9"), None, "not shown yet");
    }

    #[test]
    fn a_filter_is_escaped_for_the_query() {
        assert_eq!(
            query_escape(r#"{"network":["ab12"]}"#),
            "%7B%22network%22%3A%5B%22ab12%22%5D%7D"
        );
    }
}
