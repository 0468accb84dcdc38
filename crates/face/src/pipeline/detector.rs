//! SCRFD face detector (InsightFace), reproducing the reference pipeline (scripts/reference.py,
//! itself InsightFace's `SCRFD.detect` with a simpler letterbox and NMS).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;
use tract_onnx::prelude::*;

use crate::error::FaceError;
use crate::geometry::{nms, sort_largest_first, BBox, Detection};
use crate::ops::model::{optimise, output_shapes, output_slice, run, Layout, ModelFile, Plan};
use crate::pipeline::letterbox::{fill_input, placement, Canvas, Placement};
use crate::pipeline::tiling::{cut_by_tile_edge, layout, TilingConfig};
use crate::profile::{profile_plan, PlanProfile};

const STRIDES: [usize; 3] = [8, 16, 32];
/// Heights of the landscape inputs: multiples of the largest stride.
const SHAPE_STEP: usize = 32;
/// Rows of black the reference would have below the photo that a smaller input keeps.
const BLACK_MARGIN: usize = 32;
const INPUT_MEAN: f32 = 127.5;
const INPUT_STD: f32 = 128.0;

/// Per-call detection settings.
#[derive(Debug, Clone)]
pub struct DetectParams {
    pub threshold: f32,
    pub nms_iou: f32,
    pub tiling: TilingConfig,
    /// Canvas side relative to the photo for the retry when nothing is found (0 disables).
    pub retry_pad: f32,
}

/// Milliseconds spent per detection step, summed over all passes (whole photo, tiles, retry).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DetectTimings {
    pub preprocess_ms: f64,
    pub model_ms: f64,
    pub postprocess_ms: f64,
    pub passes: u32,
}

/// Which model outputs hold scores, boxes and landmarks for one stride.
#[derive(Debug, Clone, Copy)]
struct Head {
    stride: usize,
    scores: usize,
    boxes: usize,
    landmarks: usize,
    anchors: usize,
}

/// One input shape: its plan and where its outputs are.
struct Shaped {
    plan: Plan,
    /// Of the plan's input; a transposed plan takes the photo transposed, so its width runs
    /// along the photo's height.
    width: usize,
    height: usize,
    /// Kernels transposed (`transpose.rs`): input and output maps are transposed.
    transposed: bool,
    heads: Vec<Head>,
}

impl Shaped {
    fn load(
        file: &ModelFile,
        width: usize,
        height: usize,
        transposed: bool,
    ) -> Result<Shaped, FaceError> {
        let layout = Layout {
            transposed,
            channels_last: false,
        };
        let plan = optimise(file, &[1, 3, height, width], layout)?;
        let shapes = output_shapes(&plan, &file.path)?;
        let heads = find_heads(&shapes, width, height).map_err(|reason| FaceError::ModelLoad {
            path: file.path.clone(),
            reason,
        })?;
        Ok(Shaped {
            plan,
            width,
            height,
            transposed,
            heads,
        })
    }
}

/// A `size`-wide input shape, as it is or transposed, optimised the first time a photo needs
/// it: ~100 ms once per height and orientation, ~4 MB each (all 19 landscape heights at 640:
/// +77 MB next to the square's 20 MB; as much again for the transposed ones).
struct Rectangle {
    height: usize,
    transposed: bool,
    shaped: OnceLock<Result<Arc<Shaped>, String>>,
}

/// The detector runs on the smallest input that holds the letterboxed photo and 32 rows of
/// the black bar the reference would add ([`BLACK_MARGIN`]): the `size` x `size` square of the
/// reference, or a `size`-wide input whose height is a multiple of [`SHAPE_STEP`] (a 3:2
/// landscape photo at 640: 640x448). Portrait photos run transposed on such an input
/// (`transpose.rs`): tract's depthwise convolution ran portrait inputs slower than the square
/// (512x640: 44 ms against 36), landscape ones in proportion to their area (min of 40 runs, one
/// thread: 640x512 29 ms, 640x448 25, 640x384 21). Past the margin the network pads with zeros
/// where the reference has black; without the margin that moved biden.jpg's embedding to
/// 0.9985 cosine of the reference's, with it every fixture face stays within the reference
/// test's bounds (largest box deviation 0.24 px instead of 0.15).
pub struct Detector {
    main: Shapes,
    /// For the padded retry ([`retry_size`]).
    retry: Shapes,
}

