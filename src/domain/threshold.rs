use std::fmt;

use serde::Serialize;

/// A similarity or score threshold, always finite and within 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Threshold(f32);

impl Threshold {
    pub const ZERO: Threshold = Threshold(0.0);
    pub const MIN: f32 = 0.0;
    pub const MAX: f32 = 1.0;

    pub fn parse(value: f32) -> Result<Self, String> {
        if value.is_finite() && (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "must be a number between {} and {}",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_values_in_range() {
        for ok in [0.0, 0.5, 1.0] {
            assert_eq!(Threshold::parse(ok).map(Threshold::get), Ok(ok));
        }
        for bad in [-0.01, 1.01, f32::NAN, f32::INFINITY, -1.0, 2.0] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }
}
