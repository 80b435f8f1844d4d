//! Containers' labels and names, read from the Docker API after Join:
//! `docker run --label app=web` puts a container behind `netd service create
//! --selector app=web` (and under policies by label), and `docker rm` takes
//! it out. A netd without the Docker API still serves Docker's networks,
//! without labels, and says so once. One test: dockerd finds plugins at one
//! fixed path, so only one netd can serve it at a time.

use netd_tests::{
    cluster::eventually,
    docker::{Docker, IMAGE},
    fixture::TempPins,
    netns::NetNs,
    process::Netd,
};
use serde_json::Value;

const PLUGIN_FLAG: &str = "--docker-plugin-socket=/run/docker/plugins/netd.sock";
const API_FLAG: &str = "--docker-api-socket";
const NO_API: &str = "no Docker API";

fn run(docker: &Docker, name: &str, labels: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", "n1"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend([IMAGE, "sleep", "3600"]);
    docker.ok(&args);
}

/// netd's endpoint of container `name`, once it has one by that name.
fn endpoint_of(netd: &Netd, name: &str) -> Option<Value> {
    let list: Value = serde_json::from_str(&netd.ok(&["endpoint", "ls", "--json"])).ok()?;
    list.as_array()?
        .iter()
        .find(|e| e["container"] == name)
        .cloned()
}

fn backends(netd: &Netd) -> String {
    netd.ok(&["service", "ls"])
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn container_labels_from_docker_select_services_and_leave_with_the_container() {
    let _docker = netd_tests::docker::exclusive();
    let host = NetNs::host();
    let pins = TempPins::new();
    let docker = Docker::start();
    docker.import_busybox();
    let socket = docker.socket();
    let mut netd = Netd::start(
        &host,
        pins.layout.root(),
        netd_tests::free_port(),
        &[PLUGIN_FLAG, API_FLAG, socket.to_str().expect("path")],
    );
    netd.wait_ready(&host);
    docker.netd_network("n1", "10.76.0.0/24", &[]);
    let nets: Value = serde_json::from_str(&netd.ok(&["network", "ls", "--json"])).expect("json");
    let network = nets
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["subnet"] == "10.76.0.0/24")
        .and_then(|n| n["name"].as_str())
        .expect("n1 in netd")
        .to_string();
    netd.ok(&[
        "service",
        "create",
        "web",
        "--network",
        &network,
        "--selector",
        "app=web",
        "--port",
        "80:8080/tcp",
    ]);
    run(&docker, "w1", &["app=web", "odd=a,b"]);
    run(&docker, "w2", &["app=web"]);
    run(&docker, "db1", &["app=db"]);
    let took = eventually("both app=web containers are backends", || {
        backends(&netd).contains("2/2")
    });
    println!("labels applied in {took:?} after the last docker run");
    let w1 = endpoint_of(&netd, "w1").expect("w1's endpoint carries its name");
    assert_eq!(
        w1["labels"],
        serde_json::json!({"app": "web"}),
        "the label a selector can name, and only it"
    );
    eventually("db1's endpoint named", || {
        endpoint_of(&netd, "db1").is_some()
    });
    let db1 = endpoint_of(&netd, "db1").expect("db1's endpoint");
    assert_eq!(db1["labels"]["app"], "db");

    docker.ok(&["rm", "-f", "w2"]);
    eventually("w2 leaves the service with its container", || {
        backends(&netd).contains("1/1")
    });

    // Without the Docker API: containers still join, without labels, and
    // netd says so once.
    netd.stop();
    netd.set_flag(API_FLAG, "/nonexistent/docker.sock");
    netd.restart(&host);
    run(&docker, "w3", &["app=web"]);
    run(&docker, "w4", &["app=web"]);
    eventually("the missing API is logged", || netd.log().contains(NO_API));
    assert_eq!(netd.log().matches(NO_API).count(), 1, "{}", netd.log());
    assert!(
        backends(&netd).contains("1/1"),
        "w3 and w4 have no labels: {}",
        backends(&netd)
    );
    let ip = docker.ip("w3", "n1");
    assert!(ip.starts_with("10.76.0."), "w3 joined n1: {ip}");
    assert!(endpoint_of(&netd, "w1").is_some(), "w1's labels are kept");
    for c in ["w1", "db1", "w3", "w4"] {
        docker.ok(&["rm", "-f", c]);
    }
    docker.ok(&["network", "rm", "n1"]);
    netd.stop();
}
