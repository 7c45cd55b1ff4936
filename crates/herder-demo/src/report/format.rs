//! How numbers read in the tables.

use std::time::Duration;

/// `12,345`
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.84 s`, `120 ms`, `4.2 ms`, `850 µs`
pub(super) fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 0.01 || (secs >= 0.001 && d.subsec_micros().is_multiple_of(1000)) {
        format!("{:.0} ms", secs * 1e3)
    } else if secs >= 0.001 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

/// `201`, `3`, `0.06`: a per-request average.
pub(super) fn average(total: u64, over: usize) -> String {
    if over == 0 {
        return "-".to_owned();
    }
    let mean = total as f64 / over as f64;
    if mean.fract() == 0.0 {
        count(mean as u64)
    } else if mean >= 10.0 {
        format!("{mean:.1}")
    } else {
        format!("{mean:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(1840)), "1.84 s");
        assert_eq!(duration(Duration::from_millis(120)), "120 ms");
        assert_eq!(duration(Duration::from_micros(4200)), "4.2 ms");
        assert_eq!(duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(duration(Duration::from_millis(1)), "1 ms");
    }

    #[test]
    fn averages() {
        assert_eq!(average(10_050, 50), "201");
        assert_eq!(average(3, 50), "0.06");
        assert_eq!(average(1, 0), "-");
    }
}
