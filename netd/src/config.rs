//! Settings of `netd run`: one [`Settings`] that is both the command
//! line's flags and the TOML file's keys, flags over the file, resolved
//! over the defaults into a [`RunConfig`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::dataplane::conntrack::ConntrackConfig;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/netd";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9964";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netd";
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";
pub const DEFAULT_DOCKER_PLUGIN_SOCKET: &str = "/run/docker/plugins/netd.sock";

/// Where the model lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreSpec {
    /// The file-backed store under the state dir: a single host.
    #[default]
    Embedded,
    /// etcd v3 at these host:port endpoints: a cluster.
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("store {s:?} is neither \"embedded\" nor etcd://HOST:PORT[,HOST:PORT...]");
        if s == "embedded" {
            return Ok(StoreSpec::Embedded);
        }
        let rest = s.strip_prefix("etcd://").ok_or_else(bad)?;
        let endpoints: Vec<String> = rest.split(',').map(str::to_string).collect();
        for e in &endpoints {
            let (host, port) = e.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
        }
        Ok(StoreSpec::Etcd(endpoints))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Embedded => write!(f, "embedded"),
            StoreSpec::Etcd(endpoints) => write!(f, "etcd://{}", endpoints.join(",")),
        }
    }
}

impl Serialize for StoreSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StoreSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("uplink {0:?} is listed twice")]
    DuplicateUplink(String),
    #[error("uplink name {0:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or whitespace)")]
    BadUplinkName(String),
    #[error("host name {0:?} is not valid (letters, digits, '_', '.', '-')")]
    BadHostName(String),
    #[error("pin path {0} must be absolute")]
    RelativePinPath(PathBuf),
    #[error("conntrack {name} = {secs}: a timeout is 1 s to 30 days")]
    BadTimeout { name: &'static str, secs: u64 },
    #[error("conntrack max-entries = {0}: from 64 to 16777216")]
    BadConntrackSize(u32),
    #[error("{name} = {value}: from {} to {}", range.start(), range.end())]
    BadMapSize {
        name: &'static str,
        value: u32,
        range: std::ops::RangeInclusive<u32>,
    },
    #[error("dns upstream: {0}")]
    BadDnsUpstream(String),
}

/// Every setting of `netd run`, as its flags and as the keys of its TOML
/// config file (the same names, kebab-case; `--uplink` is repeated where
/// the file has `uplinks = [...]`). Every one is optional: flags win over
/// the file ([`Settings::over`]), and [`RunConfig::resolve`] fills in the
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Interface to the underlay that gets netd's uplink program (repeatable).
    /// None: netd serves this host only.
    #[arg(long = "uplink", value_name = "IFACE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uplinks: Vec<String>,
    /// The uplinks' hook: `auto` (XDP on a NIC, TC on a veth or a device
    /// without native XDP), `xdp` or `tc` [default: auto].
    #[arg(long, value_name = "MODE")]
    pub uplink_mode: Option<crate::dataplane::uplink::UplinkMode>,
    /// bpffs directory for netd's pinned maps, programs and links [default: /sys/fs/bpf/netd].
    #[arg(long, value_name = "DIR")]
    pub pin_path: Option<PathBuf>,
    /// Where to serve Prometheus metrics [default: 127.0.0.1:9964].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Directory of the embedded store [default: /var/lib/netd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The control API's socket (on the command line: the global --socket).
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// Serve the Docker network and IPAM plugin [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub docker_plugin: Option<bool>,
    /// Socket of the Docker plugin [default: /run/docker/plugins/netd.sock].
    #[arg(long, value_name = "PATH")]
    pub docker_plugin_socket: Option<PathBuf>,
    /// dockerd's API socket, where the plugin reads containers' names and
    /// labels [default: /var/run/docker.sock].
    #[arg(long, value_name = "PATH")]
    pub docker_api_socket: Option<PathBuf>,
    /// Serve DNS for netd's networks on each one's gateway address [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dns: Option<bool>,
    /// A resolver for the names netd does not have, IP or IP:PORT (repeatable)
    /// [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstreams: Vec<String>,
    /// Where the model lives: `embedded` (one host) or etcd://HOST:PORT[,HOST:PORT...]
    /// [default: embedded].
    #[arg(long, value_name = "URL")]
    pub store: Option<StoreSpec>,
    /// This host's name in the cluster [default: the kernel's host name].
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
    /// This host's address on the underlay [default: the first IPv4 of the first --uplink].
    #[arg(long, value_name = "IP")]
    pub underlay_ip: Option<std::net::Ipv4Addr>,
    /// An address of an uplink that published ports are taken on
    /// (repeatable) [default: every IPv4 address of every --uplink].
    #[arg(long = "publish-address", value_name = "IP")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish_addresses: Vec<std::net::Ipv4Addr>,
    /// A device masqueraded flows may leave by, whose replies netd takes
    /// there (repeatable), or `none` [default: the uplinks and the devices
    /// of the host's IPv4 default routes].
    #[arg(long = "egress-device", value_name = "IFACE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_devices: Vec<String>,
    /// The source ports masquerading hands out, MIN-MAX, outside the host's
    /// net.ipv4.ip_local_port_range [default: the larger stretch of
    /// 1024-65535 beside it].
    #[arg(long, value_name = "MIN-MAX")]
    pub masquerade_ports: Option<crate::dataplane::egress::PortRange>,
    /// A destination every network reaches with its endpoints' own
    /// addresses, unmasqueraded (repeatable CIDR).
    #[arg(long = "no-masquerade", value_name = "CIDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<ipnet::Ipv4Net>,
    /// Seconds this host stays registered in etcd after netd stops answering [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub host_lease_ttl: Option<u64>,
    /// Seconds other hosts keep forwarding to this host after its
    /// registration ends (its pinned datapath goes on without netd)
    /// [default: 300]. `netd host rm` removes a stopped host at once.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub host_grace: Option<u64>,
    /// `[conntrack]` in the file: idle timeouts in seconds
    /// (tcp-established, tcp-opening, tcp-closing, udp, udp-unreplied) and
    /// max-entries.
    #[arg(skip)]
    pub conntrack: Option<ConntrackConfig>,
    /// Flows conntrack holds before its LRU evicts the least recently used
    /// [default: 262144]; a change carries the flows over at start. (In
    /// the file: `[conntrack] max-entries`.)
    #[arg(long, value_name = "N")]
    #[serde(skip)]
    pub conntrack_max_entries: Option<u32>,
    /// Endpoints this host's maps hold, cluster-wide: its own and every
    /// overlay endpoint of the other hosts [default: 65536]. Set it alike
    /// on every host; a change carries the entries over at start.
    #[arg(long, value_name = "N")]
    pub max_endpoints: Option<u32>,
    /// Other hosts of the cluster this host's maps hold [default: 4096].
    /// Set it alike on every host; a change carries the entries over at
    /// start.
    #[arg(long, value_name = "N")]
    pub max_hosts: Option<u32>,
}

