//! The retry for light: a dark photo whose probe found no usable face is looked at again on a
//! gamma-lifted copy. The lift is the one measured for issue #24 (docs/THRESHOLDS.md, "Hard
//! light"): one 256-entry LUT `v' = v^g` on R, G and B with `g = ln 0.45 / ln(mean luma)`,
//! clamped to [0.25, 1]. It brought back 9 of 9 faces lost to dark or side-lit copies of
//! ../shared/faceeval, all with the true box; CLAHE brought back 7 and, applied to every probe,
//! lowered TAR at 0.40 on the originals from 98.7% to 96.2%.

use image::RgbImage;

/// Mean luma (0..1) under which a photo counts as dark and earns a retry. Every face the
/// research lost and the lift recovered came from a photo of mean luma 0.006-0.185; at 0.30,
/// 5 of its 22 no-face photos also pay for the retry (none gained a face).
pub const DARK_MEAN_LUMA: f32 = 0.30;
/// The lift aims the mean luma here (g = ln TARGET / ln mean).
const TARGET_MEAN_LUMA: f32 = 0.45;
/// The strongest lift (a photo of mean luma 0.041 or less gets this one).
const MIN_GAMMA: f32 = 0.25;
/// Pixels sampled per row and column for the mean: enough for a stable mean, cheap on 40 MP.
const MEAN_SAMPLES_PER_SIDE: u32 = 256;

/// Mean Rec. 601 luma of the photo, 0..1, on a grid of at most 256x256 pixels.
pub fn mean_luma(img: &RgbImage) -> f32 {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return 0.0;
    }
    let step_x = w.div_ceil(MEAN_SAMPLES_PER_SIDE).max(1);
    let step_y = h.div_ceil(MEAN_SAMPLES_PER_SIDE).max(1);
    let (mut sum, mut n) = (0.0f64, 0u64);
    for y in (0..h).step_by(step_y as usize) {
        for x in (0..w).step_by(step_x as usize) {
            let [r, g, b] = img.get_pixel(x, y).0;
            sum += 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
            n += 1;
        }
    }
    (sum / n as f64 / 255.0) as f32
}

/// The gamma that lifts a photo of this mean luma; 1 (no change) from TARGET_MEAN_LUMA up.
pub fn lift_gamma(mean_luma: f32) -> f32 {
    if mean_luma >= TARGET_MEAN_LUMA {
        return 1.0;
    }
    let m = mean_luma.max(1e-3);
    (TARGET_MEAN_LUMA.ln() / m.ln()).clamp(MIN_GAMMA, 1.0)
}

/// The 256-entry LUT of `v' = 255 (v / 255)^gamma`, rounded.
pub fn gamma_lut(gamma: f32) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        let x = (v as f32 / 255.0).powf(gamma);
        *out = (255.0 * x).round().clamp(0.0, 255.0) as u8;
    }
    lut
}

/// A lifted copy of a dark photo, or None when the photo is not dark (mean luma at or above
/// DARK_MEAN_LUMA), so the retry is not worth a second detection.
pub fn lifted_if_dark(img: &RgbImage) -> Option<RgbImage> {
    let mean = mean_luma(img);
    if mean >= DARK_MEAN_LUMA {
        return None;
    }
    let lut = gamma_lut(lift_gamma(mean));
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = lut[usize::from(*v)];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: u8) -> RgbImage {
        RgbImage::from_pixel(64, 48, image::Rgb([v, v, v]))
    }

    #[test]
    fn the_gamma_aims_the_mean_at_the_target_and_stays_in_its_bounds() {
        for (mean, want) in [(0.45, 1.0), (0.9, 1.0), (0.0, MIN_GAMMA), (0.01, MIN_GAMMA)] {
            assert!((lift_gamma(mean) - want).abs() < 1e-6, "mean {mean}");
        }
        // In range, a flat photo of mean m maps to exactly the target.
        for mean in [0.08f32, 0.2, 0.3, 0.4] {
            let g = lift_gamma(mean);
            assert!(g > MIN_GAMMA && g < 1.0, "mean {mean}: {g}");
            assert!(
                (mean.powf(g) - TARGET_MEAN_LUMA).abs() < 1e-4,
                "mean {mean}"
            );
        }
    }

    #[test]
    fn the_lut_keeps_black_and_white_and_only_brightens() {
        let lut = gamma_lut(0.5);
        assert_eq!((lut[0], lut[255]), (0, 255));
        assert_eq!(lut[64], 128, "sqrt(0.251) = 0.501");
        assert!(lut.windows(2).all(|w| w[0] <= w[1]), "monotonic");
        assert!((0..256).all(|v| usize::from(lut[v]) >= v));
        assert!(
            (0..256).all(|v| usize::from(gamma_lut(1.0)[v]) == v),
            "1 is the identity"
        );
    }

    #[test]
    fn only_a_dark_photo_is_lifted() {
        assert!(lifted_if_dark(&flat(200)).is_none());
        assert!(lifted_if_dark(&flat(77)).is_none(), "mean 0.302");
        let lifted = lifted_if_dark(&flat(40)).expect("mean 0.157 is dark");
        let m = mean_luma(&lifted);
        assert!((m - TARGET_MEAN_LUMA).abs() < 0.01, "lifted mean {m}");
        assert_eq!(lifted.dimensions(), (64, 48));
    }

    #[test]
    fn the_mean_weighs_the_channels_as_rec_601() {
        let green = RgbImage::from_pixel(300, 700, image::Rgb([0, 255, 0]));
        assert!((mean_luma(&green) - 0.587).abs() < 1e-4);
        assert_eq!(mean_luma(&RgbImage::new(0, 0)), 0.0);
    }
}
