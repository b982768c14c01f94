//! CPU and memory amounts: Kubernetes quantities read into plain numbers (millicores, bytes) so
//! they can be added up, and printed back in the units kubectl uses.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Millicores of a CPU quantity (`500m`, `1`, `0.25`, `2k`), rounded up; `None` if it does not parse.
pub fn cpu_millis(q: &Quantity) -> Option<u64> {
    scaled(&q.0, 3)
}

/// Bytes of a memory quantity (`128Mi`, `1G`, `1e9`, `512`), rounded up; `None` if it does not parse.
pub fn bytes(q: &Quantity) -> Option<u64> {
    scaled(&q.0, 0)
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

/// CPU as kubectl prints it: whole cores bare (`1`, `2`), anything else in millicores (`250m`).
pub fn format_cpu(millis: u64) -> String {
    if millis > 0 && millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

const KI: u64 = 1024;
const MI: u64 = 1024 * KI;
const GI: u64 = 1024 * MI;

/// Memory in binary units: exact `Gi` or `Mi` when it is a whole number of them, else rounded to
/// `Mi` (`Ki` below one MiB), as `kubectl top` does.
pub fn format_bytes(bytes: u64) -> String {
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

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn cpu_quantities() {
        for (text, millis) in [
            ("500m", 500),
            ("1", 1000),
            ("0.25", 250),
            ("2", 2000),
            ("1500m", 1500),
            ("100000n", 1),
            ("1e3", 1_000_000),
            ("2E-1", 200),
        ] {
            assert_eq!(cpu_millis(&q(text)), Some(millis), "{text}");
        }
        for bad in ["", "abc", "1x", "-1", "m"] {
            assert_eq!(cpu_millis(&q(bad)), None, "{bad}");
        }
    }

    #[test]
    fn memory_quantities() {
        for (text, b) in [
            ("128Mi", 128 * MI),
            ("1Gi", GI),
            ("1G", 1_000_000_000),
            ("1e9", 1_000_000_000),
            ("512", 512),
            ("64Ki", 64 * KI),
            ("1.5Gi", 3 * GI / 2),
            ("1E", 1_000_000_000_000_000_000),
        ] {
            assert_eq!(bytes(&q(text)), Some(b), "{text}");
        }
    }

    #[test]
    fn printing() {
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_cpu(1000), "1");
        assert_eq!(format_cpu(0), "0m");
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_bytes(128 * MI), "128Mi");
        assert_eq!(format_bytes(2 * GI), "2Gi");
        assert_eq!(format_bytes(3 * GI / 2), "1536Mi");
        assert_eq!(format_bytes(73_400_320), "70Mi");
        assert_eq!(format_bytes(51_200_000), "49Mi");
        assert_eq!(format_bytes(1_000_000_000), "954Mi");
        assert_eq!(format_bytes(100 * KI), "100Ki");
        assert_eq!(format_bytes(500), "500");
        assert_eq!(format_bytes(0), "0");
    }

    proptest! {
        #[test]
        fn whole_mebibytes_round_trip(n in 1u64..1_000_000) {
            let printed = format_bytes(n * MI);
            prop_assert_eq!(bytes(&q(&printed)), Some(n * MI));
        }

        #[test]
        fn millicores_round_trip(m in 0u64..10_000_000) {
            prop_assert_eq!(cpu_millis(&q(&format_cpu(m))), Some(m));
        }
    }
}
