//! Fuzz-style property tests of the engine's entry point (decode, then detect, align, embed) on
//! mutated real images: truncated, overwritten, spliced, with forged header dimensions, or
//! random bytes behind a format's magic number. Each input must end in faces or in a client
//! error (never a panic, never a server-side error), and the thread decoding it must never hold
//! more memory than the pixel limit allows. Fixed seed, bounded cases: the same inputs in every
//! run, so a failure reproduces.

use std::cell::{Cell, RefCell};
use std::io::Cursor;
use std::sync::{Arc, LazyLock};

use image::{DynamicImage, ImageFormat};
use proptest::prelude::*;

use crate::fuzzing::{peak_bytes, runner};
use crate::pipeline::decode::{decode_image, DecodeLimits};
use crate::pipeline::engine::{AnalyzeOptions, EngineConfig, FaceEngine};

/// Small limits make "bounded" checkable: nothing may allocate as if an image were larger.
const MAX_PIXELS: u64 = 1_000_000;
const MAX_BYTES: usize = 4 << 20;

/// The repository root, where the models and test photos are fetched to.
fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static ENGINE: LazyLock<Arc<FaceEngine>> = LazyLock::new(|| {
    let mut cfg = EngineConfig::new(
        root().join("models/scrfd_500m_bnkps.onnx"),
        root().join("models/w600k_mbf.onnx"),
    );
    cfg.max_pixels = MAX_PIXELS;
    cfg.max_bytes = MAX_BYTES;
    Arc::new(FaceEngine::load(cfg).expect("models load"))
});

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode seed");
    out.into_inner()
}

/// Valid images of every accepted format (and one refused format), from a real face photo.
static SEEDS: LazyLock<Vec<(&'static str, Vec<u8>)>> = LazyLock::new(|| {
    let jpeg = std::fs::read(root().join("tests/fixtures/photos/yaoming.jpg"))
        .expect("yaoming.jpg (run scripts/fetch-fixtures.sh)");
    let face = image::load_from_memory(&jpeg).expect("decode seed");
    let small = face.resize(96, 96, image::imageops::FilterType::Triangle);
    vec![
        ("jpeg", jpeg),
        ("png-rgb8", encode(&small, ImageFormat::Png)),
        (
            "png-la16",
            encode(
                &DynamicImage::ImageLumaA16(small.to_luma_alpha16()),
                ImageFormat::Png,
            ),
        ),
        (
            "webp-lossless",
            encode(
                &DynamicImage::ImageRgba8(small.to_rgba8()),
                ImageFormat::WebP,
            ),
        ),
        ("gif", encode(&small, ImageFormat::Gif)),
    ]
});

const MAGIC: &[&[u8]] = &[
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"GIF89a",
    b"",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Cut at this per-mille of the length.
    Truncate(u16),
    /// Overwrite bytes (positions taken modulo the length).
    Overwrite(Vec<(usize, u8)>),
    /// Overwrite bytes among the first 40, where every format keeps its dimensions.
    Header(Vec<(usize, u8)>),
    /// Overwrite bytes at these per-mille positions of the length.
    Body(Vec<(u16, u8)>),
    /// Insert bytes at a position (modulo the length).
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u16..1000).prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..24).prop_map(Mutation::Overwrite),
        prop::collection::vec((0usize..40, any::<u8>()), 1..6).prop_map(Mutation::Header),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    match m {
        Mutation::Truncate(permille) => bytes.truncate(bytes.len() * *permille as usize / 1000),
        Mutation::Overwrite(edits) | Mutation::Header(edits) => {
            let n = bytes.len();
            for (at, b) in edits {
                bytes[at % n] = *b;
            }
        }
        Mutation::Body(edits) => {
            let n = bytes.len();
            for (permille, b) in edits {
                bytes[n * *permille as usize / 1000] = *b;
            }
        }
        Mutation::Insert(at, extra) => {
            let at = at % bytes.len();
            bytes.splice(at..at, extra.iter().copied());
        }
    }
    bytes
}

/// Overwrites in the second half of the file: compressed pixel data, which decoders must
/// survive without failing the whole image in most cases.
fn body_damage() -> impl Strategy<Value = Mutation> {
    prop::collection::vec((500u16..990, any::<u8>()), 1..4).prop_map(Mutation::Body)
}

