//! The SVG rasterized to PNG with resvg (pure Rust). Text needs a font from the system (fontdb
//! reads the usual font directories); without one this says so rather than drawing no text.

use std::sync::Arc;

use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg::{fontdb, Options, Tree};

use super::Error;

/// Drawn at twice the SVG's size, so that text stays sharp when the picture is zoomed.
const SCALE: f32 = 2.0;

/// Fonts tried first for `sans-serif`, before whatever else is installed.
const PREFERRED: [&str; 4] = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"];

/// Fails early (before a recording) when the PNG could have no text.
pub fn check_fonts() -> Result<(), Error> {
    system_fonts().map(drop)
}

pub fn to_png(svg: &str) -> Result<Vec<u8>, Error> {
    let options = Options {
        fontdb: Arc::new(system_fonts()?),
        ..Options::default()
    };
    let tree = Tree::from_str(svg, &options).map_err(|e| Error::Render(e.to_string()))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(SCALE)
        .ok_or_else(|| Error::Render(format!("cannot scale a {:?} picture", tree.size())))?;
    let mut pixmap = Pixmap::new(size.width(), size.height())
        .ok_or_else(|| Error::Render(format!("cannot allocate a {size:?} picture")))?;
    resvg::render(
        &tree,
        Transform::from_scale(SCALE, SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| Error::Render(e.to_string()))
}

/// The system's fonts, `sans-serif` set to one of them.
fn system_fonts() -> Result<fontdb::Database, Error> {
    let mut fonts = fontdb::Database::new();
    fonts.load_system_fonts();
    let family = pick_sans_serif(&fonts).ok_or(Error::NoFonts)?;
    fonts.set_sans_serif_family(family);
    Ok(fonts)
}

/// The first preferred family installed, else the family of any font at all.
fn pick_sans_serif(fonts: &fontdb::Database) -> Option<String> {
    let families: Vec<&str> = fonts
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.as_str()))
        .collect();
    PREFERRED
        .iter()
        .find(|p| families.contains(p))
        .map(|p| (*p).to_owned())
        .or_else(|| families.first().map(|f| (*f).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preferred_family_wins_over_the_first_one_found() {
        let mut db = fontdb::Database::new();
        assert_eq!(pick_sans_serif(&db), None);
        for family in ["Zapf", "Liberation Sans"] {
            db.push_face_info(fontdb::FaceInfo {
                id: fontdb::ID::dummy(),
                source: fontdb::Source::Binary(Arc::new(Vec::<u8>::new())),
                index: 0,
                families: vec![(family.into(), fontdb::Language::English_UnitedStates)],
                post_script_name: family.into(),
                style: fontdb::Style::Normal,
                weight: fontdb::Weight::NORMAL,
                stretch: fontdb::Stretch::Normal,
                monospaced: false,
            });
        }
        assert_eq!(pick_sans_serif(&db).as_deref(), Some("Liberation Sans"));
    }
}
