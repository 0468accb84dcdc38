//! Face alignment: the similarity transform taking the 5 landmarks onto the ArcFace template,
//! and the 112x112 warp.
//!
//! The warp is hand-written rather than taken from `imageproc`: imageproc's `warp` samples in
//! f32 with its own border handling, while ArcFace embeddings are sensitive to the exact crop,
//! and the reference crops with `cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0)`. Reproducing
//! OpenCV's fixed-point remap (source positions rounded to 1/32 pixel, 15-bit weights) takes
//! thirty lines and gives bit-identical crops (checked against OpenCV 4.12).

use image::{Rgb, RgbImage};
use nalgebra::{Matrix2, Vector2};
use serde::Serialize;

pub const ALIGNED_SIZE: u32 = 112;

/// InsightFace `arcface_dst` for 112x112 crops.
pub const ARCFACE_TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2x3 affine matrix mapping photo coordinates to crop coordinates, row-major like OpenCV.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        (
            m[0][0] * x + m[0][1] * y + m[0][2],
            m[1][0] * x + m[1][1] * y + m[1][2],
        )
    }

    /// Inverse as `cv2.invertAffineTransform` computes it (a singular matrix gives zeros).
    pub fn inverse(&self) -> Affine {
        let m = &self.0;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let d = if det != 0.0 { 1.0 / det } else { 0.0 };
        let a11 = m[1][1] * d;
        let a22 = m[0][0] * d;
        let a12 = -m[0][1] * d;
        let a21 = -m[1][0] * d;
        let b1 = -a11 * m[0][2] - a12 * m[1][2];
        let b2 = -a21 * m[0][2] - a22 * m[1][2];
        Affine([[a11, a12, b1], [a21, a22, b2]])
    }
}

/// Least-squares similarity transform (rotation, uniform scale, translation; no reflection)
/// from `src` to `dst`: Umeyama (1991), as `skimage.transform.SimilarityTransform.estimate`.
pub fn umeyama(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Affine {
    let n = src.len().min(dst.len()) as f64;
    let to_vec = |p: &[f64; 2]| Vector2::new(p[0], p[1]);
    let src_mean = src.iter().map(to_vec).sum::<Vector2<f64>>() / n;
    let dst_mean = dst.iter().map(to_vec).sum::<Vector2<f64>>() / n;

    let mut a = Matrix2::<f64>::zeros();
    let mut src_var = 0.0;
    for (s, d) in src.iter().zip(dst) {
        let sd = to_vec(s) - src_mean;
        let dd = to_vec(d) - dst_mean;
        a += dd * sd.transpose();
        src_var += sd.norm_squared();
    }
    a /= n;
    src_var /= n;

    let svd = a.svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        // nalgebra always returns U and V^T when asked for them.
        return Affine([[0.0; 3]; 2]);
    };
    let sv = svd.singular_values;
    // The reflection fix applies to the smallest singular value; nalgebra does not promise an
    // order, so find it instead of assuming the last.
    let smallest = if sv[0] < sv[1] { 0 } else { 1 };
    let mut d = Vector2::new(1.0, 1.0);
    if a.determinant() < 0.0 {
        d[smallest] = -1.0;
    }
    let rank_deficient = sv.min() <= f64::EPSILON * sv.max().max(1.0) * 2.0;
    if rank_deficient && u.determinant() * v_t.determinant() <= 0.0 {
        d[smallest] = -1.0;
    } else if rank_deficient {
        d = Vector2::new(1.0, 1.0);
    }
    let rot = u * Matrix2::from_diagonal(&d) * v_t;
    let scale = if src_var > 0.0 {
        sv.dot(&d) / src_var
    } else {
        0.0
    };
    let t = dst_mean - scale * (rot * src_mean);
    let m = rot * scale;
    Affine([[m[(0, 0)], m[(0, 1)], t[0]], [m[(1, 0)], m[(1, 1)], t[1]]])
}

/// The transform InsightFace's `norm_crop` uses for a 112x112 ArcFace crop.
pub fn arcface_transform(landmarks: &[[f32; 2]; 5]) -> Affine {
    let src = landmarks.map(|p| [f64::from(p[0]), f64::from(p[1])]);
    umeyama(&src, &ARCFACE_TEMPLATE)
}