/// The padded retry looks for a face that filled the photo, so after padding it still fills
/// about half the canvas: half the input size finds it at a quarter of the cost. Half of 640
/// is 320, where a face filling a padded 150x150 portrait is ~150 px tall.
fn retry_size(size: usize) -> usize {
    (size / 2 / SHAPE_STEP * SHAPE_STEP).max(MIN_SIZE)
}

const MIN_SIZE: usize = 160;

/// The input shapes of one detector size.
struct Shapes {
    file: ModelFile,
    size: usize,
    square: Arc<Shaped>,
    rectangles: Vec<Rectangle>,
}

impl Shapes {
    fn load(file: &ModelFile, size: usize) -> Result<Shapes, FaceError> {
        let square = Arc::new(Shaped::load(file, size, size, false)?);
        let rectangles = (1..)
            .map(|k| k * SHAPE_STEP)
            .take_while(|&height| height < size)
            .flat_map(|height| [false, true].map(|transposed| (height, transposed)))
            .map(|(height, transposed)| Rectangle {
                height,
                transposed,
                shaped: OnceLock::new(),
            })
            .collect();
        Ok(Shapes {
            file: file.clone(),
            size,
            square,
            rectangles,
        })
    }

    /// The smallest input holding a canvas letterboxed as `p`: landscape as it is, portrait
    /// transposed, else the square.
    fn shaped_for(&self, p: &Placement) -> Result<Arc<Shaped>, FaceError> {
        let portrait = p.new_height > p.new_width;
        // Along the plan's width and height.
        let (along_w, along_h) = if portrait {
            (p.new_height, p.new_width)
        } else {
            (p.new_width, p.new_height)
        };
        // Every rectangle is `size` wide, which holds `along_w`; the lowest that fits wins.
        debug_assert!(along_w <= self.size);
        let best = self
            .rectangles
            .iter()
            .filter(|r| r.transposed == portrait && r.height >= along_h + BLACK_MARGIN)
            .min_by_key(|r| r.height);
        let Some(rect) = best else {
            return Ok(self.square.clone());
        };
        let shaped = rect.shaped.get_or_init(|| {
            Shaped::load(&self.file, self.size, rect.height, rect.transposed)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        match shaped {
            Ok(shaped) => Ok(shaped.clone()),
            // A model whose layers do not all commute with transposition keeps the square.
            Err(_) if rect.transposed => Ok(self.square.clone()),
            Err(reason) => Err(FaceError::ModelLoad {
                path: self.file.path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// One pass over a window of the photo; detections in photo coordinates after NMS.
    fn detect_canvas(
        &self,
        img: &RgbImage,
        canvas: &Canvas,
        params: &DetectParams,
        timings: &mut DetectTimings,
    ) -> Result<Vec<Detection>, FaceError> {
        let t = Instant::now();
        let shaped = self.shaped_for(&placement(canvas, self.size))?;
        let (w, h) = (shaped.width, shaped.height);
        let mut tensor = Tensor::zero::<f32>(&[1, 3, h, w]).map_err(FaceError::inference)?;
        let placement = {
            let mut view = tensor
                .to_plain_array_view_mut::<f32>()
                .map_err(FaceError::inference)?;
            let buf = view
                .as_slice_mut()
                .ok_or_else(|| FaceError::Internal("fresh tensor is not contiguous".into()))?;
            // A transposed plan takes the photo transposed: upright it would be h wide, w high.
            let upright = if shaped.transposed { [h, w] } else { [w, h] };
            fill_input(
                img,
                canvas,
                self.size,
                upright,
                shaped.transposed,
                [INPUT_MEAN, INPUT_STD],
                buf,
            )
        };
        timings.preprocess_ms += ms_since(t);

        let t = Instant::now();
        let outputs = run(&shaped.plan, tensor)?;
        timings.model_ms += ms_since(t);

        let t = Instant::now();
        let mut dets = Vec::new();
        for head in &shaped.heads {
            decode_head(head, &shaped, &outputs, params.threshold, &mut dets)?;
        }
        // Back to photo pixels: undo the resize, then the window offset.
        // f64 as in the reference: at 6000 px an f32 division is off by ~1e-3 px.
        let scale = placement.scale;
        let (dx, dy) = (canvas.x0 as f64, canvas.y0 as f64);
        let back = |v: f32, offset: f64| (f64::from(v) / scale + offset) as f32;
        for d in &mut dets {
            let b = d.bbox;
            d.bbox = BBox {
                x1: back(b.x1, dx),
                y1: back(b.y1, dy),
                x2: back(b.x2, dx),
                y2: back(b.y2, dy),
            };
            for p in &mut d.landmarks {
                *p = [back(p[0], dx), back(p[1], dy)];
            }
        }
        let dets = nms(dets, params.nms_iou);
        timings.postprocess_ms += ms_since(t);
        timings.passes += 1;
        Ok(dets)
    }
}

impl Detector {
    /// Optimises the model for a `size` x `size` input (and the retry's smaller square) and
    /// works out which output is which from the output shapes ([1, N, 1|4|10], N = cells *
    /// anchors), so the ONNX output order does not matter. The rectangular inputs (see
    /// [`Detector`]) are optimised on first use.
    pub(crate) fn load(file: &ModelFile, size: u32) -> Result<Detector, FaceError> {
        if (size as usize) < MIN_SIZE || !size.is_multiple_of(SHAPE_STEP as u32) {
            return Err(FaceError::InvalidConfig(format!(
                "detector size {size} must be a multiple of 32, at least {MIN_SIZE}"
            )));
        }
        let size = size as usize;
        Ok(Detector {
            main: Shapes::load(file, size)?,
            retry: Shapes::load(file, retry_size(size))?,
        })
    }

    pub fn input_size(&self) -> u32 {
        self.main.size as u32
    }

    pub(crate) fn profile(&self, runs: usize) -> Result<PlanProfile, FaceError> {
        let size = self.main.size;
        profile_plan(&self.main.square.plan, &[1, 3, size, size], runs)
    }

    /// Faces in the photo, largest first.
    pub fn detect(
        &self,
        img: &RgbImage,
        params: &DetectParams,
        timings: &mut DetectTimings,
    ) -> Result<Vec<Detection>, FaceError> {
        let (w, h) = img.dimensions();
        let mut dets = self
            .main
            .detect_canvas(img, &Canvas::whole(img), params, timings)?;

        let whole_scale = self.main.size as f64 / f64::from(w.max(h));
        if params.tiling.applies_to(w, h) && params.tiling.worth_tiling(&dets, whole_scale) {
            for tile in layout(w, h, &params.tiling) {
                let found = self.main.detect_canvas(img, &tile, params, timings)?;
                dets.extend(
                    found
                        .into_iter()
                        .filter(|d| !cut_by_tile_edge(d, &tile, w, h)),
                );
            }
            let t = Instant::now();
            dets = nms(dets, params.nms_iou);
            timings.postprocess_ms += ms_since(t);
        }

        if dets.is_empty() && params.retry_pad > 1.0 {
            // Close-ups: SCRFD misses faces that fill the frame. Shrink them inside a black
            // border and look again, on the smaller input (`retry_size`).
            let pad_x = ((w as f32 * (params.retry_pad - 1.0)) / 2.0).round() as u32;
            let pad_y = ((h as f32 * (params.retry_pad - 1.0)) / 2.0).round() as u32;
            let canvas = Canvas {
                x0: -i64::from(pad_x),
                y0: -i64::from(pad_y),
                width: w + 2 * pad_x,
                height: h + 2 * pad_y,
            };
            dets = self.retry.detect_canvas(img, &canvas, params, timings)?;
        }
        sort_largest_first(&mut dets);
        Ok(dets)
    }
}

/// Anchor decoding: centres on a grid of `stride`, `anchors` per cell; box = centre -/+
/// distance * stride, landmark = centre + offset * stride (input pixel units).
fn decode_head(
    head: &Head,
    shaped: &Shaped,
    outputs: &TVec<TValue>,
    threshold: f32,
    out: &mut Vec<Detection>,
) -> Result<(), FaceError> {
    let scores = output_slice(&outputs[head.scores])?;
    let boxes = output_slice(&outputs[head.boxes])?;
    let kps = output_slice(&outputs[head.landmarks])?;
    let fw = shaped.width / head.stride;
    let st = head.stride as f32;
    let n = scores.len();
    if boxes.len() != n * 4 || kps.len() != n * 10 {
        return Err(FaceError::Inference(
            "detector output sizes disagree".into(),
        ));
    }
    for (i, &score) in scores.iter().enumerate() {
        if score < threshold {
            continue;
        }
        let cell = i / head.anchors;
        let (column, row) = (cell % fw, cell / fw);
        // A transposed map's rows run along the photo's width.
        let (gx, gy) = if shaped.transposed {
            (row, column)
        } else {
            (column, row)
        };
        let cx = (gx * head.stride) as f32;
        let cy = (gy * head.stride) as f32;
        let b = &boxes[i * 4..i * 4 + 4];
        let k = &kps[i * 10..i * 10 + 10];
        let mut landmarks = [[0.0f32; 2]; 5];
        for (j, p) in landmarks.iter_mut().enumerate() {
            *p = [cx + k[2 * j] * st, cy + k[2 * j + 1] * st];
        }
        out.push(Detection {
            bbox: BBox {
                x1: cx - b[0] * st,
                y1: cy - b[1] * st,
                x2: cx + b[2] * st,
                y2: cy + b[3] * st,
            },
            landmarks,
            score,
        });
    }
    Ok(())
}

fn find_heads(shapes: &[Vec<usize>], width: usize, height: usize) -> Result<Vec<Head>, String> {
    let described = || format!("{shapes:?}");
    let mut heads = Vec::new();
    for stride in STRIDES {
        let cells = (width / stride) * (height / stride);
        let find = |channels: usize| -> Option<(usize, usize)> {
            shapes.iter().enumerate().find_map(|(idx, s)| {
                let (n, c) = match s.as_slice() {
                    [1, n, c] | [n, c] => (*n, *c),
                    _ => return None,
                };
                (c == channels && n % cells == 0 && (1..=3).contains(&(n / cells)))
                    .then_some((idx, n / cells))
            })
        };
        let (Some((scores, anchors)), Some((boxes, a2)), Some((landmarks, a3))) =
            (find(1), find(4), find(10))
        else {
            return Err(format!(
                "no SCRFD outputs for stride {stride} with 5 landmarks among {}",
                described()
            ));
        };
        if anchors != a2 || anchors != a3 {
            return Err(format!("inconsistent anchors in outputs {}", described()));
        }
        heads.push(Head {
            stride,
            scores,
            boxes,
            landmarks,
            anchors,
        });
    }
    Ok(heads)
}

pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_found_by_shape_whatever_the_output_order() {
        let shapes = vec![
            vec![1, 12800, 10],
            vec![1, 800, 1],
            vec![1, 3200, 4],
            vec![1, 12800, 1],
            vec![1, 800, 4],
            vec![1, 3200, 1],
            vec![1, 12800, 4],
            vec![1, 3200, 10],
            vec![1, 800, 10],
        ];
        let heads = find_heads(&shapes, 640, 640).expect("heads");
        assert_eq!(heads[0].stride, 8);
        assert_eq!(
            (heads[0].scores, heads[0].boxes, heads[0].landmarks),
            (3, 6, 0)
        );
        assert_eq!(heads[0].anchors, 2);
        assert_eq!(
            (heads[2].scores, heads[2].boxes, heads[2].landmarks),
            (1, 4, 8)
        );
        assert!(find_heads(&shapes[..8], 640, 640).is_err());
    }
}
