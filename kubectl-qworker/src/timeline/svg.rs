//! A [`Drawing`] written out as SVG text. Needs no fonts: the viewer picks them.

use std::fmt::Write;

use super::layout::{Anchor, Drawing, Item};

/// Generic families last, so any sans-serif font will do where DejaVu Sans is missing.
const FONTS: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

pub fn to_svg(drawing: &Drawing) -> String {
    let mut out = String::new();
    let (w, h) = (drawing.width, drawing.height);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONTS}">"#
    );
    let _ = writeln!(out, r##"<rect width="{w}" height="{h}" fill="#ffffff"/>"##);
    for item in &drawing.items {
        write_item(&mut out, item);
    }
    out.push_str("</svg>\n");
    out
}

fn write_item(out: &mut String, item: &Item) {
    match item {
        Item::Rect {
            x,
            y,
            w,
            h,
            fill,
            class,
            title,
        } => {
            let class = class
                .map(|c| format!(r#" class="{c}""#))
                .unwrap_or_default();
            let open = format!(
                r#"<rect{class} x="{}" y="{}" width="{}" height="{}" fill="{fill}""#,
                num(*x),
                num(*y),
                num(*w),
                num(*h)
            );
            match title {
                Some(t) => {
                    let _ = writeln!(out, "{open}><title>{}</title></rect>", escape(t));
                }
                None => {
                    let _ = writeln!(out, "{open}/>");
                }
            }
        }
        Item::Line {
            x1,
            y1,
            x2,
            y2,
            stroke,
            width,
            dashed,
        } => {
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{stroke}" stroke-width="{}"{}/>"#,
                num(*x1),
                num(*y1),
                num(*x2),
                num(*y2),
                num(*width),
                dash(*dashed)
            );
        }
        Item::Path {
            points,
            stroke,
            width,
            dashed,
        } => {
            if points.is_empty() {
                return;
            }
            let mut d = String::new();
            for (i, (x, y)) in points.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{},{}",
                    if i == 0 { "M" } else { " L" },
                    num(*x),
                    num(*y)
                );
            }
            let _ = writeln!(
                out,
                r#"<path d="{d}" fill="none" stroke="{stroke}" stroke-width="{}" stroke-linejoin="round"{}/>"#,
                num(*width),
                dash(*dashed)
            );
        }
        Item::Area {
            points,
            fill,
            opacity,
        } => {
            let list: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{},{}", num(*x), num(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polygon points="{}" fill="{fill}" fill-opacity="{}" stroke="none"/>"#,
                list.join(" "),
                num(*opacity)
            );
        }
        Item::Text {
            x,
            y,
            text,
            size,
            anchor,
            fill,
            bold,
        } => {
            let anchor = match anchor {
                Anchor::Start => "start",
                Anchor::Middle => "middle",
                Anchor::End => "end",
            };
            let weight = if *bold { r#" font-weight="bold""# } else { "" };
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="{}" text-anchor="{anchor}" fill="{fill}"{weight}>{}</text>"#,
                num(*x),
                num(*y),
                num(*size),
                escape(text)
            );
        }
        Item::Group {
            class,
            data,
            title,
            items,
        } => {
            let mut attrs = format!(r#" class="{class}""#);
            for (key, value) in data {
                let _ = write!(attrs, r#" data-{key}="{}""#, escape(value));
            }
            let _ = writeln!(out, "<g{attrs}>");
            if let Some(t) = title {
                let _ = writeln!(out, "<title>{}</title>", escape(t));
            }
            for item in items {
                write_item(out, item);
            }
            out.push_str("</g>\n");
        }
    }
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="5,3""#
    } else {
        ""
    }
}

/// Coordinates to two decimals, without trailing zeros.
fn num(v: f64) -> String {
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_owned()
    }
}

/// Text and attribute values: pod names and Event notes come from the cluster.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_elements_with_escaped_text() {
        let d = Drawing {
            width: 100.0,
            height: 50.0,
            items: vec![Item::Group {
                class: "event",
                data: vec![("reason", "A\"<b>".into())],
                title: Some("x & y".into()),
                items: vec![
                    Item::Line {
                        x1: 1.5,
                        y1: 0.0,
                        x2: 1.5,
                        y2: 10.0,
                        stroke: "#000",
                        width: 1.0,
                        dashed: true,
                    },
                    Item::Text {
                        x: 2.0,
                        y: 3.333,
                        text: "<pod>\u{7}".into(),
                        size: 11.0,
                        anchor: Anchor::End,
                        fill: "#111",
                        bold: false,
                    },
                ],
            }],
        };
        let svg = to_svg(&d);
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50""#)
        );
        assert!(
            svg.contains(r#"<g class="event" data-reason="A&quot;&lt;b&gt;">"#),
            "{svg}"
        );
        assert!(svg.contains("<title>x &amp; y</title>"), "{svg}");
        assert!(svg.contains(r##"<line x1="1.5" y1="0" x2="1.5" y2="10" stroke="#000" stroke-width="1" stroke-dasharray="5,3"/>"##), "{svg}");
        assert!(
            svg.contains(
                r##"y="3.33" font-size="11" text-anchor="end" fill="#111">&lt;pod&gt;</text>"##
            ),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.5), "12.5");
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(num(-0.001), "0");
    }
}
