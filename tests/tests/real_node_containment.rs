//! Containment of the real node: after the real-node suite ran, nothing ever left its network
//! namespace for an address outside it. tests/run.sh runs this right after `real_node_e2e`.
//!
//! The host counts every packet that comes out of the namespace: those addressed to the host's end of
//! the veth (the API server's, Redis's and the kubelet's answers to the tests) and all others, which it
//! drops. The first count must be large (the counters see the traffic), the second zero; the namespace
//! must have no default route, and none of its tracked connections may name an outside address.

use std::process::Command;

use qscaler_tests::cluster::workspace_root;
use qscaler_tests::real_node::{node_dir, NODE_HINT};

fn egress() -> Vec<(String, String)> {
    let out = Command::new(workspace_root().join("tests/node.sh"))
        .arg("egress")
        .env("QSCALER_NODE_DIR", node_dir())
        .output()
        .unwrap_or_else(|e| panic!("running tests/node.sh egress: {e}"));
    assert!(
        out.status.success(),
        "tests/node.sh egress failed ({}); {NODE_HINT}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn value<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
}

#[test]
#[ignore = "needs the real node after its suite: tests/run.sh runs it"]
fn nothing_left_the_node_namespace() {
    let report = egress();
    let to_host: u64 = value(&report, "to_host").parse().expect("to_host count");
    assert!(
        to_host > 1000,
        "the border counters saw little traffic from the namespace ({to_host} packets): are they counting? {report:?}"
    );
    assert_eq!(
        value(&report, "dropped_at_border"),
        "0",
        "packets left the namespace for an outside address: {report:?}"
    );
    assert_eq!(
        value(&report, "default_route"),
        "",
        "the namespace has a route out: {report:?}"
    );
    assert_eq!(
        value(&report, "far_destinations"),
        "",
        "connections to outside addresses: {report:?}"
    );
}
