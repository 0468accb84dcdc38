//! Detector input: a window of the photo ("canvas"), resized keeping its aspect ratio (longer
//! side to the detector size) into the top-left of a normalised NCHW tensor padded with black:
//! a square as in the reference, or a smaller rectangle that still holds the resized canvas.
//!
//! The resize reproduces `cv2.resize(.., INTER_LINEAR)` (half-pixel centres, edge clamping, no
//! antialiasing, 11-bit fixed-point weights), which the reference pipeline uses; an antialiased
//! resize (image's Triangle filter) finds the same faces but moves landmarks by tenths of a
//! pixel, and it is several times slower on large photos. Hand-written because the canvas can
//! reach past the photo (zero border for the padded retry) without materialising a padded copy.

use image::RgbImage;

/// A window onto the photo in photo pixel coordinates. It may extend past the photo on any
/// side; pixels there are black.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canvas {
    pub x0: i64,
    pub y0: i64,
    pub width: u32,
    pub height: u32,
}

impl Canvas {
    pub fn whole(img: &RgbImage) -> Canvas {
        Canvas {
            x0: 0,
            y0: 0,
            width: img.width(),
            height: img.height(),
        }
    }
}

/// Where the canvas landed inside the square input.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub new_width: usize,
    pub new_height: usize,
    /// Input pixels per canvas pixel: `size / max(width, height)`.
    pub scale: f64,
}

/// The reference's letterbox arithmetic (scripts/reference.py `letterbox_geometry`): the longer
/// side becomes `size`, the other `floor(side * size / longer)` in integers.
pub fn placement(canvas: &Canvas, size: usize) -> Placement {
    let (w, h) = (u64::from(canvas.width), u64::from(canvas.height));
    let longest = w.max(h).max(1);
    let s = size as u64;
    Placement {
        new_width: (w * s / longest).clamp(1, s) as usize,
        new_height: (h * s / longest).clamp(1, s) as usize,
        scale: size as f64 / longest as f64,
    }
}

/// Fixed-point scale of cv2's resize coefficients (`INTER_RESIZE_COEF_BITS` = 11).
const COEF_ONE: i32 = 2048;

/// One source coordinate of the bilinear resize: the two neighbouring photo indices (`None`
/// when outside the photo) and their fixed-point weights.
#[derive(Clone, Copy)]
struct Tap {
    i0: Option<usize>,
    i1: Option<usize>,
    w0: i32,
    w1: i32,
}

/// cv2's `resize` coefficient computation: position in f64, fraction in f32, clamped at the
/// canvas edges, `w0 = round((1 - fx) * 2048)`.
fn taps(dst_len: usize, canvas_len: u32, canvas_origin: i64, photo_len: u32) -> Vec<Tap> {
    let scale = 1.0 / (dst_len as f64 / f64::from(canvas_len));
    let last = i64::from(canvas_len) - 1;
    let to_photo = |c: i64| {
        let p = c + canvas_origin;
        (p >= 0 && p < i64::from(photo_len)).then_some(p as usize)
    };
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut c0 = f.floor() as i64;
            let mut frac = f - c0 as f32;
            if c0 < 0 {
                c0 = 0;
                frac = 0.0;
            }
            if c0 >= last {
                c0 = last;
                frac = 0.0;
            }
            let c1 = (c0 + 1).min(last);
            let w0 = ((1.0 - frac) * COEF_ONE as f32).round_ties_even() as i32;
            Tap {
                i0: to_photo(c0),
                i1: to_photo(c1),
                w0,
                w1: COEF_ONE - w0,
            }
        })
        .collect()
}

/// A tap as byte offsets into a photo row: a neighbour outside the photo reads offset 0 with
/// weight 0, which adds exactly what the black pixel would, so the loop has no branches.
#[derive(Clone, Copy)]
struct RowTap {
    o0: usize,
    o1: usize,
    w0: i32,
    w1: i32,
}

