//! Why the API server refuses a worker pod, in the QWorker's own terms (pure).
//!
//! The operator checks each new generation of a QWorker with a server-side dry-run create of one
//! pod. A refusal is a spec problem (`SpecValid=False`) only when the API server says the pod
//! itself is wrong: 422 Invalid (a field fails validation: a container named `Bad_Name`) or 400
//! BadRequest (the pod cannot even be decoded: `cpu: lots`). Anything else (403 quota or RBAC,
//! 409, 5xx, no answer) says nothing about the spec and is retried as before.
//!
//! The API server's texts are long and in its own terms (`Pod "w-1a2b-" is invalid:
//! spec.containers[0].name: ...`, or a Go decoder's `v1.Pod.Spec: v1.PodSpec.Containers: ...`);
//! [`explain`] turns them into field paths of the QWorker (`spec.podSpec.containers[0].name`).

/// Whether an API error `code` means "this pod can never be created as it is".
pub fn is_spec_rejection(code: u16) -> bool {
    matches!(code, 400 | 422)
}

/// A readable message for the API server's refusal (`code`, `message`) of a worker pod.
pub fn explain(code: u16, message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = after(message, " cannot be handled as a Pod: ") {
        return format!(
            "the API server cannot read the pod built from it: {}",
            decode_error(rest)
        );
    }
    if let Some(rest) = after(message, " is invalid: ") {
        let rest = rest
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(rest);
        return format!(
            "the API server refuses the pod built from it: {}",
            to_qworker_paths(rest)
        );
    }
    format!(
        "the API server refuses the pod built from it ({code}): {}",
        to_qworker_paths(message)
    )
}

fn after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    s.find(marker).map(|i| &s[i + marker.len()..])
}

