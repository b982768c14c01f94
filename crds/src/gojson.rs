//! JSON written byte for byte as the Kubernetes API server (Go's `encoding/json`) re-encodes it.
//!
//! Why: the API server stores a `RawExtension` (a ControllerRevision's `data`) as the very bytes it
//! was sent. A later patch of the object (the garbage collector removing an owner reference, a
//! merge patch of `revision`) decodes the object and encodes it again with Go's `encoding/json`:
//! object keys sorted, no whitespace, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`,
//! `\u003e`, `\u0026`, `\u2028`, `\u2029`. If the stored bytes differ (`sleep 1 >/dev/null` written
//! with a plain `>`), the API server sees `data` changed and refuses the patch (`field is
//! immutable`): an orphaning delete hangs on its finalizer, an undo cannot renumber the revision.
//! Bytes written in Go's own form re-encode to themselves, so such a patch is a no-op on `data`.
//!
//! One difference between Go versions: before Go 1.22, `\b` and `\f` are written `\u0008` and
//! `\u000c`; from 1.22 on, `\b` and `\f` ([`GoStyle`], from the API server's `/version`).

use serde_json::Value;

/// Which Go's `encoding/json` to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GoStyle {
    /// Go 1.22 and later: `\b` and `\f` have short escapes.
    #[default]
    Modern,
    /// Before Go 1.22: every control character but `\n`, `\r` and `\t` is `\u00XX`.
    Before122,
}

impl GoStyle {
    /// From a Go version as the API server reports it (`goVersion: go1.19.8`); unknown: modern.
    pub fn from_go_version(v: &str) -> GoStyle {
        let mut parts = v
            .trim()
            .trim_start_matches("go")
            .split(['.', 'r', 'b', '-']);
        let major: Option<u32> = parts.next().and_then(|p| p.parse().ok());
        let minor: Option<u32> = parts.next().and_then(|p| p.parse().ok());
        match (major, minor) {
            (Some(1), Some(m)) if m < 22 => GoStyle::Before122,
            _ => GoStyle::Modern,
        }
    }
}

/// `value` as Go writes it (see the module doc).
pub fn to_string(value: &Value, style: GoStyle) -> String {
    let mut out = String::new();
    write(value, style, &mut out);
    out
}

fn write(value: &Value, style: GoStyle, out: &mut String) {
    write_sorted(
        value,
        Members::KeepNull,
        &|s, out| write_str(s, style, out),
        out,
    );
}

/// Whether object members whose value is null are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Members {
    KeepNull,
    DropNull,
}

/// Compact JSON with object keys sorted by their bytes (as Go sorts map keys), strings (keys and
/// values) written by `string`: the one walk behind Go's re-encoding here and the pod-spec hash's
/// canonical form ([`crate::hash::canonical_json`]).
pub(crate) fn write_sorted(
    value: &Value,
    members: Members,
    string: &dyn Fn(&str, &mut String),
    out: &mut String,
) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(_, v)| members == Members::KeepNull || !v.is_null())
                .collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                write_sorted(v, members, string, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, members, string, out);
            }
            out.push(']');
        }
        Value::String(s) => string(s, out),
        // Integers print alike; null and booleans too. (Fractions are not part of a pod spec.)
        other => out.push_str(&other.to_string()),
    }
}

fn write_str(s: &str, style: GoStyle, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' if style == GoStyle::Modern => out.push_str("\\b"),
            '\u{c}' if style == GoStyle::Modern => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", ch as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn html_characters_and_separators_are_escaped_as_go_does() {
        let v = json!({"args": ["sleep 1 >/dev/null && echo <ok>"], "x": "\u{2028}\u{2029}"});
        assert_eq!(
            to_string(&v, GoStyle::Modern),
            r#"{"args":["sleep 1 \u003e/dev/null \u0026\u0026 echo \u003cok\u003e"],"x":"\u2028\u2029"}"#
        );
    }

    #[test]
    fn keys_are_sorted_by_bytes_and_nothing_is_dropped() {
        let v = json!({"b": 1, "B": null, "a": {"z": true, "y": [1, -2, "s"]}, "é": 0});
        assert_eq!(
            to_string(&v, GoStyle::Modern),
            r#"{"B":null,"a":{"y":[1,-2,"s"],"z":true},"b":1,"é":0}"#
        );
    }

    #[test]
    fn control_characters_by_go_version() {
        let v = json!("a\u{8}b\u{c}c\n\r\t\u{1}\u{1f}\"\\\u{7f}");
        assert_eq!(
            to_string(&v, GoStyle::Before122),
            r#""a\u0008b\u000cc\n\r\t\u0001\u001f\"\\"#.to_string() + "\u{7f}\""
        );
        assert_eq!(
            to_string(&v, GoStyle::Modern),
            r#""a\bb\fc\n\r\t\u0001\u001f\"\\"#.to_string() + "\u{7f}\""
        );
    }

    #[test]
    fn go_versions() {
        assert_eq!(GoStyle::from_go_version("go1.19.8"), GoStyle::Before122);
        assert_eq!(GoStyle::from_go_version("go1.15rc1"), GoStyle::Before122);
        assert_eq!(GoStyle::from_go_version("go1.22.0"), GoStyle::Modern);
        assert_eq!(GoStyle::from_go_version("go1.23"), GoStyle::Modern);
        assert_eq!(GoStyle::from_go_version("devel"), GoStyle::Modern);
        assert_eq!(GoStyle::from_go_version(""), GoStyle::Modern);
    }

    proptest! {
        /// Valid JSON that reads back as the same value, and is its own Go form (idempotent).
        #[test]
        fn round_trips(s in "\\PC*|[<>&\u{2028}\u{1}-\u{1f}a-z\"\\\\]*", k in "[a-zA-Z<>&]{0,6}") {
            let v = json!({k.clone(): [s.clone(), {"n": 5}], "z": s});
            for style in [GoStyle::Modern, GoStyle::Before122] {
                let text = to_string(&v, style);
                let back: Value = serde_json::from_str(&text).expect("valid JSON");
                prop_assert_eq!(&back, &v);
                prop_assert_eq!(to_string(&back, style), text.clone());
                prop_assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
            }
        }
    }
}