fn row_taps(xs: &[Tap]) -> Vec<RowTap> {
    let side = |i: Option<usize>, w: i32| i.map_or((0, 0), |i| (i * 3, w));
    xs.iter()
        .map(|t| {
            let (o0, w0) = side(t.i0, t.w0);
            let (o1, w1) = side(t.i1, t.w1);
            RowTap { o0, o1, w0, w1 }
        })
        .collect()
}

/// Horizontal pass of one photo row (or a black row) into `out`, plane by plane
/// (`[3][out.len() / 3]`).
fn horizontal(row: Option<&[u8]>, xs: &[RowTap], out: &mut [i32]) {
    let Some(row) = row else {
        out.fill(0);
        return;
    };
    let n = xs.len();
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    // Wrapping ops as in `vertical`: 255 * 2048 is far inside i32.
    let tap = |p: &[u8], q: &[u8], t: &RowTap, c: usize| {
        i32::from(p[c])
            .wrapping_mul(t.w0)
            .wrapping_add(i32::from(q[c]).wrapping_mul(t.w1))
    };
    for (u, t) in xs.iter().enumerate() {
        let (p, q) = (&row[t.o0..][..3], &row[t.o1..][..3]);
        r[u] = tap(p, q, t, 0);
        g[u] = tap(p, q, t, 1);
        b[u] = tap(p, q, t, 2);
    }
}

/// Vertical pass of one plane's row: the two horizontal passes weighted, rounded as cv2 does,
/// normalised. Branch-free and without lookups, so it compiles to vector code.
fn vertical(
    s0: &[i32],
    s1: &[i32],
    [w0, w1]: [i32; 2],
    [mean, inv_std]: [f32; 2],
    out: &mut [f32],
) {
    for ((o, &a), &b) in out.iter_mut().zip(s0).zip(s1) {
        // Wrapping ops only to spare the dev profile's overflow checks, which keep the loop
        // scalar: the values stay far inside i32 (weights <= 2048, sums <= 255 * 2048 >> 4).
        let v = ((w0.wrapping_mul(a >> 4) >> 16)
            .wrapping_add(w1.wrapping_mul(b >> 4) >> 16)
            .wrapping_add(2))
            >> 2;
        *o = (v.clamp(0, 255) as f32 - mean) * inv_std;
    }
}

/// Output rows resized together before a transposed plan takes them: each column of the block
/// then goes out as 16 consecutive values (one cache line) instead of 16 scattered ones.
const TRANSPOSE_ROWS: usize = 16;

