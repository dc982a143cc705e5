//! The benchmark's output: a table, JSON, and a plot (a panel per workload, drawn with plotters).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{BenchOptions, Workload};

/// One workload on one target, over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Workload key (`seq_read_1m`, …).
    pub workload: String,
    /// Target name (`dfs_fuse`, …).
    pub target: String,
    /// What the numbers count.
    pub unit: String,
    /// Median over the rounds.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Every round's figure.
    pub runs: Vec<f64>,
}

/// How a run was made: the JSON's `config`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Config {
    /// Bytes in the sequential file (`--size`).
    pub size_bytes: u64,
    /// Rounds; medians, minima and maxima are over them.
    pub rounds: usize,
    /// Small files made, stat'ed and unlinked per round (`--files`).
    pub files: usize,
    /// Entries in the directory `readdir` lists (`--dir-entries`).
    pub dir_entries: usize,
    /// Random 4 KiB operations per run of `rand_read_4k` and `rand_write_4k`.
    pub random_ops: usize,
    /// Writes end with an fsync, counted in the time (`--fsync`).
    pub fsync: bool,
    /// Every cache is dropped before each read (`--cold`); warm otherwise.
    pub cold: bool,
    /// The workloads run, in order.
    pub workloads: Vec<String>,
    /// Where the exports and mounts were.
    pub scratch: String,
    /// The commit the programs were built from (`git describe --always --dirty`; "unknown"
    /// outside a git checkout).
    pub commit: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How it ran.
    pub config: Config,
    /// Targets in column order.
    pub targets: Vec<String>,
    /// Every figure.
    pub results: Vec<Figure>,
    /// Per workload: `dfs_fuse/fuse_ceiling`, `dfs_fuse/local`, `dfs_fuse/sshfs`,
    /// `pointer/copy` (dfs_fuse over dfs_copy), `dfs_tcp/dfs_fuse`, `dfs_shim/local`,
    /// `dfs_shim/dfs_fuse`, where both sides ran.
    pub ratios: BTreeMap<String, BTreeMap<String, f64>>,
    /// Software copies per byte read sequentially (NIC counters of the mount and its
    /// server), median per DFS target.
    pub copies_per_byte: BTreeMap<String, f64>,
}

/// A figure as the table and the plot print it: three significant digits or more.
pub(super) fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// With thousands separators, for the plot: 1,234,567.
fn grouped(v: f64) -> String {
    let s = figure(v);
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{frac}")
    }
}

