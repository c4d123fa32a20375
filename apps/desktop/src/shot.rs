//! Screenshots as PNG files.

use std::path::Path;

use eframe::egui::ColorImage;

/// Encodes `image` (opaque RGBA) as PNG bytes.
pub fn png_bytes(image: &ColorImage) -> Result<Vec<u8>, String> {
    let [w, h] = image.size;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
        writer.write_image_data(&rgba).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes `image` to `path` as PNG.
pub fn save_png(image: &ColorImage, path: &Path) -> Result<(), String> {
    let bytes = png_bytes(image)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eframe::egui::Color32;

    #[test]
    fn png_round_trip() {
        let mut img = ColorImage::filled([3, 2], Color32::from_rgb(10, 20, 30));
        img.pixels[4] = Color32::WHITE;
        let bytes = png_bytes(&img).expect("encode");
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().expect("header");
        let mut buf = vec![0; r.output_buffer_size().expect("size")];
        let info = r.next_frame(&mut buf).expect("frame");
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..4], &[10, 20, 30, 255]);
        assert_eq!(&buf[16..20], &[255, 255, 255, 255]);
    }
}
