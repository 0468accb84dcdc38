//! Tiled detection for large photos: at 640x640 a 4000-pixel group photo is shrunk 6x and its
//! small faces fall below what SCRFD can see. Overlapping tiles are run at close to native
//! resolution in addition to the whole photo, and everything is merged by NMS.

use serde::Serialize;

use crate::geometry::Detection;
use crate::pipeline::letterbox::Canvas;

#[derive(Debug, Clone, Serialize)]
pub struct TilingConfig {
    pub enabled: bool,
    /// Photos whose longer side is at least this many pixels are tiled.
    pub min_long_side: u32,
    /// Side of a square tile in photo pixels; each tile is resized to the detector size.
    pub tile_size: u32,
    /// Minimum overlap between neighbouring tiles in photo pixels. Faces up to about this size
    /// are seen whole by at least one tile; larger ones by the whole-photo pass.
    pub overlap: u32,
    /// Upper bound on tiles per photo (the cost grows linearly); beyond it tiles get larger.
    pub max_tiles: usize,
    /// Tiles are skipped when the whole-photo pass found faces and even the smallest is at
    /// least this many pixels (shorter box side) at detector input: portraits and close
    /// groups gain nothing from tiles. 0 always tiles.
    pub skip_if_smallest_face_px: u32,
}

impl Default for TilingConfig {
    fn default() -> Self {
        TilingConfig {
            enabled: true,
            // Measured (faceeval groups <= 2280 px, fixtures up to 3000 px): tiles found no
            // labelled face the whole-photo pass missed, at 5-16x the detection time. They pay
            // off on camera-resolution event photos, where 640 px shrinks faces 6-9x.
            min_long_side: 3200,
            tile_size: 1024,
            overlap: 192,
            max_tiles: 12,
            skip_if_smallest_face_px: 48,
        }
    }
}

impl TilingConfig {
    pub fn applies_to(&self, width: u32, height: u32) -> bool {
        self.enabled && width.max(height) >= self.min_long_side && self.tile_size > self.overlap
    }

    /// Whether tiles can still add faces after the whole-photo pass found `found`, which was
    /// run at `scale` detector pixels per photo pixel.
    pub fn worth_tiling(&self, found: &[Detection], scale: f64) -> bool {
        if self.skip_if_smallest_face_px == 0 || found.is_empty() {
            return true;
        }
        let smallest = found
            .iter()
            .map(|d| f64::from(d.bbox.min_side()))
            .fold(f64::INFINITY, f64::min);
        smallest * scale < f64::from(self.skip_if_smallest_face_px)
    }
}

/// Tile origins along one axis: `n` windows of `tile` pixels spread evenly over `len`, each
/// overlapping its neighbour by at least `overlap`.
fn axis_tiles(len: u32, tile: u32, overlap: u32) -> Vec<(u32, u32)> {
    if len <= tile {
        return vec![(0, len)];
    }
    let step = tile - overlap;
    let n = (len - overlap).div_ceil(step);
    let span = len - tile;
    (0..n)
        .map(|i| {
            let start = (u64::from(span) * u64::from(i) / u64::from(n - 1)) as u32;
            (start, tile)
        })
        .collect()
}

/// Square-ish tiles covering the photo; grows the tile size until at most `max_tiles` remain.
pub fn layout(width: u32, height: u32, cfg: &TilingConfig) -> Vec<Canvas> {
    let mut tile = cfg.tile_size.max(cfg.overlap + 1);
    loop {
        let xs = axis_tiles(width, tile, cfg.overlap);
        let ys = axis_tiles(height, tile, cfg.overlap);
        if xs.len() * ys.len() <= cfg.max_tiles.max(1) || tile >= width.max(height) {
            return ys
                .iter()
                .flat_map(|&(y0, h)| {
                    xs.iter().map(move |&(x0, w)| Canvas {
                        x0: i64::from(x0),
                        y0: i64::from(y0),
                        width: w,
                        height: h,
                    })
                })
                .collect();
        }
        tile = tile + tile / 4;
    }
}

/// A tile sees only part of a face cut by its border; such detections are dropped (the
/// neighbouring tile or the whole-photo pass has the full face). Borders on the photo's own
/// edge do not count: a face cut there is cut for every pass.
pub fn cut_by_tile_edge(det: &Detection, tile: &Canvas, width: u32, height: u32) -> bool {
    const MARGIN: f32 = 2.0;
    let (tx0, ty0) = (tile.x0 as f32, tile.y0 as f32);
    let (tx1, ty1) = (tx0 + tile.width as f32, ty0 + tile.height as f32);
    let b = &det.bbox;
    (tile.x0 > 0 && b.x1 <= tx0 + MARGIN)
        || (tile.y0 > 0 && b.y1 <= ty0 + MARGIN)
        || (tx1 < width as f32 && b.x2 >= tx1 - MARGIN)
        || (ty1 < height as f32 && b.y2 >= ty1 - MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_photo_with_the_requested_overlap() {
        let cfg = TilingConfig {
            max_tiles: 100,
            ..TilingConfig::default()
        };
        let tiles = layout(4000, 3000, &cfg);
        assert!(tiles.len() > 1);
        let right = tiles.iter().map(|t| t.x0 + i64::from(t.width)).max();
        let bottom = tiles.iter().map(|t| t.y0 + i64::from(t.height)).max();
        assert_eq!(right, Some(4000));
        assert_eq!(bottom, Some(3000));
        let mut xs: Vec<i64> = tiles.iter().map(|t| t.x0).collect();
        xs.sort();
        xs.dedup();
        for pair in xs.windows(2) {
            assert!(pair[0] + i64::from(cfg.tile_size) - pair[1] >= i64::from(cfg.overlap));
        }
    }

    #[test]
    fn tile_count_is_capped_by_growing_tiles() {
        let cfg = TilingConfig {
            max_tiles: 4,
            ..TilingConfig::default()
        };
        let tiles = layout(6000, 4000, &cfg);
        assert!(tiles.len() <= 4, "{} tiles", tiles.len());
    }
}