/// An axis label: 1, 10, 100, 1k, 10k, 1M, …
fn tick(v: f64) -> String {
    let (n, suffix) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let n = if (n - n.round()).abs() < 1e-6 {
        format!("{n:.0}")
    } else {
        format!("{n}")
    };
    format!("{n}{suffix}")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

impl Report {
    pub(super) fn new(
        o: &BenchOptions,
        workloads: &[Workload],
        targets: &[String],
        figures: BTreeMap<(String, String), Vec<f64>>,
        copies: BTreeMap<String, Vec<f64>>,
    ) -> Report {
        let mut results = Vec::new();
        for w in workloads {
            for t in targets {
                if let Some(runs) = figures.get(&(w.key(), t.clone())) {
                    results.push(Figure {
                        workload: w.key(),
                        target: t.clone(),
                        unit: w.unit().into(),
                        median: median(runs),
                        min: runs.iter().copied().fold(f64::INFINITY, f64::min),
                        max: runs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        runs: runs.clone(),
                    });
                }
            }
        }
        let get = |w: &str, t: &str| {
            results
                .iter()
                .find(|f| f.workload == w && f.target == t)
                .map(|f| f.median)
        };
        let mut ratios = BTreeMap::new();
        for w in workloads {
            let k = w.key();
            let mut r = BTreeMap::new();
            for (name, a, b) in [
                ("dfs_fuse/fuse_ceiling", "dfs_fuse", "fuse_ceiling"),
                ("dfs_fuse/local", "dfs_fuse", "local"),
                ("dfs_fuse/sshfs", "dfs_fuse", "sshfs"),
                ("passthrough/rings", "dfs_fuse", "dfs_rings"),
                ("pointer/copy", "dfs_rings", "dfs_copy"),
                ("dfs_tcp/dfs_fuse", "dfs_tcp", "dfs_fuse"),
                ("dfs_shim/local", "dfs_shim", "local"),
                ("dfs_shim/dfs_fuse", "dfs_shim", "dfs_fuse"),
            ] {
                if let (Some(x), Some(y)) = (get(&k, a), get(&k, b)) {
                    r.insert(name.to_string(), x / y);
                }
            }
            ratios.insert(k, r);
        }
        let p = &o.params;
        let config = Config {
            size_bytes: p.size,
            rounds: o.rounds,
            files: p.files,
            dir_entries: p.dir_entries,
            random_ops: p.random_ops,
            fsync: p.fsync,
            cold: p.cold,
            workloads: workloads.iter().map(|w| w.key()).collect(),
            scratch: o.scratch.display().to_string(),
            commit: env!("DFS_COMMIT").to_string(),
        };
        let copies_per_byte = copies.into_iter().map(|(t, v)| (t, median(&v))).collect();
        Report {
            config,
            targets: targets.to_vec(),
            results,
            ratios,
            copies_per_byte,
        }
    }

    /// The workloads in the order they ran.
    fn workloads(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for f in &self.results {
            if !v.contains(&f.workload.as_str()) {
                v.push(&f.workload);
            }
        }
        v
    }

    fn get(&self, workload: &str, target: &str) -> Option<&Figure> {
        self.results
            .iter()
            .find(|f| f.workload == workload && f.target == target)
    }

    /// The table for the terminal: medians, and with two rounds or more their spread.
    pub fn table(&self) -> String {
        let spread = self.config.rounds > 1;
        let col = if spread { 18 } else { 12 };
        let mut out = String::new();
        let _ = write!(out, "{:<16} {:<10}", "workload", "unit");
        for t in &self.targets {
            let _ = write!(out, " {t:>col$}");
        }
        out.push('\n');
        for w in self.workloads() {
            let unit = self
                .results
                .iter()
                .find(|f| f.workload == w)
                .map_or("", |f| f.unit.as_str());
            let _ = write!(out, "{w:<16} {unit:<10}");
            for t in &self.targets {
                match self.get(w, t) {
                    Some(f) if spread => {
                        let half_range = if f.median > 0.0 {
                            (f.max - f.min) / f.median * 50.0
                        } else {
                            0.0
                        };
                        let _ = write!(out, " {:>11} ±{:>4.0}%", figure(f.median), half_range);
                    }
                    Some(f) => {
                        let _ = write!(out, " {:>col$}", figure(f.median));
                    }
                    None => {
                        let _ = write!(out, " {:>col$}", "-");
                    }
                }
            }
            out.push('\n');
        }
        if spread {
            let _ = writeln!(
                out,
                "(medians of {} rounds; ± is half the range between the smallest and the largest, in % of the median)",
                self.config.rounds
            );
        } else {
            out.push_str(
                "(one round: no spread to show; --rounds 3 or more tells how much the figures vary)\n",
            );
        }
        let _ = writeln!(out, "(built from commit {})", self.config.commit);
        out.push_str("\nratios (medians):\n");
        for (w, r) in &self.ratios {
            if r.is_empty() {
                continue;
            }
            let _ = write!(out, "  {w:<16}");
            for (k, v) in r {
                let _ = write!(out, " {k} {v:.2}");
            }
            out.push('\n');
        }
        if !self.copies_per_byte.is_empty() {
            out.push_str("\nsoftware copies per byte read (NIC counters, mount + server):");
            for (t, c) in &self.copies_per_byte {
                let _ = write!(out, " {t} {c:.3}");
            }
            out.push('\n');
        }
        out
    }

    /// Writes the JSON (keys documented in `dfs bench --help`).
    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Draws the figures: one panel per workload, its own logarithmic axis in its own unit
    /// (so that sshfs, the DFS, the FUSE ceiling and `local` can be read side by side, whatever
    /// their distance), a bar per target with its median written beside it, and a line from
    /// the smallest to the largest round. `.svg` or `.png`, by the file name.
    pub fn write_plot(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::IntoDrawingArea;
        let (w, h) = self.plot_size();
        let err = |e: String| format!("{}: {e}", path.display());
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                let area = plotters::prelude::SVGBackend::new(path, (w, h)).into_drawing_area();
                self.draw(&area).map_err(err)?;
                area.present().map_err(|e| err(e.to_string()))
            }
            Some("png") => {
                let area = plotters::prelude::BitMapBackend::new(path, (w, h)).into_drawing_area();
                self.draw(&area).map_err(err)?;
                area.present().map_err(|e| err(e.to_string()))
            }
            _ => Err(format!("{}: the plot is .svg or .png", path.display())),
        }
    }

    const PLOT_COLUMNS: usize = 3;
    const PLOT_WIDTH: u32 = 1500;
    const PLOT_HEAD: u32 = 70;

    fn plot_size(&self) -> (u32, u32) {
        let panels = self.workloads().len().max(1);
        let rows = panels.div_ceil(Self::PLOT_COLUMNS) as u32;
        (
            Self::PLOT_WIDTH,
            Self::PLOT_HEAD + rows * Self::panel_height(self.targets.len()),
        )
    }

    fn panel_height(targets: usize) -> u32 {
        90 + 26 * targets.max(1) as u32
    }

    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), String> {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        register_fonts()?;
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (head, body) = root.split_vertically(Self::PLOT_HEAD);
        let c = &self.config;
        let rounds = if c.rounds == 1 {
            "one round (no spread)".to_string()
        } else {
            format!(
                "median of {} rounds (bars), smallest to largest round (black lines)",
                c.rounds
            )
        };
        head.draw_text(
            &format!("dfs bench: {rounds}"),
            &("sans-serif", 22).into_font().color(&BLACK),
            (16, 10),
        )
        .map_err(e)?;
        head.draw_text(
            &format!(
                "each workload on its own logarithmic axis, in its own unit; {} file, {} files, {} directory entries, {} cache{}",
                super::size_name(c.size_bytes),
                c.files,
                c.dir_entries,
                if c.cold { "cold" } else { "warm" },
                if c.fsync { ", fsync after writes" } else { "" }
            ),
            &("sans-serif", 15).into_font().color(&RGBColor(60, 60, 60)),
            (16, 42),
        )
        .map_err(e)?;
        let workloads = self.workloads();
        let cols = Self::PLOT_COLUMNS.min(workloads.len().max(1));
        let rows = workloads.len().div_ceil(cols).max(1);
        let panels = body.split_evenly((rows, Self::PLOT_COLUMNS.max(cols)));
        let n = self.targets.len();
        let row = |ti: usize| (n - 1 - ti) as i32;
        for (w, area) in workloads.iter().zip(panels.iter()) {
            let figs: Vec<(usize, &Figure)> = self
                .targets
                .iter()
                .enumerate()
                .filter_map(|(ti, t)| self.get(w, t).map(|f| (ti, f)))
                .collect();
            let unit = figs.first().map_or("", |(_, f)| f.unit.as_str());
            let positive = figs
                .iter()
                .flat_map(|(_, f)| [f.min, f.median, f.max])
                .filter(|v| v.is_finite() && *v > 0.0);
            let (least, most) =
                positive.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
            let (least, most) = if most > 0.0 {
                (least, most)
            } else {
                (1.0, 10.0)
            };
            // Start a decade below the smallest (so every bar has a length) and leave room
            // on the right for the figures.
            let lo = 10f64.powf((least / 2.0).log10().floor());
            let hi = most * 12.0;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{w} ({unit})"), ("sans-serif", 18))
                .margin(10)
                .margin_right(24)
                .x_label_area_size(44)
                .y_label_area_size(104)
                .build_cartesian_2d((lo..hi).log_scale(), (0..n as i32).into_segmented())
                .map_err(e)?;
            let name_of = |v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(i) if (0..n as i32).contains(i) => {
                    self.targets[n - 1 - *i as usize].clone()
                }
                _ => String::new(),
            };
            let x_desc = format!("{unit} (log scale)");
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .y_label_formatter(&name_of)
                // Powers of ten only (the axis spans at least two decades).
                .x_labels(5)
                .x_label_formatter(&|v| tick(*v))
                .x_desc(x_desc)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(RGBColor(235, 235, 235))
                .bold_line_style(RGBColor(200, 200, 200))
                .draw()
                .map_err(e)?;
            chart
                .draw_series(figs.iter().map(|(ti, f)| {
                    let mut r = Rectangle::new(
                        [
                            (lo, SegmentValue::Exact(row(*ti))),
                            (f.median.max(lo), SegmentValue::Exact(row(*ti) + 1)),
                        ],
                        color_of(&self.targets[*ti], *ti).filled(),
                    );
                    r.set_margin(4, 4, 0, 0);
                    r
                }))
                .map_err(e)?;
            if c.rounds > 1 {
                chart
                    .draw_series(figs.iter().map(|(ti, f)| {
                        PathElement::new(
                            vec![
                                (f.min.max(lo), SegmentValue::CenterOf(row(*ti))),
                                (f.max.max(lo), SegmentValue::CenterOf(row(*ti))),
                            ],
                            BLACK.stroke_width(2),
                        )
                    }))
                    .map_err(e)?;
            }
            let label = ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center));
            chart
                .draw_series(figs.iter().map(|(ti, f)| {
                    Text::new(
                        grouped(f.median),
                        (
                            f.median.max(f.max).max(lo) * 1.15,
                            SegmentValue::CenterOf(row(*ti)),
                        ),
                        label.clone(),
                    )
                }))
                .map_err(e)?;
        }
        Ok(())
    }
}

