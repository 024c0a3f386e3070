//! The SVG plot of the conv part: forward time vs TT rank, factorized vs reconstructed (dense),
//! with the factorized path's roofline floor.
//!
//! `plotters` is built with only its SVG backend (`svg_backend`, `line_series`; its default
//! features pull in fontconfig through the `ttf` font backend). Text still works: the SVG backend
//! writes captions and tick labels as SVG `<text>` elements that the viewer lays out, and without
//! a font backend plotters sizes label areas from a fixed per-character estimate, which is all
//! the chart layout needs (checked: the file has its title, axis descriptions, tick labels and
//! legend as `<text>` elements).

use std::path::Path;

use plotters::prelude::*;

use super::output::write_atomic;

/// A line of the plot: label, colour, value of a point.
type Series = (&'static str, RGBColor, fn(&SweepPoint) -> f64);

/// One point of the sweep: TT rank and forward milliseconds.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// The uniform TT rank.
    pub rank: usize,
    /// Factorized forward, median ms.
    pub factorized_ms: f64,
    /// Reconstructed (dense, kernel cached) forward, median ms.
    pub reconstructed_ms: f64,
    /// Roofline floor of the factorized forward, ms.
    pub floor_ms: f64,
}

/// Draws `points` (sorted by rank) to `path` (rendered in memory, then written atomically).
pub fn rank_sweep(path: &Path, title: &str, points: &[SweepPoint]) -> Result<(), String> {
    let mut svg = String::new();
    draw(&mut svg, path, title, points)?;
    write_atomic(path, svg.as_bytes())
}

fn draw(svg: &mut String, path: &Path, title: &str, points: &[SweepPoint]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    if points.is_empty() {
        return Err(err(&"no points"));
    }
    let rmax = points.iter().map(|p| p.rank).max().unwrap_or(1).max(2) as f64;
    let ymax = points
        .iter()
        .flat_map(|p| [p.factorized_ms, p.reconstructed_ms, p.floor_ms])
        .fold(0.0f64, f64::max)
        * 1.4;
    let root = SVGBackend::with_string(svg, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..rmax * 1.05, 0.0..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("TT rank (uniform)")
        .light_line_style(WHITE)
        .y_desc("forward time, ms (median)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| err(&e))?;
    let series: [Series; 3] = [
        ("factorized", RGBColor(31, 119, 180), |p| p.factorized_ms),
        ("reconstructed (dense)", RGBColor(214, 39, 40), |p| {
            p.reconstructed_ms
        }),
        ("factorized roofline floor", RGBColor(127, 127, 127), |p| {
            p.floor_ms
        }),
    ];
    for (name, color, value) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.rank as f64, value(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_text_without_a_font_backend() {
        let dir = std::env::temp_dir().join(format!("ttconv-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sweep.svg");
        let points: Vec<SweepPoint> = [4, 8, 16]
            .iter()
            .map(|&r| SweepPoint {
                rank: r,
                factorized_ms: r as f64 * 0.1,
                reconstructed_ms: 5.0,
                floor_ms: r as f64 * 0.05,
            })
            .collect();
        rank_sweep(&path, "test sweep", &points).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        for text in [
            "test sweep",
            "TT rank",
            "factorized",
            "reconstructed (dense)",
        ] {
            assert!(svg.contains(text), "missing `{text}` in the SVG");
        }
    }
}
