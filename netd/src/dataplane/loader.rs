//! Loads the embedded object: maps pinned (reused when already there, so
//! counters and state survive restarts), programs loaded and pinned.

use std::{fs, io, path::PathBuf};

use aya::{
    maps::{PerCpuArray, ProgramArray},
    programs::{CgroupSockAddr, Program, ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use netd_common::{map_names, program_names};

use super::{
    counters::CountersError, object::EBPF_OBJECT, tables::Sizes, CountersReader, PinLayout,
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Conntrack(#[from] super::conntrack::ConntrackError),
    #[error("the monitor's maps")]
    Events(#[source] aya::maps::MapError),
    #[error(transparent)]
    EndpointStats(#[from] super::endpoint_stats::EndpointStatsError),
    #[error("cannot prepare pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused netd's BPF object")]
    Object(#[source] aya::EbpfError),
    #[error("the BPF object has no program {0} (netd and netd-ebpf out of step?)")]
    NoProgram(&'static str),
    #[error("the BPF object has no map {0} (netd and netd-ebpf out of step?)")]
    NoMap(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning program {name} at {path}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(transparent)]
    Counters(#[from] CountersError),
    #[error("filling the tail-call slots (NETD_PROGS)")]
    TailCalls {
        #[source]
        source: aya::maps::MapError,
    },
    #[error("writing the addresses published ports are taken on (NETD_PUBLISH_ADDRS)")]
    PublishAddresses {
        #[source]
        source: aya::maps::MapError,
    },
    #[error("writing masquerading's settings ({map})")]
    Egress {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("writing the pins' owner and layout (NETD_META)")]
    Meta {
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded datapath of this netd.
pub struct Datapath {
    ebpf: Ebpf,
    layout: PinLayout,
}

impl Datapath {
    /// Loads every program netd attaches and pins them under `layout`.
    pub fn load(layout: &PinLayout) -> Result<Self, LoadError> {
        Self::load_sized(layout, &Sizes::default())
    }

    /// The same, with the maps `sizes` names sized so.
    pub fn load_sized(layout: &PinLayout, sizes: &Sizes) -> Result<Self, LoadError> {
        layout.create().map_err(|source| LoadError::PinDir {
            path: layout.root().to_path_buf(),
            source,
        })?;
        let netns_cookie = super::host_local::netns_cookie();
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(layout.maps())
            .override_global("NETD_NETNS_COOKIE", &netns_cookie, false);
        for decl in super::tables::TABLES {
            let max = sizes.max_entries(decl);
            if max != decl.max_entries {
                loader.map_max_entries(decl.name, max);
            }
        }
        let ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
        let mut datapath = Self {
            ebpf,
            layout: layout.clone(),
        };
        datapath.load_xdp(program_names::XDP_UPLINK)?;
        datapath.load_tc(program_names::TC_UPLINK)?;
        datapath.load_tc(program_names::TC_ENDPOINT)?;
        for (name, _) in program_names::SOCK_ADDR {
            datapath.load_sock_addr(name)?;
        }
        datapath.fill_tail_calls()?;
        Ok(datapath)
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    fn load_xdp(&mut self, name: &'static str) -> Result<(), LoadError> {
        let program: &mut Xdp = program_as(&mut self.ebpf, name)?;
        program
            .load()
            .map_err(|source| LoadError::Program { name, source })?;
        pin_program(&self.layout, name, |path| program.pin(path))
    }

    fn load_tc(&mut self, name: &'static str) -> Result<(), LoadError> {
        let program: &mut SchedClassifier = program_as(&mut self.ebpf, name)?;
        program
            .load()
            .map_err(|source| LoadError::Program { name, source })?;
        pin_program(&self.layout, name, |path| program.pin(path))
    }

    fn load_sock_addr(&mut self, name: &'static str) -> Result<(), LoadError> {
        let program: &mut CgroupSockAddr = program_as(&mut self.ebpf, name)?;
        program
            .load()
            .map_err(|source| LoadError::Program { name, source })?;
        pin_program(&self.layout, name, |path| program.pin(path))
    }

    pub fn sock_addr_program(
        &mut self,
        name: &'static str,
    ) -> Result<&mut CgroupSockAddr, LoadError> {
        program_as(&mut self.ebpf, name)
    }

    /// Loads the tail-called programs and puts them in their `NETD_PROGS`,
    /// `NETD_XDP_PROGS` and `NETD_UPLINK_PROGS` slots, before any program
    /// is attached: a
    /// running endpoint or uplink program (of this netd or the one before)
    /// calls into the new ones at once.
    fn fill_tail_calls(&mut self) -> Result<(), LoadError> {
        for (_, name) in program_names::TAIL_CALLED {
            self.load_tc(name)?;
        }
        for (_, name) in program_names::XDP_TAIL_CALLED {
            self.load_xdp(name)?;
        }
        for (_, name) in program_names::UPLINK_TAIL_CALLED {
            self.load_tc(name)?;
        }
        self.fill(map_names::NETD_PROGS, &program_names::TAIL_CALLED)?;
        self.fill(map_names::NETD_XDP_PROGS, &program_names::XDP_TAIL_CALLED)?;
        self.fill(
            map_names::NETD_UPLINK_PROGS,
            &program_names::UPLINK_TAIL_CALLED,
        )
    }

    /// Puts each loaded program of `slots` in its slot of the prog array
    /// `map` (taken out of the object).
    fn fill(&mut self, map: &'static str, slots: &[(u32, &'static str)]) -> Result<(), LoadError> {
        let map = self.ebpf.take_map(map).ok_or(LoadError::NoMap(map))?;
        let mut array =
            ProgramArray::try_from(map).map_err(|source| LoadError::TailCalls { source })?;
        for &(slot, name) in slots {
            let program = self.ebpf.program(name).ok_or(LoadError::NoProgram(name))?;
            let fd = program
                .fd()
                .map_err(|source| LoadError::Program { name, source })?;
            array
                .set(slot, fd, 0)
                .map_err(|source| LoadError::TailCalls { source })?;
        }
        Ok(())
    }

    pub fn uplink_program(&mut self) -> Result<&mut Xdp, LoadError> {
        program_as(&mut self.ebpf, program_names::XDP_UPLINK)
    }

    pub fn tc_uplink_program(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        program_as(&mut self.ebpf, program_names::TC_UPLINK)
    }

    /// Takes the forwarding maps out of the object (call once).
    pub fn take_forwarding_maps(
        &mut self,
    ) -> Result<super::maps::KernelMaps, super::maps::MapWriteError> {
        super::maps::KernelMaps::take(&mut self.ebpf)
    }

    /// Records `meta` (owner and layout) in the pinned `NETD_META`.
    pub fn write_meta(&mut self, meta: &netd_common::maps::PinMeta) -> Result<(), LoadError> {
        let name = map_names::NETD_META;
        let map = self.ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
        let mut array: aya::maps::Array<&mut aya::maps::MapData, netd_common::maps::PinMeta> =
            aya::maps::Array::try_from(map).map_err(|source| LoadError::Meta { source })?;
        array
            .set(0, meta, 0)
            .map_err(|source| LoadError::Meta { source })
    }

    /// Writes masquerading's port range and makes `NETD_EGRESS_DEVS` hold
    /// exactly `devices` (ifindexes): before the programs that read them run.
    pub fn write_egress(
        &mut self,
        ports: netd_common::masquerade::MasqConfig,
        devices: &[u32],
    ) -> Result<(), LoadError> {
        let name = map_names::NETD_MASQ_CONFIG;
        let err = |source| LoadError::Egress { map: name, source };
        let map = self.ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
        let mut config: aya::maps::Array<
            &mut aya::maps::MapData,
            netd_common::masquerade::MasqConfig,
        > = aya::maps::Array::try_from(map).map_err(err)?;
        config.set(0, ports, 0).map_err(err)?;
        let name = map_names::NETD_EGRESS_DEVS;
        let err = |source| LoadError::Egress { map: name, source };
        let map = self.ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
        let mut hash: aya::maps::HashMap<&mut aya::maps::MapData, u32, u32> =
            aya::maps::HashMap::try_from(map).map_err(err)?;
        let stale: Vec<u32> = hash
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !devices.contains(k))
            .collect();
        for index in devices {
            hash.insert(index, 1, 0).map_err(err)?;
        }
        for index in &stale {
            hash.remove(index).map_err(err)?;
        }
        Ok(())
    }

    /// Makes `NETD_PUBLISH_ADDRS` hold exactly `addresses`.
    pub fn write_publish_addresses(
        &mut self,
        addresses: &[std::net::Ipv4Addr],
    ) -> Result<(), LoadError> {
        let name = map_names::NETD_PUBLISH_ADDRS;
        let map = self.ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
        let mut hash: aya::maps::HashMap<&mut aya::maps::MapData, [u8; 4], u32> =
            aya::maps::HashMap::try_from(map)
                .map_err(|source| LoadError::PublishAddresses { source })?;
        let wanted: Vec<[u8; 4]> = addresses.iter().map(|a| a.octets()).collect();
        let stale: Vec<[u8; 4]> = hash
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for address in &wanted {
            hash.insert(address, 1, 0)
                .map_err(|source| LoadError::PublishAddresses { source })?;
        }
        for address in &stale {
            hash.remove(address)
                .map_err(|source| LoadError::PublishAddresses { source })?;
        }
        Ok(())
    }

    /// Takes conntrack's maps out of the object (call once).
    pub fn take_conntrack(&mut self) -> Result<super::conntrack::Conntrack, LoadError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(LoadError::NoMap(name));
        let flows = take(map_names::NETD_CT)?;
        let replies = take(map_names::NETD_REV_NAT)?;
        let affinity = take(map_names::NETD_AFFINITY)?;
        super::conntrack::Conntrack::new(flows, replies, affinity).map_err(LoadError::Conntrack)
    }

    /// Takes masquerading's datapath maps out of the object (call once).
    pub fn take_nat_table(&mut self) -> Result<super::nat_table::NatTable, LoadError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(LoadError::NoMap(name));
        let flows = take(map_names::NETD_SNAT)?;
        let replies = take(map_names::NETD_SNAT_REV)?;
        super::nat_table::NatTable::new(flows, replies).map_err(LoadError::Conntrack)
    }

    /// Takes policy's datapath maps out of the object (call once).
    pub fn take_policy_state(&mut self) -> Result<super::policy_state::PolicyState, LoadError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(LoadError::NoMap(name));
        let flows = take(map_names::NETD_POLICY_CT)?;
        let hits = take(map_names::NETD_RULE_HITS)?;
        super::policy_state::PolicyState::new(flows, hits).map_err(LoadError::Conntrack)
    }

    /// Takes the routing mesh's datapath maps out of the object (call once).
    pub fn take_mesh_state(&mut self) -> Result<super::mesh_state::MeshState, LoadError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(LoadError::NoMap(name));
        let neighbours = take(map_names::NETD_MESH_NEIGH)?;
        let returns = take(map_names::NETD_MESH_RETURN)?;
        let sockets = take(map_names::NETD_SOCK_REVNAT)?;
        super::mesh_state::MeshState::new(neighbours, returns, sockets)
            .map_err(LoadError::Conntrack)
    }

    /// Takes the endpoints' counters map out of the object (call once).
    pub fn take_endpoint_stats(
        &mut self,
    ) -> Result<super::endpoint_stats::EndpointStatsMap, LoadError> {
        let map = self
            .ebpf
            .take_map(map_names::NETD_EP_STATS)
            .ok_or(LoadError::NoMap(map_names::NETD_EP_STATS))?;
        super::endpoint_stats::EndpointStatsMap::new(map).map_err(LoadError::EndpointStats)
    }

    /// Takes the monitor's maps out of the object (call once).
    pub fn take_events(&mut self) -> Result<super::events::Events, LoadError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(LoadError::NoMap(name));
        let ring = take(map_names::NETD_EVENTS)?;
        let monitor = take(map_names::NETD_MONITOR)?;
        let emit = take(map_names::NETD_EMIT)?;
        let pending = take(map_names::NETD_PENDING)?;
        super::events::Events::new(ring, monitor, emit, pending).map_err(LoadError::Events)
    }

    /// Takes the counters map out of the object (call once).
    pub fn take_counters(&mut self) -> Result<CountersReader, LoadError> {
        let map = self
            .ebpf
            .take_map(map_names::NETD_COUNTERS)
            .ok_or(LoadError::NoMap(map_names::NETD_COUNTERS))?;
        let map = PerCpuArray::try_from(map).map_err(CountersError::from)?;
        Ok(CountersReader::new(map)?)
    }
}

/// Program `name` of the object as its type (`Xdp`, `SchedClassifier`, ...).
fn program_as<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::NoProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

/// Replaces any pin a previous netd left for this program.
fn pin_program(
    layout: &PinLayout,
    name: &'static str,
    pin: impl FnOnce(&PathBuf) -> Result<(), aya::pin::PinError>,
) -> Result<(), LoadError> {
    let path = layout.progs().join(name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(LoadError::PinDir { path, source: e });
        }
    }
    pin(&path).map_err(|source| LoadError::Pin {
        name,
        path: path.clone(),
        source,
    })
}

/// Removes everything netd pinned under `layout`: detaches its programs
/// from every interface and frees its maps. The caller holds the lock.
pub fn remove_pins(layout: &PinLayout) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in [
        layout.links(),
        layout.progs(),
        layout.maps(),
        layout.carry(),
    ] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            fs::remove_file(&path)?;
            removed.push(path);
        }
        fs::remove_dir(&dir)?;
    }
    Ok(removed)
}
