//! A Docker endpoint's container, from the Docker Engine API: its name and
//! labels, which the plugin protocol does not carry. Labels put a container
//! behind `netd service create --selector` and under policies by label, as
//! `netd endpoint create --label` does; the name is what it is called by.
//!
//! Docker calls Join while it starts the container, before the container
//! shows the endpoint in the API, so the endpoint is looked up after Join
//! returns, a few times, and its labels arrive through the one model path
//! (a store write, then the reconcile). Without the API (no dockerd socket,
//! no permission) Docker's networks still work, without labels: logged once.

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

/// How long a joined endpoint is looked for before giving up: Docker
/// finishes starting a container well within it.
const LOOK_FOR: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(200);

pub struct Containers {
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

impl Containers {
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
        let deadline = tokio::time::Instant::now() + LOOK_FOR;
        let container = loop {
            match self.of_endpoint(network_id, endpoint_id).await {
                Ok(Some(c)) => break c,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(EVERY).await
                }
                Ok(None) => {
                    tracing::warn!(endpoint = %endpoint_id, "Docker shows no container on this endpoint: it gets no labels");
                    return Ok(());
                }
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            socket = %self.socket.display(),
                            error = %crate::logging::chain(&e),
                            "no Docker API: Docker's containers get no labels or names in netd (logged once)"
                        );
                    }
                    return Ok(());
                }
            }
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