/// What `max-endpoints` accepts.
pub const MAX_ENDPOINTS: std::ops::RangeInclusive<u32> = 1024..=4_194_304;
/// What `max-hosts` accepts: a host's index is 16 bits in an endpoint's entry.
pub const MAX_HOSTS: std::ops::RangeInclusive<u32> = 16..=65_535;

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// These settings over `under`'s: each one given here wins.
    pub fn over(self, under: Settings) -> Settings {
        let max_entries = self.conntrack_max_entries;
        let (Ok(serde_json::Value::Object(mine)), Ok(serde_json::Value::Object(mut merged))) =
            (serde_json::to_value(&self), serde_json::to_value(&under))
        else {
            return self;
        };
        for (key, value) in mine {
            if !value.is_null() {
                merged.insert(key, value);
            }
        }
        let mut settings: Settings =
            serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or(self);
        settings.conntrack_max_entries = max_entries.or(under.conntrack_max_entries);
        settings
    }
}

/// The settings `netd run` works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Interfaces to the underlay that get netd's uplink program; none on a single host.
    pub uplinks: Vec<String>,
    /// Which hook each uplink gets.
    pub uplink_mode: crate::dataplane::uplink::UplinkMode,
    /// bpffs directory holding netd's pinned maps, programs and links.
    pub pin_path: PathBuf,
    pub metrics_addr: SocketAddr,
    /// Where the embedded store keeps its file.
    pub state_dir: PathBuf,
    /// The control API's unix socket.
    pub socket: PathBuf,
    /// Where the Docker plugin listens; None when it is turned off.
    pub docker_plugin_socket: Option<PathBuf>,
    /// dockerd's Engine API socket, where the plugin reads containers'
    /// names and labels.
    pub docker_api_socket: PathBuf,
    /// DNS on each network's gateway; None when it is turned off.
    pub dns: Option<DnsConfig>,
    pub store: StoreSpec,
    /// This host's name in the cluster (endpoints are published with it).
    pub host_name: String,
    /// This host's underlay address; None: the first IPv4 of the first uplink.
    pub underlay_ip: Option<std::net::Ipv4Addr>,
    /// The addresses published ports are taken on; empty: every IPv4
    /// address of every uplink.
    pub publish_addresses: Vec<std::net::Ipv4Addr>,
    /// Where masqueraded flows may leave.
    pub egress_devices: crate::dataplane::egress::EgressDevices,
    /// The ports masquerading hands out; None: beside the host's own.
    pub masquerade_ports: Option<crate::dataplane::egress::PortRange>,
    /// Destinations every network reaches unmasqueraded.
    pub no_masquerade: Vec<ipnet::Ipv4Net>,
    /// Seconds a host stays registered after its netd stops answering.
    pub host_lease_ttl: u64,
    /// Seconds the other hosts keep forwarding to a host whose registration
    /// ended: its pinned datapath still forwards while its netd is away.
    pub host_grace: u64,
    /// Conntrack idle timeouts.
    pub conntrack: ConntrackConfig,
    /// Endpoints this host's maps hold, cluster-wide.
    pub max_endpoints: u32,
    /// Other hosts this host's maps hold.
    pub max_hosts: u32,
}

