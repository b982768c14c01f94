//! Kubernetes resource quantities as plain numbers: CPU in millicores, memory in bytes.
//!
//! The `resource.Quantity` grammar for requests, limits and usage, in exact integer arithmetic: decimal
//! numbers with an optional exponent (`1e3`), decimal SI suffixes (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`,
//! `E`) and binary ones (`Ki` … `Ei`). Results round up, as the API server does for precision it cannot keep.

/// CPU of a quantity in millicores ("500m" → 500, "1.5" → 1500, "100000n" → 1), rounded up; None when it
/// does not parse or is negative.
pub fn cpu_millis(q: &str) -> Option<u64> {
    scaled(q, 3)
}

/// Bytes of a quantity ("256Mi" → 268435456, "1G" → 10^9, "1e9"), rounded up.
pub fn bytes(q: &str) -> Option<u64> {
    scaled(q, 0)
}

/// The value of a quantity × 10^`scale`, in exact integer arithmetic: `digits × 10^exp × 1024^bin`.
fn scaled(text: &str, scale: i32) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    // An exponent (`1e3`, `2E-1`) is part of the number, unless the `E` is the last char (exa).
    let (number, suffix) = match suffix.strip_prefix(['e', 'E']) {
        Some(exp)
            if !exp.is_empty()
                && exp
                    .trim_start_matches(['+', '-'])
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
        {
            (&text[..split + 1 + exp.len()], "")
        }
        _ => (number, suffix),
    };
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (number, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !(whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let digits: u128 = format!("{whole}{fraction}")
        .trim_start_matches('0')
        .parse()
        .unwrap_or(0);
    let (decimal, binary) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        _ => return None,
    };
    let mut n = digits.checked_mul(1024u128.checked_pow(binary)?)?;
    let exp = exponent
        .checked_add(decimal)?
        .checked_add(scale)?
        .checked_sub(fraction.len() as i32)?;
    if exp >= 0 {
        n = n.checked_mul(10u128.checked_pow(exp as u32)?)?;
    } else {
        let d = 10u128.checked_pow(exp.unsigned_abs())?;
        n = n.div_ceil(d);
    }
    u64::try_from(n).ok()
}

/// Millicores as a quantity: whole cores without a suffix ("2"), else millicores ("250m", "0m").
pub fn format_cpu(millis: u64) -> String {
    if millis > 0 && millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a quantity in the largest binary unit that keeps it whole, rounded up to whole Ki
/// ("64Mi", "1536Ki"); small values stay bytes.
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let kib = bytes.div_ceil(1024);
    for (shift, suffix) in [(40u32, "Pi"), (30, "Ti"), (20, "Gi"), (10, "Mi")] {
        let unit = 1u64 << shift;
        if kib.is_multiple_of(unit) {
            return format!("{}{suffix}", kib / unit);
        }
    }
    format!("{kib}Ki")
}

const KI: u64 = 1024;
const MI: u64 = 1024 * KI;
const GI: u64 = 1024 * MI;

/// Memory for people to read, as `kubectl top` prints it: exact `Gi` or `Mi` when it is a whole number
/// of them, else rounded to the nearest `Mi` (`Ki` below one MiB). Not for requests: it rounds down too.
pub fn display_bytes(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b.is_multiple_of(GI) => format!("{}Gi", b / GI),
        b if b.is_multiple_of(MI) => format!("{}Mi", b / MI),
        b if b >= MI => format!("{}Mi", (b + MI / 2) / MI),
        b if b >= KI => format!("{}Ki", (b + KI / 2) / KI),
        b => format!("{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_forms() {
        for (q, m) in [
            ("500m", 500),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1e-3", 1),
            ("250m ", 250),
            ("0", 0),
        ] {
            assert_eq!(cpu_millis(q), Some(m), "{q}");
        }
        for bad in ["", "m", "abc", "-1", "1x", "1.2.3", "1Zi"] {
            assert_eq!(cpu_millis(bad), None, "{bad}");
        }
        assert_eq!(
            cpu_millis("0.0001"),
            Some(1),
            "rounds up like the API server"
        );
    }

    #[test]
    fn memory_forms() {
        for (q, b) in [
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("1.5Gi", 3 << 29),
            ("64Ki", 65536),
        ] {
            assert_eq!(bytes(q), Some(b), "{q}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(0), "0m");
        assert_eq!(display_bytes(73_400_320), "70Mi");
        assert_eq!(display_bytes(51_200_000), "49Mi");
        assert_eq!(display_bytes(1_000_000_000), "954Mi");
        assert_eq!(display_bytes(100 * 1024), "100Ki");
        assert_eq!(display_bytes(2 << 30), "2Gi");
        assert_eq!(display_bytes(0), "0");
        assert_eq!(format_bytes(64 << 20), "64Mi");
        assert_eq!(format_bytes(3 << 29), "1536Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(1025), "2Ki");
    }

    proptest! {
        #[test]
        fn formatted_values_parse_back_at_least_as_large(m in 0u64..10_000_000, b in 0u64..(1u64 << 45)) {
            prop_assert_eq!(cpu_millis(&format_cpu(m)), Some(m));
            let back = bytes(&format_bytes(b)).expect("parses");
            prop_assert!(back >= b && back - b < 1024);
        }

        #[test]
        fn parsing_never_panics(s in ".{0,20}") {
            let _ = cpu_millis(&s);
            let _ = bytes(&s);
        }
    }
}
