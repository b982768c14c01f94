//! The krew manifest template: once its placeholders are filled in, it is a krew Plugin for this binary.

use serde_json::Value;

#[test]
fn the_filled_in_template_is_a_krew_plugin_for_this_binary() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/krew/qworker.yaml");
    let template = std::fs::read_to_string(path).expect("read the krew template");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let mut text = template
        .replace("{{VERSION}}", &version)
        .replace("{{HOMEPAGE}}", "https://example.com/qscaler")
        .replace("{{RELEASE_URL}}", "https://example.com/releases");
    for platform in ["LINUX_AMD64", "LINUX_ARM64", "DARWIN_AMD64", "DARWIN_ARM64"] {
        text = text.replace(&format!("{{{{SHA256_{platform}}}}}"), &"0".repeat(64));
    }
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !body.contains("{{"),
        "a placeholder the test does not know:\n{body}"
    );
    let plugin: Value = serde_saphyr::from_str(&body).expect("valid YAML");
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(
        plugin["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin["metadata"]["name"], "qworker");
    assert_eq!(plugin["spec"]["version"].as_str(), Some(version.as_str()));
    let platforms = plugin["spec"]["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 4);
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-qworker");
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64));
        assert!(p["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://example.com/releases/kubectl-qworker-v")));
        let extracted: Vec<&str> = p["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter(|f| f["to"] == ".")
            .filter_map(|f| f["from"].as_str())
            .collect();
        for file in ["kubectl-qworker", "kubectl_complete-qworker", "LICENSE"] {
            assert!(
                extracted.contains(&file),
                "{file} is not extracted: {extracted:?}"
            );
        }
    }
    // krew links only `bin`: the caveats say where the completion helper is, for this version.
    let caveats = plugin["spec"]["caveats"].as_str().expect("caveats");
    assert!(
        caveats.contains(&format!(
            "/store/qworker/{version}/kubectl_complete-qworker"
        )),
        "{caveats}"
    );
}

/// The binaries the archive must hold are this package's: cargo builds both for its tests.
#[test]
fn the_binaries_krew_extracts_are_built_by_this_package() {
    for bin in [
        env!("CARGO_BIN_EXE_kubectl-qworker"),
        env!("CARGO_BIN_EXE_kubectl_complete-qworker"),
    ] {
        assert!(std::path::Path::new(bin).is_file(), "{bin}");
    }
}

/// krew refuses a plugin without a license file; the one the manifest extracts is the workspace's.
#[test]
fn the_license_krew_extracts_is_the_apache_2_0_text_cargo_names() {
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../LICENSE");
    let text = std::fs::read_to_string(path).expect("read LICENSE at the workspace root");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words[..4], ["Apache", "License", "Version", "2.0,"]);
    for clause in [
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "2. Grant of Copyright License.",
        "3. Grant of Patent License.",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
    ] {
        assert!(text.contains(clause), "LICENSE lacks {clause:?}");
    }
}