/// `cv2.warpAffine(img, m, (size, size), flags=INTER_LINEAR, borderValue=0)`:
/// dst(x, y) = src(m^-1 (x, y)), bilinear, black outside the photo.
pub fn warp_affine(img: &RgbImage, m: &Affine, size: u32) -> RgbImage {
    // OpenCV's fixed-point layout: positions in 1/1024 (AB_BITS), reduced to 1/32 pixel
    // (INTER_BITS) with rounding, weights in 1/32768 (INTER_REMAP_COEF_BITS).
    const AB_SCALE: f64 = 1024.0;
    const ROUND_DELTA: i64 = 16;
    let inv = m.inverse().0;
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let raw = img.as_raw();
    let fixed = |v: f64| (v * AB_SCALE).round_ties_even() as i64;
    let adelta: Vec<i64> = (0..size).map(|x| fixed(inv[0][0] * f64::from(x))).collect();
    let bdelta: Vec<i64> = (0..size).map(|x| fixed(inv[1][0] * f64::from(x))).collect();

    let mut out = RgbImage::new(size, size);
    for y in 0..size {
        let x0 = fixed(inv[0][1] * f64::from(y) + inv[0][2]) + ROUND_DELTA;
        let y0 = fixed(inv[1][1] * f64::from(y) + inv[1][2]) + ROUND_DELTA;
        for x in 0..size {
            let xq = (x0 + adelta[x as usize]) >> 5;
            let yq = (y0 + bdelta[x as usize]) >> 5;
            let (sx, sy) = (xq >> 5, yq >> 5);
            let (ax, ay) = (xq & 31, yq & 31);
            // Products of 1/32 steps are exact in 1/32768: no rounding in the weight table.
            let weights = [
                (32 - ax) * (32 - ay),
                ax * (32 - ay),
                (32 - ax) * ay,
                ax * ay,
            ];
            let taps = [(sx, sy), (sx + 1, sy), (sx, sy + 1), (sx + 1, sy + 1)];
            // Wrapping i32 ops only to spare the dev profile's overflow checks (the warp is a
            // third of the time per face in tests and `scripts/run.sh` otherwise): at most
            // 4 x 255 x 1024 x 32 = 33.4 M, far inside i32.
            let mut acc = [0i32; 3];
            for ((tx, ty), wgt) in taps.into_iter().zip(weights) {
                if tx < 0 || ty < 0 || tx >= w || ty >= h || wgt == 0 {
                    continue;
                }
                let i = ((ty * w + tx) * 3) as usize;
                let wgt = (wgt * 32) as i32;
                for (a, &v) in acc.iter_mut().zip(&raw[i..i + 3]) {
                    *a = a.wrapping_add(i32::from(v).wrapping_mul(wgt));
                }
            }
            let px = acc.map(|v| (v.wrapping_add(1 << 14) >> 15).clamp(0, 255) as u8);
            out.put_pixel(x, y, Rgb(px));
        }
    }
    out
}

/// The aligned 112x112 ArcFace crop of one face and the transform that produced it.
pub fn align_face(img: &RgbImage, landmarks: &[[f32; 2]; 5]) -> (RgbImage, Affine) {
    let m = arcface_transform(landmarks);
    (warp_affine(img, &m, ALIGNED_SIZE), m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umeyama_recovers_a_known_similarity_transform() {
        let (s, theta, tx, ty) = (0.37_f64, 0.3_f64, 12.5, -40.0);
        let (c, sn) = (theta.cos() * s, theta.sin() * s);
        let src: Vec<[f64; 2]> = vec![
            [100.0, 120.0],
            [180.0, 118.0],
            [140.0, 170.0],
            [110.0, 210.0],
            [175.0, 208.0],
        ];
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| [c * p[0] - sn * p[1] + tx, sn * p[0] + c * p[1] + ty])
            .collect();
        let m = umeyama(&src, &dst).0;
        let want = [[c, -sn, tx], [sn, c, ty]];
        for r in 0..2 {
            for k in 0..3 {
                assert!((m[r][k] - want[r][k]).abs() < 1e-9, "{m:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn umeyama_never_returns_a_reflection() {
        // Mirrored landmarks: the best similarity without reflection has a positive determinant.
        let src: Vec<[f64; 2]> = ARCFACE_TEMPLATE.iter().map(|p| [-p[0], p[1]]).collect();
        let m = umeyama(&src, &ARCFACE_TEMPLATE).0;
        assert!(m[0][0] * m[1][1] - m[0][1] * m[1][0] > 0.0);
    }

    #[test]
    fn identity_warp_copies_the_image_and_blacks_out_beyond_it() {
        let mut img = RgbImage::new(8, 8);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([(x * 20) as u8, (y * 20) as u8, 99]);
        }
        let id = Affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        let out = warp_affine(&img, &id, 10);
        assert_eq!(out.get_pixel(3, 5), img.get_pixel(3, 5));
        assert_eq!(out.get_pixel(9, 9), &Rgb([0, 0, 0]));
        let shifted = Affine([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]);
        let out = warp_affine(&img, &shifted, 8);
        // dst(2, 0) = src(2.5, 0): halfway between 40 and 60.
        assert_eq!(out.get_pixel(2, 0)[0], 50);
    }
}
