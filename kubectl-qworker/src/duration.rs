//! `--timeout` values as kubectl writes them (`30s`, `5m`, `1h30m`, `1.5s`, a bare `0`), read by the
//! project's one Go-style parser; and durations printed the way they are typed.

use std::time::Duration;

/// Parses a Go-style duration (see [`qscaler_crds::duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    qscaler_crds::duration::parse_flag(text)
}

/// Prints a duration the way it is usually typed (`90s` → `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubectl_style_durations() {
        let cases = [
            ("0", 0),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("2h0m5s", 7_205_000),
            (" 10s ", 10_000),
            ("1.5s", 1_500),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("", "invalid duration"),
            ("30", "missing unit"),
            ("5x", "unknown unit"),
            ("m", "invalid duration"),
            ("-5s", "negative"),
            ("99999999999999999999s", "out of range"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn durations_print_as_typed() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
    }

    proptest! {
        #[test]
        fn printed_durations_parse_back(secs in 1u64..1_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn parsing_never_panics(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }
    }
}