/// netd's DNS server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Where names netd does not have are asked; empty: the host's
    /// resolv.conf, read at start.
    pub upstreams: Vec<SocketAddr>,
}

/// Five minutes: an upgrade or a restart of netd is far shorter.
pub const DEFAULT_HOST_GRACE: u64 = 300;

impl RunConfig {
    pub fn resolve(settings: Settings) -> Result<Self, ConfigError> {
        let s = settings;
        let default_metrics: SocketAddr = DEFAULT_METRICS_ADDR
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9964)));
        let config = RunConfig {
            uplinks: s.uplinks,
            uplink_mode: s.uplink_mode.unwrap_or_default(),
            pin_path: s
                .pin_path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_PATH)),
            metrics_addr: s.metrics_addr.unwrap_or(default_metrics),
            state_dir: s
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            socket: s.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            docker_plugin_socket: s.docker_plugin.unwrap_or(true).then(|| {
                s.docker_plugin_socket
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_PLUGIN_SOCKET))
            }),
            docker_api_socket: s.docker_api_socket.unwrap_or_else(|| {
                PathBuf::from(crate::plugin::docker_api::DEFAULT_DOCKER_API_SOCKET)
            }),
            dns: match s.dns.unwrap_or(true) {
                false => None,
                true => {
                    let upstreams = s
                        .dns_upstreams
                        .iter()
                        .map(|t| crate::dns::upstream::parse(t))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(ConfigError::BadDnsUpstream)?;
                    Some(DnsConfig { upstreams })
                }
            },
            store: s.store.unwrap_or_default(),
            host_name: s.host_name.unwrap_or_else(system_host_name),
            underlay_ip: s.underlay_ip,
            publish_addresses: s.publish_addresses,
            egress_devices: crate::dataplane::egress::EgressDevices::from_flags(&s.egress_devices),
            masquerade_ports: s.masquerade_ports,
            no_masquerade: s.no_masquerade.iter().map(|n| n.trunc()).collect(),
            host_lease_ttl: s.host_lease_ttl.unwrap_or(10),
            host_grace: s.host_grace.unwrap_or(DEFAULT_HOST_GRACE),
            conntrack: {
                let mut c = s.conntrack.unwrap_or_default();
                if let Some(n) = s.conntrack_max_entries {
                    c.max_entries = n;
                }
                c
            },
            max_endpoints: s
                .max_endpoints
                .unwrap_or(netd_common::tables::DEFAULT_MAX_ENDPOINTS),
            max_hosts: s
                .max_hosts
                .unwrap_or(netd_common::tables::DEFAULT_MAX_HOSTS),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, name) in self.uplinks.iter().enumerate() {
            if !valid_ifname(name) {
                return Err(ConfigError::BadUplinkName(name.clone()));
            }
            if self.uplinks[..i].contains(name) {
                return Err(ConfigError::DuplicateUplink(name.clone()));
            }
        }
        if let crate::dataplane::egress::EgressDevices::Named(names) = &self.egress_devices {
            for name in names {
                if !valid_ifname(name) {
                    return Err(ConfigError::BadUplinkName(name.clone()));
                }
            }
        }
        if !crate::model::valid_name(&self.host_name) {
            return Err(ConfigError::BadHostName(self.host_name.clone()));
        }
        if !self.pin_path.is_absolute() {
            return Err(ConfigError::RelativePinPath(self.pin_path.clone()));
        }
        let t = &self.conntrack;
        for (name, secs) in [
            ("tcp-established", t.tcp_established),
            ("tcp-opening", t.tcp_opening),
            ("tcp-closing", t.tcp_closing),
            ("udp", t.udp),
            ("udp-unreplied", t.udp_unreplied),
        ] {
            if !(1..=30 * 86_400).contains(&secs) {
                return Err(ConfigError::BadTimeout { name, secs });
            }
        }
        if !crate::dataplane::conntrack::MAX_ENTRIES.contains(&t.max_entries) {
            return Err(ConfigError::BadConntrackSize(t.max_entries));
        }
        for (name, value, range) in [
            ("max-endpoints", self.max_endpoints, MAX_ENDPOINTS),
            ("max-hosts", self.max_hosts, MAX_HOSTS),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::BadMapSize { name, value, range });
            }
        }
        Ok(())
    }
}

