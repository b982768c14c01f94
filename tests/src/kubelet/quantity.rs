//! Kubernetes resource quantities ("64Mi", "500m", "1e3") as numbers, for cgroup limits.

/// The value of a quantity in base units (bytes, cores), or `None` if it does not parse.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
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
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let v = value * factor;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A memory quantity in whole bytes (rounded up, as Kubernetes does).
pub fn bytes(q: &str) -> Option<u64> {
    parse(q).map(|v| v.ceil() as u64)
}

/// A cpu quantity in millicores (rounded up).
pub fn millicores(q: &str) -> Option<u64> {
    parse(q).map(|v| (v * 1000.0 - 1e-9).ceil().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("100M"), Some(100_000_000));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("1500m"), Some(2));
        assert_eq!(bytes("12Q"), None);
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("-1"), None);
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("0.25"), Some(250));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("0"), Some(0));
    }
}