/// Each target keeps its colour in every panel: the DFS in blues, local grey, the FUSE
/// ceiling orange, sshfs green, others after.
fn color_of(target: &str, index: usize) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    const OTHERS: [RGBColor; 5] = [
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    match target {
        "dfs_fuse" => RGBColor(31, 119, 180),
        "dfs_copy" => RGBColor(107, 174, 214),
        "dfs_rings" => RGBColor(66, 146, 198),
        "dfs_tcp" => RGBColor(8, 69, 148),
        "local" => RGBColor(127, 127, 127),
        "fuse_ceiling" => RGBColor(255, 127, 14),
        "sshfs" => RGBColor(44, 160, 44),
        _ => OTHERS[index % OTHERS.len()],
    }
}

/// The plot's text is set in DejaVu Sans, built into the program: it needs no font on the
/// system (an SVG names `sans-serif`, which its viewer supplies).
fn register_fonts() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        use plotters::style::{register_font, FontStyle};
        // Every style falls back to this one.
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the built-in font does not load".to_string())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BenchOptions, Params, Progress, ALL};

    /// A report as a run with these rounds would make, with figures far apart (local far
    /// above the rest, sshfs far below), without running anything.
    fn report(rounds: usize) -> Report {
        let o = BenchOptions {
            params: Params {
                size: 8 << 20,
                files: 20,
                dir_entries: 50,
                random_ops: 100,
                fsync: false,
                cold: false,
            },
            rounds,
            only: Vec::new(),
            with_sshfs: true,
            variants: true,
            extra: Vec::new(),
            scratch: "/tmp/scratch".into(),
            remove_scratch: false,
            progress: Progress::Quiet,
        };
        let targets: Vec<String> = [
            "dfs_fuse",
            "dfs_copy",
            "dfs_tcp",
            "local",
            "fuse_ceiling",
            "sshfs",
        ]
        .map(String::from)
        .to_vec();
        let scale = [1.0, 0.8, 0.6, 20.0, 2.0, 0.05];
        let mut figures = BTreeMap::new();
        for (wi, w) in ALL.iter().enumerate() {
            for (t, s) in targets.iter().zip(scale) {
                let base = 1000.0 * (wi + 1) as f64 * s;
                let runs = (0..rounds).map(|r| base * (1.0 + r as f64 * 0.1)).collect();
                figures.insert((w.key(), t.clone()), runs);
            }
        }
        let copies = BTreeMap::from([("dfs_fuse".to_string(), vec![0.0; rounds])]);
        Report::new(&o, &ALL, &targets, figures, copies)
    }

    #[test]
    fn one_round_has_no_spread() {
        let t = report(1).table();
        assert!(!t.contains('±'), "{t}");
        assert!(!t.contains("0%"), "{t}");
        assert!(t.contains("one round: no spread"), "{t}");
        let t = report(3).table();
        assert!(t.contains('±') && t.contains("medians of 3 rounds"), "{t}");
        assert!(t.contains("built from commit "), "{t}");
    }

    #[test]
    fn json_config_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        report(3).write_json(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let c = &v["config"];
        assert_eq!(c["size_bytes"].as_u64(), Some(8 << 20));
        assert_eq!(c["rounds"].as_u64(), Some(3));
        assert_eq!(c["files"].as_u64(), Some(20));
        assert_eq!(c["dir_entries"].as_u64(), Some(50));
        assert_eq!(c["random_ops"].as_u64(), Some(100));
        assert_eq!(c["fsync"].as_bool(), Some(false));
        assert_eq!(c["cold"].as_bool(), Some(false));
        assert_eq!(c["workloads"].as_array().map(Vec::len), Some(ALL.len()));
        assert!(c["scratch"].is_string());
        assert!(c["commit"].as_str().is_some_and(|c| !c.is_empty()));
        let r = &v["results"][0];
        assert!(r["median"].is_f64() && r["runs"][2].is_f64() && r["unit"] == "MB/s");
    }

    #[test]
    fn the_svg_plot_has_axes_units_and_figures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.svg");
        let r = report(3);
        r.write_plot(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "seq_read_1m (MB/s)",
            "MB/s (log scale)",
            "ops/s (log scale)",
            "entries/s (log scale)",
            "fuse_ceiling",
            "sshfs",
            "local",
            "median of 3 rounds",
        ] {
            assert!(svg.contains(text), "{text} missing from the plot");
        }
        // Every median is written on the plot: seq_read_1m (the 6th workload) on local.
        let f = r.get("seq_read_1m", "local").unwrap();
        assert!(svg.contains(&grouped(f.median)), "{}", grouped(f.median));
        assert_eq!(grouped(126000.0), "126,000");
        // Axis labels, powers of ten.
        assert!(
            svg.contains(">\n1k\n<") || svg.contains(">1k<"),
            "no 1k tick"
        );
    }

    #[test]
    fn the_png_plot_is_a_png_of_readable_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var_os("DFS_BENCH_PLOT_SAMPLE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().join("b.png"));
        report(1).write_plot(&path).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!(width, 1500);
        assert!((600..2000).contains(&height), "{height}");
        // Text was drawn (the embedded font works): the image is more than bars.
        assert!(png.len() > 30_000, "{} bytes", png.len());
        assert!(report(1)
            .write_plot(&dir.path().join("b.gif"))
            .unwrap_err()
            .contains(".svg or .png"));
    }
}
