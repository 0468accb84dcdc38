//! Photo bytes to an upright RGB8 image, refusing oversized input before allocating pixels.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use crate::error::FaceError;

pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
pub const DEFAULT_MAX_BYTES: usize = 30 * 1024 * 1024;

/// Bytes per decoded pixel in the worst case we accept (16-bit RGBA); bounds the decoder's own
/// buffers through `image::Limits::max_alloc`.
const MAX_BYTES_PER_PIXEL: u64 = 8;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DecodeLimits {
    /// Largest width x height accepted, read from the header before decoding.
    pub max_pixels: u64,
    /// Largest encoded payload accepted.
    pub max_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Decodes JPEG, PNG or WebP, applies the EXIF orientation and converts to 8-bit RGB
/// (grayscale is replicated, 16-bit is scaled down, alpha is dropped like OpenCV's
/// `IMREAD_COLOR`, CMYK JPEG is converted by the decoder).
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, FaceError> {
    if bytes.is_empty() {
        return Err(FaceError::InvalidImage("no data".into()));
    }
    if bytes.len() > limits.max_bytes {
        return Err(FaceError::PayloadTooLarge {
            bytes: bytes.len(),
            max_bytes: limits.max_bytes,
        });
    }
    let format = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg && !ends_like_a_jpeg(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and reports success; an upload that
        // lost its end is a failed upload, not a photo.
        return Err(FaceError::InvalidImage(
            "truncated JPEG data (no end-of-image marker)".into(),
        ));
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image_limits(limits));
    // For PNG and WebP this reads only the header; JPEG parses its headers. No pixel buffer yet.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, format))?;

    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    // A broken EXIF block must not make an otherwise good photo fail.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);

    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, format))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Whether the JPEG reaches its end-of-image marker. Walks the marker segments by their lengths
/// (so an EOI inside an EXIF thumbnail does not count) and the entropy-coded scans, where an FF
/// byte is always followed by 00 or a restart marker unless a real marker starts.
fn ends_like_a_jpeg(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            0xD9 => return true,
            // Fill bytes, and markers without a length.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
                if marker == 0xDA {
                    // Start of scan: skip the compressed data up to the next real marker.
                    while i + 1 < bytes.len() {
                        let real_marker =
                            bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7);
                        if real_marker {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
    false
}

/// Reads only the header: format and declared size. Cheap; used to reject early.
pub fn probe_dimensions(bytes: &[u8], limits: &DecodeLimits) -> Result<(u32, u32), FaceError> {
    if bytes.is_empty() {
        return Err(FaceError::InvalidImage("no data".into()));
    }
    let format = sniff_format(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image_limits(limits));
    let decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, format))?;
    Ok(decoder.dimensions())
}

fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, FaceError> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => Ok(f),
        Ok(other) => Err(FaceError::UnsupportedFormat(format_name(other))),
        // Bytes that are no image at all (a text file named .jpg) are a bad upload, not an
        // image format we chose not to support.
        Err(_) => Err(FaceError::InvalidImage(
            "not a JPEG, PNG or WebP image".into(),
        )),
    }
}

fn format_name(format: ImageFormat) -> String {
    format
        .extensions_str()
        .first()
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("{format:?}").to_lowercase())
}

