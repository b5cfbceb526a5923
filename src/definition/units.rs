//! Sizes (`512M`, `2G`) and CPU counts (`1.5`), as users write them for nspawn and podman.

/// Parses a size: a number of bytes, or a number (decimals allowed) followed by K, M, G or
/// T, powers of 1024, with or without a trailing `B` or `iB`, as systemd reads `1.5G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(format!("`{text}` does not start with a number"));
    }
    let shift: u32 = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("unknown unit `{}` in `{text}`", unit.trim_start())),
    };
    let too_large = || format!("`{text}` is too large");
    let whole_bytes = whole
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(too_large)?;
    if fraction.is_empty() {
        return Ok(whole_bytes);
    }
    if shift == 0 {
        return Err(format!("`{text}`: a number of bytes is a whole number"));
    }
    let digits = &fraction[..fraction.len().min(12)];
    let scale = 10u128.pow(digits.len() as u32);
    let part = digits.parse::<u128>().map_err(|_| too_large())? * (1u128 << shift) / scale;
    whole_bytes.checked_add(part as u64).ok_or_else(too_large)
}

/// Formats bytes the way [`parse_size`] reads them, exactly (no rounding).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// CPU bandwidth in thousandths of a CPU: 1.5 CPUs is 1500.
pub fn parse_cpus(cpus: f64) -> Result<u32, String> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err("must be a number of CPUs greater than 0, such as 0.5 or 2".to_owned());
    }
    if cpus > 4096.0 {
        return Err("is more CPUs than Linux supports (4096)".to_owned());
    }
    let milli = (cpus * 1000.0).round();
    if milli < 1.0 {
        return Err("must be at least 0.001 CPUs".to_owned());
    }
    Ok(milli as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert!(parse_size("12Q").unwrap_err().contains("unit `Q`"));
        assert!(parse_size("M").is_err());
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("1.G").is_err());
        assert!(parse_size("1.2.3M").is_err());
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus(1.5), Ok(1500));
        assert!(parse_cpus(0.0).is_err());
        assert!(parse_cpus(f64::NAN).is_err());
        assert!(parse_cpus(0.0001).is_err());
    }
}