/// Pod field paths (`spec.x`, `metadata.labels`) as the QWorker fields they come from.
fn to_qworker_paths(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while !rest.is_empty() {
        let at_word_start = out
            .chars()
            .last()
            .is_none_or(|c| c == ' ' || c == '[' || c == ',');
        if at_word_start {
            if let Some(r) = rest.strip_prefix("spec.") {
                out.push_str("spec.podSpec.");
                rest = r;
                continue;
            }
            for (pod, qw) in [
                ("metadata.labels", "spec.podMetadata.labels"),
                ("metadata.annotations", "spec.podMetadata.annotations"),
            ] {
                if let Some(r) = rest.strip_prefix(pod) {
                    out.push_str(qw);
                    rest = r;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// A Go JSON decoder's error (`v1.Pod.Spec: v1.PodSpec.TerminationGracePeriodSeconds:
/// RestartPolicy: Containers: []v1.Container: v1.Container.Resources:
/// v1.ResourceRequirements.Requests: unmarshalerDecoder: quantities must match ..., error found
/// in #10 byte of ...|pu":"lots"}}}],"rest|..., bigger context ...|...|`) as
/// `<field path>: <why> (got <value>)`. In the decoder's trail, `v1.Type.Field` is a child of the
/// path so far and a bare `Field` a sibling of its last element (a field decoded before it).
fn decode_error(s: &str) -> String {
    let mut path: Vec<String> = vec![];
    let mut rest = s;
    while let Some((segment, tail)) = rest.split_once(": ") {
        let segment = segment.trim();
        if let Some(field) = go_field(segment) {
            // The pod's own top level (`v1.Pod.Spec`) is the QWorker's podSpec.
            if path.is_empty() && segment.starts_with("v1.Pod.") && field == "spec" {
                path.push("spec.podSpec".into());
            } else {
                path.push(field);
            }
            rest = tail;
        } else if let Some(field) = bare_field(segment) {
            if path.len() > 1 {
                path.pop();
            }
            path.push(field);
            rest = tail;
        } else if segment.starts_with("[]") || segment == "unmarshalerDecoder" {
            rest = tail;
        } else {
            break;
        }
    }
    let (why, tail) = match rest.split_once(", error found in #") {
        Some((why, tail)) => (why, Some(tail)),
        None => (rest, None),
    };
    let why = why.trim();
    let got = tail.and_then(offending_pair);
    if let Some((key, _)) = &got {
        // A map (requests, limits, labels...): the key is the field.
        if path.last().is_some_and(|l| {
            matches!(
                l.as_str(),
                "requests" | "limits" | "labels" | "annotations" | "nodeSelector"
            )
        }) {
            path.push(key.clone());
        }
    }
    let mut out = if path.is_empty() {
        why.to_string()
    } else {
        format!("{}: {why}", path.join("."))
    };
    match (got, tail.and_then(|t| snippet(t, 0))) {
        (Some((_, value)), _) => out.push_str(&format!(" (got \"{value}\")")),
        (None, Some(near)) => out.push_str(&format!(" (at {near})")),
        (None, None) => {}
    }
    out
}

/// `v1.Container.Resources` → `resources`; `None` for anything not of that shape.
fn go_field(segment: &str) -> Option<String> {
    let mut parts = segment.split('.');
    let (version, type_, field) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !version.starts_with('v')
        || !type_.chars().next()?.is_ascii_uppercase()
    {
        return None;
    }
    bare_field(field)
}

/// `RestartPolicy` → `restartPolicy`; `None` unless one capitalised word of letters and digits.
fn bare_field(segment: &str) -> Option<String> {
    let mut c = segment.chars();
    let first = c.next()?;
    if !first.is_ascii_uppercase() || !segment.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(
        std::iter::once(first.to_ascii_lowercase())
            .chain(c)
            .collect(),
    )
}

/// The `n`th (0: first) text the decoder quotes: between `...|` and `|...`.
fn snippet(tail: &str, n: usize) -> Option<String> {
    let mut rest = tail;
    for i in 0..=n {
        let start = rest.find("...|")? + 4;
        let len = rest[start..].find("|...")?;
        if i == n {
            let s = rest[start..start + len].trim();
            return (!s.is_empty()).then(|| s.to_string());
        }
        rest = &rest[start + len + 4..];
    }
    None
}

/// The `"key":"value"` pair the decoder stopped at: the error's byte offset into its short
/// quote, found in the longer one, and the last string pair before it.
fn offending_pair(tail: &str) -> Option<(String, String)> {
    let offset: usize = tail.split(' ').next()?.parse().ok()?;
    let short = snippet(tail, 0)?;
    let long = snippet(tail, 1).unwrap_or_else(|| short.clone());
    let at = long.find(&short)? + offset.min(short.len());
    let before = long.get(..at)?;
    let sep = before.rfind("\":\"")?;
    let value = before[sep + 3..].strip_suffix('"')?;
    let key_end = sep;
    let key_start = before[..key_end].rfind('"')? + 1;
    let key = &before[key_start..key_end];
    (!key.is_empty() && !value.contains('"')).then(|| (key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_and_bad_request_are_spec_problems() {
        for code in [400, 422] {
            assert!(is_spec_rejection(code), "{code}");
        }
        for code in [401, 403, 404, 409, 429, 500, 503] {
            assert!(!is_spec_rejection(code), "{code}");
        }
    }

    #[test]
    fn a_validation_error_names_the_qworker_fields() {
        let raw = r#"Pod "w-0a1b2c3d4e-" is invalid: spec.containers[0].name: Invalid value: "Bad_Name": a DNS-1123 label must consist of lower case alphanumeric characters or '-'"#;
        assert_eq!(
            explain(422, raw),
            "the API server refuses the pod built from it: spec.podSpec.containers[0].name: \
             Invalid value: \"Bad_Name\": a DNS-1123 label must consist of lower case \
             alphanumeric characters or '-'"
        );
        let several = r#"Pod "w-" is invalid: [spec.containers[0].name: Invalid value: "A": bad, metadata.labels: Invalid value: "x y": bad]"#;
        assert_eq!(
            explain(422, several),
            "the API server refuses the pod built from it: spec.podSpec.containers[0].name: \
             Invalid value: \"A\": bad, spec.podMetadata.labels: Invalid value: \"x y\": bad"
        );
    }

    #[test]
    fn a_decode_error_becomes_a_path_a_reason_and_the_value() {
        // As kube-apiserver 1.20 says it.
        let raw = r#"Pod in version "v1" cannot be handled as a Pod: v1.Pod.Spec: v1.PodSpec.TerminationGracePeriodSeconds: RestartPolicy: Containers: []v1.Container: v1.Container.Resources: v1.ResourceRequirements.Requests: unmarshalerDecoder: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', error found in #10 byte of ...|pu":"lots"}}}],"rest|..., bigger context ...|me":"worker","resources":{"requests":{"cpu":"lots"}}}],"restartPolicy":"Never","terminationGracePeri|..."#;
        assert_eq!(
            explain(400, raw),
            "the API server cannot read the pod built from it: \
             spec.podSpec.containers.resources.requests.cpu: quantities must match the regular \
             expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got \"lots\")"
        );
        // No whole pair before the offset: the quoted text.
        let raw = r#"Pod in version "v1" cannot be handled as a Pod: v1.Pod.Spec: v1.PodSpec.Priority: readUint32: unexpected character: \ufffd, error found in #10 byte of ...|ority":"high"}|..., bigger context ...|{"priority":"high"}|..."#;
        assert_eq!(
            explain(400, raw),
            "the API server cannot read the pod built from it: spec.podSpec.priority: \
             readUint32: unexpected character: \\ufffd (at ority\":\"high\"})"
        );
    }

    #[test]
    fn anything_else_is_kept_with_its_code() {
        assert_eq!(
            explain(400, "the server rejected our request"),
            "the API server refuses the pod built from it (400): the server rejected our request"
        );
        // A decode error of an unknown shape keeps its text.
        assert_eq!(
            explain(
                400,
                "Pod in version \"v1\" cannot be handled as a Pod: json: bad"
            ),
            "the API server cannot read the pod built from it: json: bad"
        );
    }

    #[test]
    fn go_fields_and_snippets() {
        assert_eq!(
            go_field("v1.PodSpec.Containers").as_deref(),
            Some("containers")
        );
        assert_eq!(go_field("[]v1.Container"), None);
        assert_eq!(go_field("quantities must match"), None);
        assert_eq!(
            bare_field("RestartPolicy").as_deref(),
            Some("restartPolicy")
        );
        assert_eq!(bare_field("[]v1.Container"), None);
        let tail = "10 byte of ...|abc|..., bigger context ...|xabcx|...";
        assert_eq!(snippet(tail, 0).as_deref(), Some("abc"));
        assert_eq!(snippet(tail, 1).as_deref(), Some("xabcx"));
        assert_eq!(snippet("no marker", 0), None);
    }
}
