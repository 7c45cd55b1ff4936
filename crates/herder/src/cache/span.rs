//! Spans of cache time packed into a few bits, so that an entry stays small: a mantissa and a
//! power-of-two exponent, rounded down (towards the earlier deadline).

use super::clock::NEVER;

/// A span of cache time in 32 bits: 26 bits of mantissa, 6 of exponent. Exact below 2^26 ns
/// (67 ms); above, rounded down by less than one part in 2^25 (under 110 µs on an hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span(u32);

const MANTISSA: u32 = 26;

impl Span {
    /// A span that never ends.
    pub(crate) const NEVER: Span = Span(u32::MAX);
    pub(crate) const ZERO: Span = Span(0);

    /// `nanos` nanoseconds, rounded down; `NEVER` stays `NEVER`.
    pub(crate) fn down(nanos: u64) -> Span {
        if nanos == NEVER {
            return Span::NEVER;
        }
        let shift = (u64::BITS - nanos.leading_zeros()).saturating_sub(MANTISSA);
        // `shift` is at most 38, so the encoding never reaches `u32::MAX`.
        Span((shift << MANTISSA) | (nanos >> shift) as u32)
    }

    pub(crate) fn nanos(self) -> u64 {
        if self == Span::NEVER {
            return NEVER;
        }
        u64::from(self.0 & ((1 << MANTISSA) - 1)) << (self.0 >> MANTISSA)
    }

    /// `at + self`, where `NEVER` (either) stays `NEVER`.
    pub(crate) fn after(self, at: u64) -> u64 {
        at.saturating_add(self.nanos())
    }
}

/// How long a load took (XFetch's δ), in 16 bits of microseconds: 11 bits of mantissa, 5 of
/// exponent, rounded down (within 0.1 %), saturating at about 51 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadTime(u16);

const LOAD_MANTISSA: u32 = 11;

impl LoadTime {
    pub(crate) fn from_micros(micros: u128) -> LoadTime {
        let max = ((1u64 << LOAD_MANTISSA) - 1) << 31;
        let micros = u64::try_from(micros).unwrap_or(max).min(max);
        let shift = (u64::BITS - micros.leading_zeros()).saturating_sub(LOAD_MANTISSA);
        LoadTime(((shift << LOAD_MANTISSA) | (micros >> shift) as u32) as u16)
    }

    pub(crate) fn nanos(self) -> u64 {
        let micros = u64::from(self.0 & ((1 << LOAD_MANTISSA) - 1)) << (self.0 >> LOAD_MANTISSA);
        micros * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_down_by_less_than_one_part_in_2_pow_25() {
        for nanos in [
            0,
            1,
            999,
            (1 << 26) - 1,
            1 << 26,
            (1 << 26) + 1,
            3_600_000_000_000,
        ] {
            let back = Span::down(nanos).nanos();
            assert!(
                back <= nanos && nanos - back <= nanos >> 25,
                "{nanos} -> {back}"
            );
        }
        assert_eq!(Span::down(123_456).nanos(), 123_456, "exact below 2^26");
        let huge = NEVER - 1;
        assert!(Span::down(huge).nanos() <= huge);
        assert_eq!(Span::down(NEVER), Span::NEVER);
        assert_eq!(Span::NEVER.after(5), NEVER);
        assert_eq!(Span::down(7).after(NEVER - 1), NEVER);
    }

    #[test]
    fn load_times_keep_three_significant_digits_and_saturate() {
        for micros in [0u128, 1, 2047, 2048, 2049, 1_000_000, 123_456_789] {
            let back = LoadTime::from_micros(micros).nanos() / 1000;
            let micros = micros as u64;
            assert!(
                back <= micros && micros - back <= micros / 1024,
                "{micros} -> {back}"
            );
        }
        let most = LoadTime::from_micros(u128::MAX).nanos();
        assert_eq!(most, LoadTime::from_micros(u128::from(u64::MAX)).nanos());
        assert!(most > 50 * 86_400 * 1_000_000_000);
    }
}
