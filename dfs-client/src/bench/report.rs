//! The benchmark's output: a table, JSON, and a grouped bar chart.

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

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How it ran.
    pub config: BTreeMap<String, String>,
    /// Targets in column order.
    pub targets: Vec<String>,
    /// Every figure.
    pub results: Vec<Figure>,
    /// Per workload: `dfs_fuse/fuse_ceiling`, `dfs_fuse/local`, `dfs_fuse/sshfs`,
    /// `pointer/copy` (dfs_fuse over dfs_copy), where both sides ran.
    pub ratios: BTreeMap<String, BTreeMap<String, f64>>,
    /// Software copies per byte read sequentially (NIC counters of the mount and its
    /// server), median per DFS target.
    pub copies_per_byte: BTreeMap<String, f64>,
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
                ("pointer/copy", "dfs_fuse", "dfs_copy"),
                ("dfs_tcp/dfs_fuse", "dfs_tcp", "dfs_fuse"),
            ] {
                if let (Some(x), Some(y)) = (get(&k, a), get(&k, b)) {
                    r.insert(name.to_string(), x / y);
                }
            }
            ratios.insert(k, r);
        }
        let p = &o.params;
        let config = [
            ("size_bytes", p.size.to_string()),
            ("rounds", o.rounds.to_string()),
            ("files", p.files.to_string()),
            ("dir_entries", p.dir_entries.to_string()),
            ("random_ops", p.random_ops.to_string()),
            ("fsync", p.fsync.to_string()),
            ("cache", if p.cold { "cold" } else { "warm" }.to_string()),
            ("scratch", o.scratch.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let copies_per_byte = copies.into_iter().map(|(t, v)| (t, median(&v))).collect();
        Report {
            config,
            targets: targets.to_vec(),
            results,
            ratios,
            copies_per_byte,
        }
    }

    /// The table for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<16} {:<10}", "workload", "unit");
        for t in &self.targets {
            let _ = write!(out, " {t:>18}");
        }
        out.push('\n');
        let mut workloads: Vec<&str> = Vec::new();
        for f in &self.results {
            if !workloads.contains(&f.workload.as_str()) {
                workloads.push(&f.workload);
            }
        }
        for w in workloads {
            let unit = self
                .results
                .iter()
                .find(|f| f.workload == w)
                .map_or("", |f| f.unit.as_str());
            let _ = write!(out, "{w:<16} {unit:<10}");
            for t in &self.targets {
                match self
                    .results
                    .iter()
                    .find(|f| f.workload == w && f.target == *t)
                {
                    Some(f) => {
                        let spread = if f.median > 0.0 {
                            (f.max - f.min) / f.median * 50.0
                        } else {
                            0.0
                        };
                        let _ = write!(out, " {:>11.0} ±{:>4.0}%", f.median, spread);
                    }
                    None => {
                        let _ = write!(out, " {:>18}", "-");
                    }
                }
            }
            out.push('\n');
        }
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

    /// Draws grouped bars, one group per workload, one bar per target, each group scaled to
    /// its largest median (units differ between groups); writes SVG, or PNG through
    /// `rsvg-convert` or ImageMagick's `convert`.
    pub fn write_plot(&self, path: &Path) -> Result<(), String> {
        let svg = self.svg();
        match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))
            }
            Some("png") => {
                let tmp = path.with_extension("svg.tmp");
                std::fs::write(&tmp, &svg).map_err(|e| e.to_string())?;
                let converted = std::process::Command::new("rsvg-convert")
                    .arg("-o")
                    .arg(path)
                    .arg(&tmp)
                    .status()
                    .ok()
                    .filter(|s| s.success())
                    .or_else(|| {
                        std::process::Command::new("convert")
                            .arg(format!("svg:{}", tmp.display()))
                            .arg(path)
                            .status()
                            .ok()
                            .filter(|s| s.success())
                    });
                let _ = std::fs::remove_file(&tmp);
                converted.map(|_| ()).ok_or_else(|| "a PNG needs rsvg-convert (apt install librsvg2-bin) or ImageMagick; an .svg plot needs nothing".into())
            }
            _ => Err(format!("{}: the plot is .svg or .png", path.display())),
        }
    }

    fn svg(&self) -> String {
        const COLORS: [&str; 8] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        ];
        let mut groups: Vec<&str> = Vec::new();
        for f in &self.results {
            if !groups.contains(&f.workload.as_str()) {
                groups.push(&f.workload);
            }
        }
        let n = self.targets.len().max(1);
        let bar = 14.0;
        let gw = bar * n as f64 + 24.0;
        let (left, top, h) = (50.0, 40.0, 260.0);
        let width = left + gw * groups.len() as f64 + 20.0;
        let height = top + h + 120.0;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="10">"#
        );
        let _ = write!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">dfs bench: median per target, each workload scaled to its best</text>"#
        );
        let _ = write!(
            s,
            r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            top + h,
            width - 10.0,
            top + h
        );
        for (gi, g) in groups.iter().enumerate() {
            let x0 = left + gi as f64 * gw + 12.0;
            let best = self
                .results
                .iter()
                .filter(|f| f.workload == *g)
                .map(|f| f.median)
                .fold(0.0, f64::max);
            for (ti, t) in self.targets.iter().enumerate() {
                if let Some(f) = self
                    .results
                    .iter()
                    .find(|f| f.workload == *g && f.target == *t)
                {
                    let bh = if best > 0.0 { f.median / best * h } else { 0.0 };
                    let x = x0 + ti as f64 * bar;
                    let _ = write!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{t}: {:.0} {}</title></rect>"#,
                        top + h - bh,
                        bar - 2.0,
                        COLORS[ti % COLORS.len()],
                        f.median,
                        f.unit
                    );
                }
            }
            let unit = self
                .results
                .iter()
                .find(|f| f.workload == *g)
                .map_or("", |f| f.unit.as_str());
            let _ = write!(
                s,
                r#"<text transform="translate({:.1},{:.1}) rotate(45)">{g} ({unit})</text>"#,
                x0,
                top + h + 12.0
            );
        }
        for (ti, t) in self.targets.iter().enumerate() {
            let y = top + 12.0 * ti as f64 - 30.0 + h * 0.0;
            let x = width - 130.0;
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{:.0}" width="10" height="10" fill="{}"/><text x="{}" y="{:.0}">{t}</text>"#,
                y + 30.0,
                COLORS[ti % COLORS.len()],
                x + 14.0,
                y + 39.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
