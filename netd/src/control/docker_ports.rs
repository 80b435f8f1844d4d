//! Docker's `-p`: a container's published ports are a service named
//! after its endpoint, with that endpoint as its one backend, publishing
//! them with mode=host and no VIP. The same model, checks and datapath as
//! `netd service create --publish`.

use super::{Control, ControlError};
use crate::{
    model::{PublishedPort, Service, ServiceSpec, ServiceUpdate},
    store::Store,
};

impl<S: Store> Control<S> {
    /// ProgramExternalConnectivity (idempotent: Docker replays it).
    /// `ports` empty unpublishes.
    pub async fn publish_docker_endpoint(
        &self,
        endpoint_id: &str,
        ports: &[PublishedPort],
    ) -> Result<Option<Service>, ControlError> {
        if ports.is_empty() {
            self.unpublish_docker_endpoint(endpoint_id).await?;
            return Ok(None);
        }
        let endpoint = self.endpoint(endpoint_id).await?;
        let texts: Vec<String> = ports
            .iter()
            .map(|p| {
                let mut text = format!(
                    "published={},target={},protocol={},mode=host",
                    p.published, p.target_port, p.protocol
                );
                for net in &p.allow {
                    text.push_str(&format!(",allow={net}"));
                }
                text
            })
            .collect();
        let mut wanted = ports.to_vec();
        wanted.sort();
        match self.service(&endpoint.name).await {
            Ok(current) if current.published == wanted => Ok(Some(current)),
            Ok(current) => {
                let update = ServiceUpdate {
                    publish: Some(texts),
                    ..Default::default()
                };
                Ok(Some(self.update_service(&current.id, &update).await?))
            }
            Err(_) => {
                let spec = ServiceSpec {
                    name: endpoint.name.clone(),
                    network: endpoint.network.clone(),
                    backends: vec![endpoint.name.clone()],
                    publish: texts,
                    ..Default::default()
                };
                Ok(Some(self.create_service(&spec).await?))
            }
        }
    }

    /// RevokeExternalConnectivity, and DeleteEndpoint for one Docker did
    /// not revoke: the endpoint's published ports go (idempotent).
    pub async fn unpublish_docker_endpoint(&self, endpoint_id: &str) -> Result<(), ControlError> {
        let Ok(endpoint) = self.endpoint(endpoint_id).await else {
            return Ok(());
        };
        match self.service(&endpoint.name).await {
            Ok(service) if service.endpoints == [endpoint.name.clone()] => {
                self.delete_service(&service.id).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
