//! Attaches the TC program to endpoint veths through TCX links pinned as
//! `<pin path>/links/tc-<ifname>`, so they keep forwarding while netd is
//! down; a restarted netd swaps its program into them atomically.

use std::{fs, path::Path};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    LinkOrder, SchedClassifier, TcAttachType,
};
use netd_common::program_names;

use super::{Datapath, LoadError, PinLayout};

#[derive(Debug, thiserror::Error)]
pub enum EndpointAttachError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("attaching the endpoint program to {ifname}")]
    Attach {
        ifname: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub fn tc_link_path(layout: &PinLayout, ifname: &str) -> std::path::PathBuf {
    layout.links().join(format!("{TC_LINK_PREFIX}{ifname}"))
}

pub const TC_LINK_PREFIX: &str = "tc-";

impl Datapath {
    fn endpoint_program(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        let name = program_names::TC_ENDPOINT;
        self.ebpf_mut()
            .program_mut(name)
            .ok_or(LoadError::NoProgram(name))?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })
    }

    /// Makes sure `ifname` runs this netd's endpoint program on ingress.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<(), EndpointAttachError> {
        let path = tc_link_path(self.layout(), ifname);
        let err = |source: Box<dyn std::error::Error + Send + Sync>| EndpointAttachError::Attach {
            ifname: ifname.to_string(),
            source,
        };
        let program = self.endpoint_program()?;
        if path.exists() && replace(program, &path).is_ok() {
            return Ok(());
        }
        let _ = fs::remove_file(&path);
        let id = program
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| err(Box::new(e)))?;
        let link = program.take_link(id).map_err(|e| err(Box::new(e)))?;
        let fd_link = FdLink::try_from(link).map_err(|e| err(Box::new(e)))?;
        fd_link.pin(&path).map_err(|e| err(Box::new(e)))?;
        Ok(())
    }
}

fn replace(program: &mut SchedClassifier, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let pinned = PinnedLink::from_pin(path)?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
    drop(program.take_link(id)?);
    Ok(())
}

/// Removes the pinned TC link of `ifname` (detaching the program).
pub fn detach_endpoint(layout: &PinLayout, ifname: &str) {
    let _ = fs::remove_file(tc_link_path(layout, ifname));
}

/// Interfaces with a pinned TC link.
pub fn pinned_endpoint_links(layout: &PinLayout) -> Vec<String> {
    let Ok(entries) = fs::read_dir(layout.links()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(TC_LINK_PREFIX)
                .map(str::to_string)
        })
        .collect()
}
