//! Per-face quality signals that let callers skip faces too small or too blurred to match.

use image::RgbImage;
use serde::Serialize;

use crate::geometry::Detection;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// Smaller side of the detection box in photo pixels. ArcFace crops are 112 px; faces
    /// below ~40 px embed poorly, below ~20 px mostly noise.
    pub face_px: u32,
    /// Detector confidence in 0..1.
    pub det_score: f32,
    /// Variance of the 4-neighbour Laplacian over the aligned 112x112 grayscale crop
    /// (borders excluded). Resolution-normalised because the crop always has the same
    /// size: a sharp portrait scores several hundred, an upscaled tiny or motion-blurred face
    /// below ~50. Black fill where the face touches the photo edge raises it somewhat.
    pub sharpness: f32,
}

impl Quality {
    pub fn measure(det: &Detection, aligned: &RgbImage) -> Quality {
        Quality {
            face_px: det.bbox.min_side().max(0.0).round() as u32,
            det_score: det.score,
            sharpness: laplacian_variance(aligned),
        }
    }
}

/// Variance of the Laplacian of the BT.601 luma of an RGB image.
pub fn laplacian_variance(img: &RgbImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let gray: Vec<f32> = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let lap = gray[i - 1] + gray[i + 1] + gray[i - w] + gray[i + w] - 4.0 * gray[i];
            let lap = f64::from(lap);
            sum += lap;
            sum_sq += lap * lap;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_image_has_zero_sharpness_and_a_checkerboard_a_high_one() {
        let flat = RgbImage::from_pixel(16, 16, image::Rgb([120, 120, 120]));
        assert_eq!(laplacian_variance(&flat), 0.0);
        let checker = RgbImage::from_fn(16, 16, |x, y| {
            let v = if (x + y) % 2 == 0 { 0 } else { 255 };
            image::Rgb([v, v, v])
        });
        assert!(laplacian_variance(&checker) > 1000.0);
    }
}
