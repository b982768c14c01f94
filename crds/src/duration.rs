//! Durations as Go's `time.ParseDuration` reads them, so that every flag and env var of the operator,
//! qsupervisor and the plugin takes what `kubectl`, client-go and KEDA take: `300ms`, `1.5s`, `1h30m`,
//! `2h45m10.5s`, `us`/`µs`, `ns`, a bare `0`. One parser for all binaries (issue 14).
//!
//! Differences from Go, both because a [`Duration`] cannot be negative: a negative value other than
//! zero is an error, and so is a value above Go's own limit (`i64::MAX` ns, about 292 years).

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?} (e.g. 500ms, 1.5s, 1h30m)")]
    Invalid(String),
    #[error("missing unit in duration {0:?} (ns, us, ms, s, m, h; only 0 may have none)")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {text:?} (ns, us, ms, s, m, h)")]
    UnknownUnit { unit: String, text: String },
    #[error("duration {0:?} is out of range")]
    Overflow(String),
    #[error("duration {0:?} is negative")]
    Negative(String),
}

/// Nanoseconds per unit, as Go names them (`µ` U+00B5 and `μ` U+03BC both mean micro).
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Go's limit: the largest `time.Duration`.
const MAX_NANOS: u64 = i64::MAX as u64;

/// Leading decimal digits of `s`: (value, rest, digit count); `None` past `MAX_NANOS` (as Go's
/// `leadingInt`, which fails on overflow).
fn leading_int(s: &str) -> Option<(u64, &str, usize)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    for b in s[..digits].bytes() {
        x = x.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if x > MAX_NANOS + 1 {
            return None;
        }
    }
    Some((x, &s[digits..], digits))
}

/// Digits after the point: (value, scale, rest, digit count). Digits past u64 precision are read but
/// ignored, as Go's `leadingFraction` does.
fn leading_fraction(s: &str) -> (u64, f64, &str, usize) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (mut x, mut scale, mut overflow) = (0u64, 1.0f64, false);
    for b in s[..digits].bytes() {
        if overflow {
            continue;
        }
        match x
            .checked_mul(10)
            .and_then(|y| y.checked_add(u64::from(b - b'0')))
        {
            Some(y) if y <= MAX_NANOS + 1 => {
                x = y;
                scale *= 10.0;
            }
            _ => overflow = true,
        }
    }
    (x, scale, &s[digits..], digits)
}

/// Parses a Go duration string: a sequence of decimal numbers, each with an optional fraction and a
/// unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), optionally signed; `0` alone needs no unit.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let mut s = text.trim();
    let negative = s.starts_with('-');
    if let Some(rest) = s.strip_prefix(['-', '+']) {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, rest, int_digits) = leading_int(s).ok_or_else(overflow)?;
        s = rest;
        let (mut frac, mut scale, mut frac_digits) = (0, 1.0, 0);
        if let Some(rest) = s.strip_prefix('.') {
            (frac, scale, s, frac_digits) = leading_fraction(rest);
        }
        if int_digits == 0 && frac_digits == 0 {
            return Err(invalid()); // "." or ".s"
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_string()));
        }
        let per = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_string(),
            text: text.to_string(),
        })?;
        let mut part = whole
            .checked_mul(per)
            .filter(|v| *v <= MAX_NANOS + 1)
            .ok_or_else(overflow)?;
        if frac > 0 {
            // Float here, as in Go: exact for every fraction that has a meaning in nanoseconds.
            part = part
                .checked_add((frac as f64 * (per as f64 / scale)) as u64)
                .filter(|v| *v <= MAX_NANOS + 1)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(part)
            .filter(|v| *v <= MAX_NANOS + 1)
            .ok_or_else(overflow)?;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(text.to_string()));
    }
    if total > MAX_NANOS {
        return Err(overflow());
    }
    Ok(Duration::from_nanos(total))
}

/// [`parse`] with the error as text, the shape clap's `value_parser` takes.
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(n: u64) -> Result<Duration, DurationError> {
        Ok(Duration::from_nanos(n))
    }

    const S: u64 = 1_000_000_000;

    /// Go's own table (`time_test.go`, parseDurationTests), less the negative non-zero rows.
    #[test]
    fn go_examples() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-0", 0),
            ("+5s", 5 * S),
            ("-0s", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", S / 2),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + S / 2),
            (
                "1h2m3s4ms5us6ns",
                3600 * S + 2 * 60 * S + 3 * S + 4_000_000 + 5_000 + 6,
            ),
            (
                "39h9m14.425s",
                39 * 3600 * S + 9 * 60 * S + 14 * S + 425_000_000,
            ),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX as u64),
            ("9223372036854775.807us", i64::MAX as u64),
            ("9223372036s854ms775us807ns", i64::MAX as u64),
            ("0.100000000000000000000h", 6 * 60 * S),
            (
                "0.830103483285477580700h",
                49 * 60 * S + 48 * S + 372_539_827,
            ),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), ns(*nanos), "{text}");
        }
    }

    #[test]
    fn what_the_project_writes() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h30m", Duration::from_secs(5400)),
            ("2h45m10.5s", Duration::from_millis(9_910_500)),
            ("300ms", Duration::from_millis(300)),
            ("5m", Duration::from_secs(300)),
            (" 10s ", Duration::from_secs(10)),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for text in ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1.2.3s", "five"] {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(e, DurationError::Invalid(_) | DurationError::MissingUnit(_)),
                "{text}: {e:?}"
            );
        }
        assert_eq!(parse("3"), Err(DurationError::MissingUnit("3".into())));
        assert_eq!(parse("1s5"), Err(DurationError::MissingUnit("1s5".into())));
        assert_eq!(
            parse("5x"),
            Err(DurationError::UnknownUnit {
                unit: "x".into(),
                text: "5x".into()
            })
        );
        assert!(matches!(
            parse("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        for text in ["5 s", "1S"] {
            assert!(
                matches!(parse(text), Err(DurationError::UnknownUnit { .. })),
                "{text}"
            );
        }
        for text in [
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "3000000h",
            "99999999999999999999999s",
            "2562048h",
        ] {
            assert_eq!(
                parse(text),
                Err(DurationError::Overflow(text.into())),
                "{text}"
            );
        }
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("-1.5h"), Err(DurationError::Negative("-1.5h".into())));
    }

    #[test]
    fn the_flag_form_gives_the_message() {
        assert_eq!(parse_flag("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_flag("2").unwrap_err().contains("missing unit"));
    }

    /// A Go-style rendering of `nanos` (h, m, s with a fraction), as Go's `Duration.String` writes it.
    fn go_string(nanos: u64) -> String {
        let (h, m) = (nanos / (3600 * S), nanos / (60 * S) % 60);
        let (s, frac) = (nanos / S % 60, nanos % S);
        let mut out = String::new();
        if h > 0 {
            out += &format!("{h}h");
        }
        if h > 0 || m > 0 {
            out += &format!("{m}m");
        }
        if frac == 0 {
            out += &format!("{s}s");
        } else {
            let f = format!("{frac:09}");
            out += &format!("{s}.{}s", f.trim_end_matches('0'));
        }
        out
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_duration_like_text(s in "[-+]?[0-9.]{0,25}(ns|us|µs|ms|s|m|h|x)?([0-9.]{0,25}(ns|ms|s|h))?") {
            let _ = parse(&s);
        }

        #[test]
        fn go_strings_parse_back(nanos in 0u64..=(i64::MAX as u64)) {
            prop_assert_eq!(parse(&go_string(nanos)), ns(nanos));
        }

        #[test]
        fn units_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            prop_assert_eq!(parse(&text), Ok(want));
        }
    }
}