fn mutated(m: impl Strategy<Value = Vec<Mutation>>) -> impl Strategy<Value = (String, Vec<u8>)> {
    (0..SEEDS.len(), m).prop_map(|(i, ms)| {
        let (name, seed) = &SEEDS[i];
        let bytes = ms.iter().fold(seed.clone(), apply);
        (format!("{name} {ms:?}"), bytes)
    })
}

/// A hostile input: a mutated seed, or random bytes behind a magic number. A share of lightly
/// damaged seeds keeps the decoders' and the detector's inner paths covered, not only the
/// early refusals.
fn hostile_input() -> impl Strategy<Value = (String, Vec<u8>)> {
    prop_oneof![
        4 => mutated(prop::collection::vec(mutation(), 1..4)),
        3 => mutated(prop::collection::vec(body_damage(), 1..2)),
        1 => mutated(Just(Vec::new())),
        1 => (0..MAGIC.len(), prop::collection::vec(any::<u8>(), 0..2048)).prop_map(|(i, tail)| {
            let mut bytes = MAGIC[i].to_vec();
            bytes.extend(tail);
            (format!("magic {i} + random"), bytes)
        }),
    ]
}

/// Most memory one decode may hold: the decoder's own frame (up to 4 channels of 16 bits) and
/// the RGB8 copy for the largest accepted image, plus the input and fixed overheads.
fn decode_budget(input_len: usize) -> usize {
    (MAX_PIXELS as usize) * (8 + 3) + 2 * input_len + (8 << 20)
}

#[test]
fn hostile_bytes_never_panic_the_decoder_nor_allocate_past_the_pixel_limit() {
    let limits = DecodeLimits {
        max_pixels: MAX_PIXELS,
        max_bytes: MAX_BYTES,
    };
    let most = Cell::new(0usize);
    let outcomes = RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    let result = runner(768).run(&hostile_input(), |(what, bytes)| {
        let (result, peak) = peak_bytes(|| decode_image(&bytes, &limits));
        most.set(most.get().max(peak));
        prop_assert!(
            peak <= decode_budget(bytes.len()),
            "{what}: decoding held {peak} bytes"
        );
        match result {
            Ok(img) => {
                prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= MAX_PIXELS);
                *outcomes.borrow_mut().entry("decoded").or_default() += 1;
            }
            Err(e) => {
                prop_assert!(e.is_client_error(), "{what}: {e:?} is not a client error");
                *outcomes.borrow_mut().entry(e.code()).or_default() += 1;
            }
        }
        Ok(())
    });
    let (outcomes, most) = (outcomes.into_inner(), most.get());
    println!("decoder fuzz: {outcomes:?}, most memory held {most} bytes");
    if let Err(e) = result {
        panic!("{e}");
    }
    // The suite must exercise both paths, or it proves nothing.
    assert!(
        outcomes.get("decoded").copied().unwrap_or(0) > 50,
        "{outcomes:?}"
    );
    assert!(outcomes.len() > 2, "{outcomes:?}");
}

#[test]
fn hostile_bytes_through_the_whole_pipeline_end_in_faces_or_a_client_error() {
    let engine = ENGINE.clone();
    let opts = AnalyzeOptions::default();
    let analysed = Cell::new(0usize);
    let result = runner(48).run(&hostile_input(), |(what, bytes)| {
        match engine.analyze(&bytes, &opts) {
            Ok(a) => {
                analysed.set(analysed.get() + 1);
                for f in &a.faces {
                    prop_assert!(f.bbox.x1.is_finite() && f.bbox.y2.is_finite(), "{what}");
                    if let Some(e) = &f.embedding {
                        let norm: f32 = e.as_slice().iter().map(|v| v * v).sum();
                        prop_assert!((norm - 1.0).abs() < 1e-3, "{what}: norm {norm}");
                    }
                }
            }
            Err(e) => prop_assert!(e.is_client_error(), "{what}: {e:?}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let analysed = analysed.get();
    assert!(analysed > 5, "only {analysed} inputs reached detection");
}