/// The kernel's host name (uname), or "localhost".
pub fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Linux's rules for interface names (dev_valid_name).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(Path::new("netd.toml"), text)
    }

    #[test]
    fn defaults_serve_a_single_host() {
        let c = RunConfig::resolve(Settings::default()).expect("valid");
        assert!(c.uplinks.is_empty());
        assert_eq!(c.pin_path, PathBuf::from("/sys/fs/bpf/netd"));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9964");
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = file(
            "uplinks = [\"eth1\"]\npin-path = \"/sys/fs/bpf/a\"\nmetrics-addr = \"127.0.0.1:1\"\n",
        )
        .expect("parses");
        let flags = Settings {
            uplinks: vec!["eth2".into()],
            pin_path: Some("/sys/fs/bpf/b".into()),
            ..Default::default()
        };
        let c = RunConfig::resolve(flags.over(f)).expect("valid");
        assert_eq!(c.uplinks, vec!["eth2".to_string()]);
        assert_eq!(c.pin_path, PathBuf::from("/sys/fs/bpf/b"));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:1");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_problem() {
        let e = file("uplink = [\"eth1\"]").expect_err("unknown key");
        assert!(e.to_string().contains("uplink"), "{e}");
        let e = file("metrics-addr = \"not an address\"").expect_err("bad addr");
        assert!(e.to_string().contains("netd.toml"), "{e}");
    }

    #[test]
    fn store_urls() {
        assert_eq!("embedded".parse::<StoreSpec>(), Ok(StoreSpec::Embedded));
        assert_eq!(
            "etcd://10.0.0.1:2379,etcd2:2379".parse::<StoreSpec>(),
            Ok(StoreSpec::Etcd(vec![
                "10.0.0.1:2379".into(),
                "etcd2:2379".into()
            ]))
        );
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "redis://x:1",
            "",
        ] {
            let e = bad.parse::<StoreSpec>().expect_err(bad);
            assert!(e.contains("etcd://HOST:PORT"), "{e}");
        }
        let f = file("store = \"etcd://127.0.0.1:2379\"").expect("parses");
        assert_eq!(
            f.store,
            Some(StoreSpec::Etcd(vec!["127.0.0.1:2379".into()]))
        );
    }

    #[test]
    fn bad_uplinks_and_relative_pin_paths_are_refused() {
        for (uplinks, pin) in [
            (vec!["eth0".to_string(), "eth0".to_string()], None),
            (vec!["a-name-much-too-long".to_string()], None),
            (vec!["eth/0".to_string()], None),
            (vec![], Some(PathBuf::from("relative/pins"))),
        ] {
            let r = RunConfig::resolve(Settings {
                uplinks: uplinks.clone(),
                pin_path: pin,
                ..Default::default()
            });
            assert!(r.is_err(), "{uplinks:?} accepted");
        }
    }

    #[test]
    fn the_clusters_map_sizes_default_merge_and_are_checked() {
        let c = RunConfig::resolve(Settings::default()).expect("valid");
        assert_eq!((c.max_endpoints, c.max_hosts), (65_536, 4096));
        let f = file("max-endpoints = 131072\nmax-hosts = 1000\n").expect("parses");
        let flags = Settings {
            max_hosts: Some(2000),
            ..Default::default()
        };
        let c = RunConfig::resolve(flags.over(f)).expect("valid");
        assert_eq!((c.max_endpoints, c.max_hosts), (131_072, 2000));
        for (text, message) in [
            (
                "max-endpoints = 100\n",
                "max-endpoints = 100: from 1024 to 4194304",
            ),
            ("max-hosts = 70000\n", "max-hosts = 70000: from 16 to 65535"),
        ] {
            let e = RunConfig::resolve(file(text).expect("parses")).expect_err(text);
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn a_flag_not_given_leaves_the_files_setting_and_conntrack_merges() {
        let f = file(
            "dns = false\nhost-grace = 60\ndns-upstreams = [\"10.0.0.53\"]\n\
             [conntrack]\nudp = 30\nmax-entries = 4096\n",
        )
        .expect("parses");
        let flags = Settings {
            host_grace: Some(5),
            conntrack_max_entries: Some(8192),
            ..Default::default()
        };
        let c = RunConfig::resolve(flags.over(f)).expect("valid");
        assert_eq!(c.dns, None);
        assert_eq!(c.host_grace, 5);
        assert_eq!(c.conntrack.udp, 30);
        assert_eq!(c.conntrack.max_entries, 8192);
        let f = file("[conntrack]\nmax-entries = 4096\n").expect("parses");
        let c = RunConfig::resolve(Settings::default().over(f)).expect("valid");
        assert_eq!(c.conntrack.max_entries, 4096);
    }
}