/// Writes the canvas, resized so that its longer side is `size`, into `out` (3 x height x width
/// for `input = [width, height]`, NCHW without the batch axis, each at least the resized
/// canvas), normalised as `(v - mean) / std` for `[mean, std]`, padding with the normalised
/// value of black.
/// With `transposed` each plane is written transposed (width x height: row `v`, column `u` at
/// `u * height + v`), as a detector plan with transposed kernels takes it, without an upright
/// copy of the whole input first.
///
/// Integer arithmetic as in cv2's SIMD path for 8-bit images (`VResizeLinearVec_32s8u`):
/// measured identical to `cv2.resize` on all but ~0.1% of pixels, which differ by one level.
pub fn fill_input(
    img: &RgbImage,
    canvas: &Canvas,
    size: usize,
    [width, height]: [usize; 2],
    transposed: bool,
    [mean, std]: [f32; 2],
    out: &mut [f32],
) -> Placement {
    let plane = width * height;
    debug_assert_eq!(out.len(), 3 * plane);
    let p = placement(canvas, size);
    debug_assert!(p.new_width <= width && p.new_height <= height);
    let norm = [mean, 1.0 / std];
    let black = (0.0 - mean) * norm[1];
    // Black beyond the resized canvas: right of it on its rows, then every row below it
    // (transposed: below it in its columns, then every column right of it).
    let (lines, line, used, line_len) = if transposed {
        (p.new_width, height, p.new_height, p.new_width * height)
    } else {
        (p.new_height, width, p.new_width, p.new_height * width)
    };
    for plane_out in out.chunks_exact_mut(plane) {
        for l in plane_out[..lines * line].chunks_exact_mut(line) {
            l[used..].fill(black);
        }
        plane_out[line_len..].fill(black);
    }

    let nw = p.new_width;
    let xs = row_taps(&taps(nw, canvas.width, canvas.x0, img.width()));
    let ys = taps(p.new_height, canvas.height, canvas.y0, img.height());
    let stride = img.width() as usize * 3;
    let raw: &[u8] = img.as_raw();
    let row = |i: Option<usize>| i.map(|y| &raw[y * stride..(y + 1) * stride]);

    // Horizontal passes of the two source rows of the current output row, plane by plane.
    let mut h0 = vec![0i32; nw * 3];
    let mut h1 = vec![0i32; nw * 3];
    let mut cached: [Option<Option<usize>>; 2] = [None, None];
    // Transposed: `TRANSPOSE_ROWS` resized rows, `[row][plane][u]`.
    let mut block = if transposed {
        vec![0.0f32; TRANSPOSE_ROWS * 3 * nw]
    } else {
        Vec::new()
    };
    for (v0, tys) in (0..).step_by(TRANSPOSE_ROWS).zip(ys.chunks(TRANSPOSE_ROWS)) {
        for (k, ty) in tys.iter().enumerate() {
            // Consecutive output rows often share source rows; reuse the horizontal pass.
            if cached[0] != Some(ty.i0) {
                if cached[1] == Some(ty.i0) {
                    std::mem::swap(&mut h0, &mut h1);
                    cached[0] = cached[1].take();
                } else {
                    horizontal(row(ty.i0), &xs, &mut h0);
                    cached[0] = Some(ty.i0);
                }
            }
            if cached[1] != Some(ty.i1) {
                horizontal(row(ty.i1), &xs, &mut h1);
                cached[1] = Some(ty.i1);
            }
            for (c, (s0, s1)) in h0.chunks_exact(nw).zip(h1.chunks_exact(nw)).enumerate() {
                let dst = if transposed {
                    &mut block[(k * 3 + c) * nw..][..nw]
                } else {
                    &mut out[c * plane + (v0 + k) * width..][..nw]
                };
                vertical(s0, s1, [ty.w0, ty.w1], norm, dst);
            }
        }
        if transposed {
            let rows = tys.len();
            for (c, plane_out) in out.chunks_exact_mut(plane).enumerate() {
                for (u, column) in plane_out.chunks_exact_mut(height).take(nw).enumerate() {
                    for (k, o) in column[v0..v0 + rows].iter_mut().enumerate() {
                        *o = block[(k * 3 + c) * nw + u];
                    }
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_the_reference_for_landscape_and_portrait() {
        let land = Canvas {
            x0: 0,
            y0: 0,
            width: 1000,
            height: 750,
        };
        let p = placement(&land, 640);
        assert_eq!((p.new_width, p.new_height), (640, 480));
        assert!((p.scale - 0.64).abs() < 1e-12);

        let port = Canvas {
            x0: 0,
            y0: 0,
            width: 333,
            height: 500,
        };
        let p = placement(&port, 640);
        assert_eq!((p.new_width, p.new_height), (426, 640));
    }

    #[test]
    fn identity_resize_copies_pixels_and_pads_outside_the_photo_with_black() {
        let mut img = RgbImage::new(4, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]);
        }
        let mut out = vec![0.0; 3 * 8 * 8];
        let p = fill_input(
            &img,
            &Canvas::whole(&img),
            4,
            [4, 4],
            false,
            [0.0, 1.0],
            &mut out[..48],
        );
        assert_eq!((p.new_width, p.new_height), (4, 4));
        assert_eq!(out[4 + 3], 30.0); // r at (x=3, y=1)
        assert_eq!(out[16 + 4 * 2 + 1], 20.0); // g at (x=1, y=2)

        // A canvas twice the photo, photo in its centre: corners are black.
        let canvas = Canvas {
            x0: -2,
            y0: -2,
            width: 8,
            height: 8,
        };
        fill_input(&img, &canvas, 8, [8, 8], false, [0.0, 1.0], &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[128 + 2 * 8 + 2], 7.0); // b at canvas (2,2) = photo (0,0)
        assert_eq!(out[128 + 8 + 1], 0.0); // b at canvas (1,1), outside the photo
        assert_eq!(out[64 + 3 * 8 + 2], 10.0); // g at photo (0,1)
        assert_eq!(out[128 + 7 * 8 + 7], 0.0);
    }

    /// The fixed-point resize one output value at a time, straight from the taps.
    fn naive(
        img: &RgbImage,
        canvas: &Canvas,
        size: usize,
        [width, height]: [usize; 2],
        out: &mut [f32],
    ) {
        let p = placement(canvas, size);
        let xs = taps(p.new_width, canvas.width, canvas.x0, img.width());
        let ys = taps(p.new_height, canvas.height, canvas.y0, img.height());
        let px = |x: Option<usize>, y: Option<usize>, c: usize| match (x, y) {
            (Some(x), Some(y)) => i32::from(img.get_pixel(x as u32, y as u32)[c]),
            _ => 0,
        };
        out.fill(0.0);
        for (v, ty) in ys.iter().enumerate() {
            for (u, tx) in xs.iter().enumerate() {
                for c in 0..3 {
                    let h = |y| px(tx.i0, y, c) * tx.w0 + px(tx.i1, y, c) * tx.w1;
                    let val =
                        (((ty.w0 * (h(ty.i0) >> 4)) >> 16) + ((ty.w1 * (h(ty.i1) >> 4)) >> 16) + 2)
                            >> 2;
                    out[c * width * height + v * width + u] = val.clamp(0, 255) as f32;
                }
            }
        }
    }

    #[test]
    fn resize_equals_the_fixed_point_definition_inside_and_past_the_photo_upright_or_transposed() {
        let mut img = RgbImage::new(97, 61);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let v = (x * 7919 + y * 104_729) % 256;
            *p = image::Rgb([v as u8, (v * 3 % 256) as u8, (255 - v) as u8]);
        }
        let canvases = [
            Canvas::whole(&img),
            Canvas {
                x0: -20,
                y0: -13,
                width: 137,
                height: 87,
            },
            Canvas {
                x0: 30,
                y0: 10,
                width: 40,
                height: 45,
            },
        ];
        for canvas in canvases {
            for size in [32, 64, 160] {
                // The square input, and a rectangle just larger than the resized canvas.
                let p = placement(&canvas, size);
                for dims in [[size, size], [p.new_width + 3, p.new_height + 1]] {
                    let [w, h] = dims;
                    let mut got = vec![f32::NAN; 3 * w * h];
                    let mut want = vec![0.0; 3 * w * h];
                    fill_input(&img, &canvas, size, dims, false, [0.0, 1.0], &mut got);
                    naive(&img, &canvas, size, dims, &mut want);
                    assert_eq!(got, want, "{canvas:?} at {size} into {dims:?}");
                    // Normalised as the detector's input, black padding included.
                    let mut normalised = vec![f32::NAN; 3 * w * h];
                    fill_input(
                        &img,
                        &canvas,
                        size,
                        dims,
                        false,
                        [127.5, 128.0],
                        &mut normalised,
                    );
                    let expected: Vec<f32> =
                        want.iter().map(|v| (v - 127.5) * (1.0 / 128.0)).collect();
                    assert_eq!(
                        normalised, expected,
                        "{canvas:?} at {size} into {dims:?}, normalised"
                    );

                    // Transposed: every plane is the upright one transposed.
                    let mut transposed = vec![f32::NAN; 3 * w * h];
                    fill_input(&img, &canvas, size, dims, true, [0.0, 1.0], &mut transposed);
                    for c in 0..3 {
                        for v in 0..h {
                            for u in 0..w {
                                assert_eq!(
                                    transposed[c * w * h + u * h + v],
                                    want[c * w * h + v * w + u],
                                    "{canvas:?} at {size} into {dims:?}, transposed ({c}, {v}, {u})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
