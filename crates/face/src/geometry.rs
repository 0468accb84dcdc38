//! Boxes, detections and non-maximum suppression, in source-image pixel coordinates.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// The smaller side in pixels, the size that decides whether a face is usable.
    pub fn min_side(&self) -> f32 {
        self.width().min(self.height())
    }

    /// Plain intersection over union.
    pub fn iou(&self, other: &BBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    pub fn translate(&self, dx: f32, dy: f32) -> BBox {
        BBox {
            x1: self.x1 + dx,
            y1: self.y1 + dy,
            x2: self.x2 + dx,
            y2: self.y2 + dy,
        }
    }

    /// `[x1, y1, x2, y2]`: how the API shows a box and the database stores it.
    pub fn corners(&self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }
}

/// Stored values that are not a box's four coordinates.
#[derive(Debug, thiserror::Error)]
#[error("a face box is four numbers [x1, y1, x2, y2], not {0}")]
pub struct NotABox(pub usize);

/// A box read back from its four stored coordinates; anything else is refused, never padded.
impl TryFrom<Vec<f32>> for BBox {
    type Error = NotABox;

    fn try_from(v: Vec<f32>) -> Result<Self, Self::Error> {
        match v[..] {
            [x1, y1, x2, y2] => Ok(BBox { x1, y1, x2, y2 }),
            _ => Err(NotABox(v.len())),
        }
    }
}

/// One detected face before alignment: box, 5 landmarks (left eye, right eye, nose, left and
/// right mouth corner, as seen in the image) and the detector's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub bbox: BBox,
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

impl Detection {
    pub fn translate(&self, dx: f32, dy: f32) -> Detection {
        let mut landmarks = self.landmarks;
        for p in &mut landmarks {
            p[0] += dx;
            p[1] += dy;
        }
        Detection {
            bbox: self.bbox.translate(dx, dy),
            landmarks,
            score: self.score,
        }
    }
}

/// Greedy NMS: highest score first (stable for ties), drop every later box overlapping a kept
/// one by more than `iou_threshold` (plain IoU, no `+1`). Returns the kept detections in
/// descending score order.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len().min(256));
    for d in dets {
        if keep.iter().all(|k| k.bbox.iou(&d.bbox) <= iou_threshold) {
            keep.push(d);
        }
    }
    keep
}

/// Largest box first, ties by higher score; the order every caller of the engine sees.
pub fn sort_largest_first(dets: &mut [Detection]) {
    dets.sort_by(|a, b| {
        b.bbox
            .area()
            .total_cmp(&a.bbox.area())
            .then(b.score.total_cmp(&a.score))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox { x1, y1, x2, y2 },
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn nms_drops_overlapping_lower_score_boxes_and_keeps_distant_ones() {
        let kept = nms(
            vec![
                det(0.0, 0.0, 10.0, 10.0, 0.8),
                det(1.0, 1.0, 11.0, 11.0, 0.9),
                det(50.0, 50.0, 60.0, 60.0, 0.7),
            ],
            0.4,
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.7);
    }

    #[test]
    fn iou_of_identical_boxes_is_one_and_of_disjoint_boxes_zero() {
        let a = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 4.0,
            y2: 4.0,
        };
        let b = a.translate(10.0, 0.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&b), 0.0);
    }

    #[test]
    fn a_stored_box_is_exactly_four_numbers() {
        let b = BBox::try_from(vec![1.0, 2.0, 30.0, 40.0]).expect("four numbers");
        assert_eq!(b.corners(), [1.0, 2.0, 30.0, 40.0]);
        for wrong in [vec![], vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0, 4.0, 5.0]] {
            let n = wrong.len();
            assert_eq!(BBox::try_from(wrong).map_err(|e| e.0).err(), Some(n));
        }
    }
}
