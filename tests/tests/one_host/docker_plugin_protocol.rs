//! The Docker plugin protocol, call by call, against a real netd: what a
//! dockerd would send, including the malformed and the unknown.

use netd_tests::{
    fixture::TempPins,
    netns::NetNs,
    process::{post_unix, Netd},
    traffic::ping,
};
use serde_json::{json, Value};

struct Plugin {
    ns: NetNs,
    netd: Netd,
    socket: std::path::PathBuf,
    _pins: TempPins,
    _dir: tempfile::TempDir,
}

fn plugin() -> Plugin {
    let ns = NetNs::new("ndP");
    let pins = TempPins::new();
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("netd.sock");
    let flag = format!("--docker-plugin-socket={}", socket.display());
    let port = netd_tests::free_port();
    let mut netd = Netd::start(&ns, pins.layout.root(), port, &[&flag]);
    netd.wait_ready(&ns);
    Plugin {
        ns,
        netd,
        socket,
        _pins: pins,
        _dir: dir,
    }
}

impl Plugin {
    fn call(&self, method: &str, body: Value) -> (u16, Value) {
        self.raw(method, &body.to_string())
    }

    fn raw(&self, method: &str, body: &str) -> (u16, Value) {
        let (status, text) = post_unix(&self.socket, &format!("/{method}"), body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn ok(&self, method: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, body);
        assert_eq!(status, 200, "{method}: {answer}");
        assert!(answer.get("Err").is_none(), "{method}: {answer}");
        answer
    }

    fn err(&self, method: &str, body: Value) -> String {
        let (status, answer) = self.call(method, body);
        assert_ne!(status, 200, "{method} accepted: {answer}");
        answer["Err"]
            .as_str()
            .unwrap_or_else(|| panic!("{method}: no Err in {answer}"))
            .to_string()
    }

    fn model(&self) -> (String, String) {
        (
            self.netd.ok(&["network", "ls", "--json"]),
            self.netd.ok(&["endpoint", "ls", "--json"]),
        )
    }
}

const NET: &str = "4b1e5c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01234";
const EP1: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";
const EP2: &str = "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2";

#[test]
fn activate_capabilities_and_unknown_methods() {
    let p = plugin();
    assert_eq!(
        p.ok("Plugin.Activate", json!({})),
        json!({ "Implements": ["NetworkDriver", "IpamDriver"] })
    );
    assert_eq!(
        p.ok("NetworkDriver.GetCapabilities", json!({}))["Scope"],
        "local"
    );
    assert_eq!(
        p.ok("IpamDriver.GetCapabilities", json!({}))["RequiresMACAddress"],
        false
    );
    let spaces = p.ok("IpamDriver.GetDefaultAddressSpaces", json!({}));
    assert!(
        spaces["LocalDefaultAddressSpace"].is_string()
            && spaces["GlobalDefaultAddressSpace"].is_string()
    );
    for unknown in [
        "NetworkDriver.Frobnicate",
        "IpamDriver.Nope",
        "Something.Else",
    ] {
        assert_eq!(p.call(unknown, json!({})).0, 404, "{unknown}");
    }
    for method in [
        "AllocateNetwork",
        "FreeNetwork",
        "DiscoverNew",
        "DiscoverDelete",
        "ProgramExternalConnectivity",
        "RevokeExternalConnectivity",
    ] {
        p.ok(
            &format!("NetworkDriver.{method}"),
            json!({ "NetworkID": NET, "EndpointID": EP1 }),
        );
    }
}

#[test]
fn ipam_pools_and_addresses() {
    let p = plugin();
    let pool = p.ok("IpamDriver.RequestPool", json!({ "AddressSpace": "netd-local", "Pool": "10.61.0.0/24", "SubPool": "10.61.0.128/25", "V6": false }));
    let id = pool["PoolID"].as_str().expect("PoolID").to_string();
    assert_eq!(pool["Pool"], "10.61.0.0/24");
    // Requested again (a second Docker network on it, as another host's
    // would be): the same pool, held until both are released.
    assert_eq!(
        p.ok(
            "IpamDriver.RequestPool",
            json!({ "Pool": "10.61.0.0/24", "SubPool": "10.61.0.128/25" })
        )["PoolID"],
        id
    );

    let gw = p.ok("IpamDriver.RequestAddress", json!({ "PoolID": id, "Address": "", "Options": { "RequestAddressType": "com.docker.network.gateway" } }));
    assert_eq!(gw["Address"], "10.61.0.1/24");
    let a = p.ok(
        "IpamDriver.RequestAddress",
        json!({ "PoolID": id, "Address": "" }),
    );
    let b = p.ok(
        "IpamDriver.RequestAddress",
        json!({ "PoolID": id, "Address": "" }),
    );
    assert_eq!(
        (a["Address"].as_str(), b["Address"].as_str()),
        (Some("10.61.0.129/24"), Some("10.61.0.130/24"))
    );
    let fixed = p.ok(
        "IpamDriver.RequestAddress",
        json!({ "PoolID": id, "Address": "10.61.0.7" }),
    );
    assert_eq!(fixed["Address"], "10.61.0.7/24");

    let refusals = [
        (
            "IpamDriver.RequestAddress",
            json!({ "PoolID": id, "Address": "10.61.0.7" }),
            "already in use",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({ "PoolID": id, "Address": "10.99.0.7" }),
            "outside the subnet",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({ "PoolID": "netd-nope", "Address": "" }),
            "no address pool",
        ),
        (
            "IpamDriver.RequestPool",
            json!({ "Pool": "10.61.0.0/16" }),
            "overlaps pool 10.61.0.0/24",
        ),
        (
            "IpamDriver.RequestPool",
            json!({ "Pool": "" }),
            "needs a subnet",
        ),
        (
            "IpamDriver.RequestPool",
            json!({ "Pool": "10.62.0.5/24" }),
            "host bits set",
        ),
        (
            "IpamDriver.RequestPool",
            json!({ "Pool": "10.62.0.0/24", "SubPool": "10.63.0.0/25" }),
            "not inside the subnet",
        ),
        (
            "IpamDriver.RequestPool",
            json!({ "Pool": "10.62.0.0/24", "V6": true }),
            "IPv6",
        ),
    ];
    for (method, body, expected) in refusals {
        let e = p.err(method, body.clone());
        assert!(
            e.starts_with("netd: ") && e.contains(expected),
            "{method} {body}: {e}"
        );
    }

    p.ok(
        "IpamDriver.ReleaseAddress",
        json!({ "PoolID": id, "Address": "10.61.0.7/24" }),
    );
    assert_eq!(
        p.ok(
            "IpamDriver.RequestAddress",
            json!({ "PoolID": id, "Address": "10.61.0.7" })
        )["Address"],
        "10.61.0.7/24"
    );
    p.ok("IpamDriver.ReleasePool", json!({ "PoolID": id }));
    assert_eq!(
        p.ok(
            "IpamDriver.RequestAddress",
            json!({ "PoolID": id, "Address": "" })
        )["Address"],
        "10.61.0.131/24",
        "held by the second request"
    );
    p.ok("IpamDriver.ReleasePool", json!({ "PoolID": id }));
    assert!(p
        .err(
            "IpamDriver.RequestAddress",
            json!({ "PoolID": id, "Address": "" })
        )
        .contains("no address pool"));
}

#[test]
fn network_and_endpoint_lifecycle_forwards_like_docker_would() {
    let p = plugin();
    let pool = p.ok("IpamDriver.RequestPool", json!({ "Pool": "10.64.0.0/24" }));
    let create = json!({
        "NetworkID": NET,
        "Options": { "com.docker.network.generic": { "team": "blue" } },
        "IPv4Data": [{ "AddressSpace": "netd-local", "Pool": "10.64.0.0/24", "Gateway": "10.64.0.1/24" }],
        "IPv6Data": []
    });
    p.ok("NetworkDriver.CreateNetwork", create.clone());
    let nets: Value = serde_json::from_str(&p.netd.ok(&["network", "ls", "--json"])).expect("json");
    assert_eq!(nets[0]["name"], format!("docker-{}", &NET[..12]));
    assert_eq!(nets[0]["labels"]["team"], "blue");
    let _ = pool;

    // Two "containers": sandboxes the test made, wired the way dockerd would.
    let sandboxes = [NetNs::new("ndPc"), NetNs::new("ndPc")];
    let mut ips = Vec::new();
    for (ep, (sandbox, ip)) in [EP1, EP2]
        .iter()
        .zip(sandboxes.iter().zip(["10.64.0.2", "10.64.0.3"]))
    {
        let answer = p.ok(
            "NetworkDriver.CreateEndpoint",
            json!({ "NetworkID": NET, "EndpointID": ep, "Interface": { "Address": format!("{ip}/24"), "MacAddress": "" }, "Options": {} }),
        );
        let mac = answer["Interface"]["MacAddress"]
            .as_str()
            .expect("mac returned")
            .to_string();
        assert!(
            answer["Interface"].get("Address").is_none(),
            "returned an address Docker gave: {answer}"
        );
        let join = p.ok("NetworkDriver.Join", json!({ "NetworkID": NET, "EndpointID": ep, "SandboxKey": sandbox.path(), "Options": {} }));
        assert_eq!(join["Gateway"], "10.64.0.1");
        assert_eq!(join["InterfaceName"]["DstPrefix"], "eth");
        let src = join["InterfaceName"]["SrcName"]
            .as_str()
            .expect("SrcName")
            .to_string();
        // What dockerd does with SrcName: into the sandbox, renamed, MAC, address, up.
        p.ns.ip(&["link", "set", &src, "netns", &sandbox.name]);
        sandbox.ip(&["link", "set", &src, "name", "eth0"]);
        sandbox.ip(&["link", "set", "eth0", "address", &mac]);
        sandbox.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        sandbox.ip(&["link", "set", "eth0", "up"]);
        sandbox.ip(&["route", "add", "default", "via", "10.64.0.1"]);
        let info = p.ok(
            "NetworkDriver.EndpointOperInfo",
            json!({ "NetworkID": NET, "EndpointID": ep }),
        );
        assert_eq!(info["Value"]["ipv4"], ip);
        ips.push(ip);
    }
    assert!(ping(&sandboxes[0], ips[1], 2), "joined endpoints talk");

    // Bad requests change nothing.
    let before = p.model();
    let bad = [
        ("NetworkDriver.CreateNetwork", "{ not json".to_string(), "bad request body"),
        ("NetworkDriver.CreateNetwork", json!({ "IPv4Data": [] }).to_string(), "bad request body"),
        ("NetworkDriver.CreateNetwork", json!({ "NetworkID": "abc", "IPv4Data": [{ "Pool": "10.65.0.0/24" }] }).to_string(), "not a Docker network id"),
        ("NetworkDriver.CreateNetwork", json!({ "NetworkID": "aa".repeat(32), "IPv4Data": [{ "Pool": "10.64.0.0/16" }] }).to_string(), "overlaps"),
        ("NetworkDriver.CreateNetwork", json!({ "NetworkID": "ab".repeat(32), "IPv4Data": [] }).to_string(), "exactly one IPv4 subnet"),
        ("NetworkDriver.DeleteNetwork", json!({ "NetworkID": NET }).to_string(), "still has endpoints"),
        ("NetworkDriver.CreateEndpoint", json!({ "NetworkID": NET, "EndpointID": "ef".repeat(32), "Interface": { "Address": "10.64.0.2/24" } }).to_string(), "already in use"),
        ("NetworkDriver.CreateEndpoint", json!({ "NetworkID": "cd".repeat(32), "EndpointID": "ef".repeat(32) }).to_string(), "no network named"),
        ("NetworkDriver.CreateEndpoint", json!({ "NetworkID": NET, "EndpointID": "ef".repeat(32), "Interface": { "MacAddress": "zz" } }).to_string(), "not a MAC address"),
        ("NetworkDriver.Join", json!({ "NetworkID": NET, "EndpointID": "ef".repeat(32), "SandboxKey": "/x" }).to_string(), "no endpoint named"),
        ("NetworkDriver.Join", json!({ "NetworkID": NET, "EndpointID": EP1 }).to_string(), "bad request body"),
    ];
    for (method, body, expected) in bad {
        let (status, answer) = p.raw(method, &body);
        assert_eq!(status, 400, "{method} {body}: {answer}");
        let e = answer["Err"].as_str().unwrap_or_default();
        assert!(
            e.contains(expected),
            "{method} {body}: {e:?} lacks {expected:?}"
        );
    }
    assert_eq!(p.model(), before, "a bad request changed the model");
    // A network netd does not have is gone already: Docker may remove it
    // (a replayed delete, or a store that lost it).
    p.ok(
        "NetworkDriver.DeleteNetwork",
        json!({ "NetworkID": "cd".repeat(32) }),
    );
    assert_eq!(p.model(), before);

    // `docker run -p 28080:80 -p 28053:53/udp`: a service named after the
    // endpoint publishes them with mode=host, and replays change nothing.
    let services = || p.netd.ok(&["service", "ls", "--json"]);
    let port_map = json!([
        { "Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 28080, "HostPortEnd": 28080 },
        { "Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 28053, "HostPortEnd": 28053 }
    ]);
    let program = json!({ "NetworkID": NET, "EndpointID": EP1,
        "Options": { "com.docker.network.portmap": port_map, "com.docker.network.endpoint.exposedports": [] } });
    p.ok("NetworkDriver.ProgramExternalConnectivity", program.clone());
    let published = services();
    let list: Value = serde_json::from_str(&published).expect("json");
    let service = &list.as_array().expect("list")[0];
    assert_eq!(
        service["name"],
        format!("docker-{}", &EP1[..12]),
        "{published}"
    );
    assert_eq!(service["vip"], Value::Null, "{published}");
    assert_eq!(
        service["endpoints"],
        json!([format!("docker-{}", &EP1[..12])])
    );
    let ports: Vec<(u64, u64, String, String)> = service["published"]
        .as_array()
        .expect("published")
        .iter()
        .map(|p| {
            (
                p["published"].as_u64().unwrap_or(0),
                p["target-port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_string(),
                p["mode"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (28080, 80, "tcp".into(), "host".into()),
            (28053, 53, "udp".into(), "host".into())
        ]
    );
    p.ok("NetworkDriver.ProgramExternalConnectivity", program);
    assert_eq!(services(), published, "a replay changed the publication");
    // What netd cannot publish is refused with the fix, and nothing changes.
    for (map, expected) in [
        (
            json!([{ "Proto": 6, "Port": 80, "HostPort": 0 }]),
            "fixed host ports only",
        ),
        (
            json!([{ "Proto": 6, "Port": 80, "HostIP": "127.0.0.1", "HostPort": 28081 }]),
            "leave the address out",
        ),
        (json!({ "Proto": 6 }), "com.docker.network.portmap"),
    ] {
        let e = p.err(
            "NetworkDriver.ProgramExternalConnectivity",
            json!({ "NetworkID": NET, "EndpointID": EP2, "Options": { "com.docker.network.portmap": map } }),
        );
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
    }
    // Another container cannot take a host port that is taken.
    let e = p.err(
        "NetworkDriver.ProgramExternalConnectivity",
        json!({ "NetworkID": NET, "EndpointID": EP2, "Options": { "com.docker.network.portmap":
            [{ "Proto": 6, "Port": 8080, "HostPort": 28080, "HostPortEnd": 28080 }] } }),
    );
    assert!(e.contains("28080/tcp is published by service"), "{e}");
    assert_eq!(
        services(),
        published,
        "a refused request changed the services"
    );
    p.ok(
        "NetworkDriver.RevokeExternalConnectivity",
        json!({ "NetworkID": NET, "EndpointID": EP1 }),
    );
    assert_eq!(services().trim(), "[]", "revoked ports stayed published");

    // Leave takes the veth away; delete and delete again (Docker retries).
    for ep in [EP1, EP2] {
        p.ok(
            "NetworkDriver.Leave",
            json!({ "NetworkID": NET, "EndpointID": ep }),
        );
        p.ok(
            "NetworkDriver.DeleteEndpoint",
            json!({ "NetworkID": NET, "EndpointID": ep }),
        );
        p.ok(
            "NetworkDriver.DeleteEndpoint",
            json!({ "NetworkID": NET, "EndpointID": ep }),
        );
    }
    p.ok("NetworkDriver.DeleteNetwork", json!({ "NetworkID": NET }));
    assert_eq!(p.model(), ("[]\n".to_string(), "[]\n".to_string()));
    let links = p.ns.ip(&["-o", "link"]);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("ndh"),
        "veths left behind"
    );
}