fn image_limits(limits: &DecodeLimits) -> image::Limits {
    let mut l = image::Limits::default();
    // Strict per-side limits let decoders refuse absurd headers on their own, before ours.
    let side = limits.max_pixels.min(u64::from(u32::MAX)) as u32;
    l.max_image_width = Some(side);
    l.max_image_height = Some(side);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
    l
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), FaceError> {
    if width == 0 || height == 0 {
        return Err(FaceError::InvalidImage(format!(
            "the header declares an empty {width}x{height} image"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(FaceError::ImageTooLarge {
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

fn map_image_error(err: ImageError, format: ImageFormat) -> FaceError {
    let name = format_name(format);
    match err {
        ImageError::Limits(e) => {
            // The decoder refused before our own check could read the size: say so plainly.
            FaceError::InvalidImage(format!("{name} image exceeds decoding limits ({e})"))
        }
        ImageError::Unsupported(e) => FaceError::UnsupportedFormat(format!("{name}: {e}")),
        ImageError::Decoding(e) => FaceError::InvalidImage(format!("corrupt {name} data: {e}")),
        ImageError::IoError(e) => FaceError::InvalidImage(format!("truncated {name} data: {e}")),
        other => FaceError::InvalidImage(format!("{name}: {other}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    pub(crate) fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).expect("encode");
        buf.into_inner()
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A 60-byte PNG whose header declares `w` x `h` RGB pixels: a decompression bomb.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png_chunk(&mut out, b"IHDR", &ihdr);
        // zlib stream of a few zero bytes; the decoder must never get this far.
        png_chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
        );
        png_chunk(&mut out, b"IEND", &[]);
        out
    }

    /// A baseline JPEG with four components (Adobe CMYK), 16x16, every block DC-only with the
    /// same value: the image crate's encoder cannot write CMYK, so it is assembled by hand.
    /// One Huffman code per table: DC category 0 and AC end-of-block, both the 1-bit code `0`.
    fn cmyk_jpeg() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        // APP14 Adobe, transform 0: components are CMYK as stored.
        j.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x0E]);
        j.extend_from_slice(b"Adobe");
        j.extend_from_slice(&[0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00]);
        // DQT: table 0, all ones.
        j.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
        j.extend_from_slice(&[1u8; 64]);
        // SOF0: 8-bit, 16x16, 4 components, 1x1 sampling, quant table 0.
        j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00, 0x10, 0x00, 0x10, 0x04]);
        for id in 1..=4u8 {
            j.extend_from_slice(&[id, 0x11, 0x00]);
        }
        // DHT: DC table 0 and AC table 0, one 1-bit code each (symbol 0).
        for class in [0x00u8, 0x10] {
            j.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 1]);
            j.extend_from_slice(&[0u8; 15]);
            j.push(0);
        }
        // SOS: 4 components, tables 0/0, full spectral range.
        j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0E, 0x04]);
        for id in 1..=4u8 {
            j.extend_from_slice(&[id, 0x00]);
        }
        j.extend_from_slice(&[0x00, 0x3F, 0x00]);
        // 4 MCUs x 4 blocks x 2 bits, all zero: 4 bytes.
        j.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 200]))
    }

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn invalid_inputs_get_the_right_error() {
        let jpeg = encode(
            &DynamicImage::ImageRgb8(gradient(64, 48)),
            ImageFormat::Jpeg,
        );
        let mut corrupt_png = encode(&DynamicImage::ImageRgb8(gradient(64, 48)), ImageFormat::Png);
        // Flip bytes inside the first IDAT payload: its CRC no longer matches.
        let idat = corrupt_png
            .windows(4)
            .position(|w| w == b"IDAT")
            .expect("IDAT chunk");
        for b in &mut corrupt_png[idat + 8..idat + 16] {
            *b ^= 0x5A;
        }
        let gif = encode(
            &DynamicImage::ImageRgba8(RgbaImage::new(4, 4)),
            ImageFormat::Gif,
        );
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0u8; 60]);

        type Check = fn(&FaceError) -> bool;
        let invalid: Check = |e| matches!(e, FaceError::InvalidImage(_));
        let unsupported: Check = |e| matches!(e, FaceError::UnsupportedFormat(_));
        let too_large: Check = |e| matches!(e, FaceError::ImageTooLarge { .. });
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("zero bytes", vec![], invalid),
            ("text", b"hello, this is not a photo\n".to_vec(), invalid),
            ("truncated jpeg", jpeg[..jpeg.len() / 3].to_vec(), invalid),
            ("jpeg header only", jpeg[..200].to_vec(), invalid),
            ("corrupt png chunk", corrupt_png, invalid),
            (
                "png declaring 50000x50000",
                png_declaring(50_000, 50_000),
                too_large,
            ),
            ("gif", gif, unsupported),
            ("bmp", bmp, unsupported),
            ("png declaring 0x10", png_declaring(0, 10), invalid),
        ];
        for (name, bytes, check) in cases {
            match decode_image(&bytes, &limits()) {
                Ok(img) => panic!("{name}: decoded as {:?}", img.dimensions()),
                Err(e) => assert!(check(&e), "{name}: wrong error {e:?}"),
            }
        }
    }

    use image::RgbaImage;

    #[test]
    fn bomb_is_refused_from_the_header_even_with_a_huge_byte_limit() {
        let l = DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: usize::MAX,
        };
        let bomb = png_declaring(50_000, 50_000);
        let (result, held) = crate::fuzzing::peak_bytes(|| decode_image(&bomb, &l));
        // 7.5 GB as RGB: refused before a single row is allocated.
        assert!(held < 1 << 20, "decoding the bomb held {held} bytes");
        let err = result.expect_err("bomb");
        match err {
            FaceError::ImageTooLarge {
                width,
                height,
                pixels,
                max_pixels,
            } => {
                assert_eq!((width, height), (50_000, 50_000));
                assert_eq!(pixels, 2_500_000_000);
                assert_eq!(max_pixels, DEFAULT_MAX_PIXELS);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            probe_dimensions(&png_declaring(50_000, 50_000), &l).expect("header"),
            (50_000, 50_000)
        );
    }

    #[test]
    fn payload_and_pixel_limits_are_configurable() {
        let png = encode(&DynamicImage::ImageRgb8(gradient(64, 48)), ImageFormat::Png);
        let small_bytes = DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: 100,
        };
        assert!(matches!(
            decode_image(&png, &small_bytes),
            Err(FaceError::PayloadTooLarge { max_bytes: 100, .. })
        ));
        let small_pixels = DecodeLimits {
            max_pixels: 64 * 48 - 1,
            max_bytes: DEFAULT_MAX_BYTES,
        };
        assert!(matches!(
            decode_image(&png, &small_pixels),
            Err(FaceError::ImageTooLarge { .. })
        ));
    }

    #[test]
    fn supported_pixel_formats_decode_to_rgb8() {
        let rgb = gradient(20, 10);
        let gray = ImageBuffer::<Luma<u8>, _>::from_fn(20, 10, |x, _| Luma([(x * 10) as u8]));
        let rgb16 =
            ImageBuffer::<Rgb<u16>, _>::from_fn(20, 10, |x, _| Rgb([(x * 3000) as u16, 65535, 0]));
        let rgba = ImageBuffer::<Rgba<u8>, _>::from_fn(20, 10, |x, _| Rgba([x as u8, 50, 60, 0]));

        let one = decode_image(
            &encode(&DynamicImage::ImageRgb8(gradient(1, 1)), ImageFormat::Png),
            &limits(),
        )
        .expect("1x1");
        assert_eq!(one.dimensions(), (1, 1));

        let g = decode_image(
            &encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png),
            &limits(),
        )
        .expect("gray png");
        assert_eq!(g.get_pixel(3, 4), &Rgb([30, 30, 30]));

        let g16 = decode_image(
            &encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png),
            &limits(),
        )
        .expect("16-bit png");
        assert_eq!(g16.get_pixel(10, 0)[1], 255);
        assert!((i32::from(g16.get_pixel(10, 0)[0]) - 117).abs() <= 1);

        let a = decode_image(
            &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            &limits(),
        )
        .expect("rgba png");
        assert_eq!(a.get_pixel(7, 2), &Rgb([7, 50, 60]));

        let webp = decode_image(
            &encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::WebP),
            &limits(),
        )
        .expect("lossless webp");
        assert_eq!(webp, rgb);

        let gray_jpeg = decode_image(
            &encode(
                &DynamicImage::ImageLuma8(ImageBuffer::from_pixel(16, 16, Luma([90u8]))),
                ImageFormat::Jpeg,
            ),
            &limits(),
        )
        .expect("gray jpeg");
        let p = gray_jpeg.get_pixel(5, 5);
        assert!(p[0] == p[1] && p[1] == p[2] && (i32::from(p[0]) - 90).abs() <= 2);
    }

    #[test]
    fn cmyk_jpeg_decodes_to_uniform_rgb() {
        let img = decode_image(&cmyk_jpeg(), &limits()).expect("cmyk jpeg");
        assert_eq!(img.dimensions(), (16, 16));
        let first = *img.get_pixel(0, 0);
        assert!(img.pixels().all(|p| *p == first), "not uniform");
    }
}
