//! Kubernetes resource quantities as plain numbers: CPU in millicores, memory in bytes.
//!
//! Enough of the `resource.Quantity` grammar for requests, limits and usage: decimal numbers with an
//! optional exponent (`1e3`), decimal SI suffixes (`m`, `k`, `M`, `G`, `T`, `P`, `E`) and binary ones
//! (`Ki` … `Ei`). Results round up, as the API server does for precision it cannot keep.

/// CPU of a quantity in millicores ("500m" → 500, "1.5" → 1500); None when it does not parse or is negative.
pub fn cpu_millis(q: &str) -> Option<u64> {
    scaled(q, 1000.0)
}

/// Bytes of a quantity ("256Mi" → 268435456, "1G" → 10^9).
pub fn bytes(q: &str) -> Option<u64> {
    scaled(q, 1.0)
}

fn scaled(q: &str, unit: f64) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let mut value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?.clamp(-30, 30)),
        _ => return None,
    };
    value *= multiplier * unit;
    if !value.is_finite() || value < 0.0 || value > u64::MAX as f64 {
        return None;
    }
    // Round up, but forgive float noise such as 0.1 * 1000 = 100.00000000000001.
    let rounded = value.round();
    Some(if (value - rounded).abs() < 1e-6 {
        rounded as u64
    } else {
        value.ceil() as u64
    })
}

/// Millicores as a quantity: whole cores without a suffix ("2"), else millicores ("250m").
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
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
