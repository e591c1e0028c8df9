//! `kiln diff --format html`: one self-contained page (no network, no external script or
//! style; a Content-Security-Policy forbids any) for the release review: the summary, sortable
//! tables of packages, files and layers, and a treemap of the changed files' sizes coloured
//! by change. Everything taken from the images is HTML-escaped.

use super::render::{findings_summary, human_bytes, kind_name, summary_line};
use super::Diff;
use std::fmt::Write as _;

use crate::check::report::xml_escape as escape;

/// The most files the page's table and treemap show (the JSON has them all).
const MAX_FILES: usize = 2000;

/// A rectangle of the treemap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left.
    pub x: f64,
    /// Top.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// Squarified treemap (Bruls, Huizing, van Wijk 2000) of `sizes` (sorted largest first) in
/// `area`: one rectangle per size, each as close to a square as the row allows.
pub fn squarify(sizes: &[f64], area: Rect) -> Vec<Rect> {
    let total: f64 = sizes.iter().sum();
    let mut out = Vec::with_capacity(sizes.len());
    if total <= 0.0 || sizes.is_empty() {
        return out;
    }
    let scale = area.w * area.h / total;
    let areas: Vec<f64> = sizes.iter().map(|s| s * scale).collect();
    let mut free = area;
    let mut i = 0;
    while i < areas.len() {
        let side = free.w.min(free.h);
        let worst = |row: &[f64]| {
            let sum: f64 = row.iter().sum();
            let (max, min) = row
                .iter()
                .fold((0.0f64, f64::MAX), |(a, b), r| (a.max(*r), b.min(*r)));
            let s2 = side * side;
            (s2 * max / (sum * sum)).max(sum * sum / (s2 * min))
        };
        let mut j = i + 1;
        while j < areas.len() && worst(&areas[i..=j]) <= worst(&areas[i..j]) {
            j += 1;
        }
        let row = &areas[i..j];
        let sum: f64 = row.iter().sum();
        if free.w >= free.h {
            let w = if free.h > 0.0 { sum / free.h } else { 0.0 };
            let mut y = free.y;
            for a in row {
                let h = if w > 0.0 { a / w } else { 0.0 };
                out.push(Rect { x: free.x, y, w, h });
                y += h;
            }
            free = Rect {
                x: free.x + w,
                w: free.w - w,
                ..free
            };
        } else {
            let h = if free.w > 0.0 { sum / free.w } else { 0.0 };
            let mut x = free.x;
            for a in row {
                let w = if h > 0.0 { a / h } else { 0.0 };
                out.push(Rect { x, y: free.y, w, h });
                x += w;
            }
            free = Rect {
                y: free.y + h,
                h: free.h - h,
                ..free
            };
        }
        i = j;
    }
    out
}

fn colour(change: &str) -> &'static str {
    match change {
        "added" => "#4caf50",
        "removed" => "#e53935",
        "content" | "size" => "#fb8c00",
        _ => "#8e7cc3",
    }
}

const STYLE: &str = "body{font:14px/1.4 sans-serif;margin:2em;color:#222}h1{font-size:1.6em}\
h2{margin-top:1.6em;border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}\
th,td{padding:.2em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th{cursor:pointer;background:#f4f4f4;user-select:none}th:after{content:' \\2195';color:#aaa}\
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.95em}\
#summary{background:#fff8e1;border-left:4px solid #fb8c00;padding:.6em 1em}\
.point-release{background:#ffebee;font-weight:bold}.bar{background:#1e88e5;height:.8em}\
.finding-new,.finding-unwaived{background:#fff3e0}.finding-resolved{background:#e8f5e9}.finding-waived{color:#555}\
.legend span{display:inline-block;padding:0 .6em;margin-right:.4em;color:#fff}";

const SCRIPT: &str = "document.querySelectorAll('table.sortable').forEach(function(t){\
var hs=t.querySelectorAll('th');hs.forEach(function(h,i){h.addEventListener('click',function(){\
var b=t.tBodies[0],rs=Array.prototype.slice.call(b.rows),d=h.dataset.dir==='asc'?-1:1;\
h.dataset.dir=d===1?'asc':'desc';rs.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,\
c=y.cells[i].dataset.v||y.cells[i].textContent,na=parseFloat(a),nc=parseFloat(c);\
if(!isNaN(na)&&!isNaN(nc)&&h.classList.contains('num'))return (na-nc)*d;return a.localeCompare(c)*d;});\
rs.forEach(function(r){b.appendChild(r);});});});});document.body.dataset.ready='yes';";

/// The page.
pub fn page(d: &Diff) -> String {
    let mut o = String::new();
    let title = format!(
        "kiln diff: {} → {}",
        d.old.version.as_deref().unwrap_or("?"),
        d.new.version.as_deref().unwrap_or("?")
    );
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
<title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    for (label, s) in [("OLD", &d.old), ("NEW", &d.new)] {
        let _ = write!(
            o,
            "<p><b>{label}</b> <code>{}</code>: version {}, board {}, image <code>{}</code></p>",
            escape(&s.path.display().to_string()),
            escape(s.version.as_deref().unwrap_or("?")),
            escape(s.board.as_deref().unwrap_or("?")),
            escape(&s.image)
        );
    }
    let _ = write!(o, "<p id=\"summary\">{}</p>", escape(&summary_line(d)));

    let _ = write!(o, "<h2>Packages</h2><table class=\"sortable\" id=\"packages\"><thead><tr>\
<th>change</th><th>ecosystem</th><th>package</th><th>arch or env</th><th>old</th><th>new</th></tr></thead><tbody>");
    for c in &d.packages.changes {
        let k = kind_name(c.kind);
        let _ = write!(
            o,
            "<tr class=\"{k}\"><td data-v=\"{}\">{k}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.kind as u8,
            escape(&c.ecosystem),
            escape(&c.name),
            escape(&c.arch),
            escape(c.old.as_deref().unwrap_or("")),
            escape(c.new.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(o, "</tbody></table>");
    if !d.packages.licenses_added.is_empty() || !d.packages.licenses_removed.is_empty() {
        let list = |l: &[String]| {
            if l.is_empty() {
                "none".to_string()
            } else {
                escape(&l.join(", "))
            }
        };
        let _ = write!(
            o,
            "<p>Licences added: {}; removed: {}</p>",
            list(&d.packages.licenses_added),
            list(&d.packages.licenses_removed)
        );
    }

    let _ = write!(
        o,
        "<h2>ELF findings</h2><p>{} ({} unchanged).</p>\
<table class=\"sortable\" id=\"findings\"><thead><tr><th>change</th><th>severity</th><th>check</th>\
<th>path</th><th>package</th><th>message</th><th>waiver</th></tr></thead><tbody>",
        escape(&findings_summary(&d.findings)),
        d.findings.unchanged
    );
    for c in &d.findings.changes {
        let f = &c.finding;
        let _ = write!(
            o,
            "<tr class=\"finding-{}\"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.status,
            c.status,
            escape(&f.severity),
            escape(&f.check),
            escape(&f.path),
            escape(f.package.as_deref().unwrap_or("")),
            escape(&f.message),
            escape(f.waived.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(o, "</tbody></table>");

    let _ = write!(o, "<h2>Layers</h2><p>A device holding OLD downloads <b>{}</b> of {}.</p>\
<table class=\"sortable\" id=\"layers\"><thead><tr><th class=\"num\">#</th><th>status</th><th>digest</th>\
<th class=\"num\">bytes</th><th>download</th></tr></thead><tbody>",
        human_bytes(d.download_bytes), human_bytes(d.full_bytes));
    let largest = d
        .layers
        .iter()
        .map(|l| l.layer.size)
        .max()
        .unwrap_or(1)
        .max(1);
    for l in &d.layers {
        let width = if l.status == "new" {
            (l.layer.size as f64 / largest as f64 * 300.0).max(1.0)
        } else {
            0.0
        };
        let _ = write!(
            o,
            "<tr><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td><td class=\"num\" data-v=\"{}\">{}</td>\
<td><div class=\"bar\" style=\"width:{width:.0}px\"></div></td></tr>",
            l.index,
            l.status,
            escape(&l.layer.digest),
            l.layer.size,
            human_bytes(l.layer.size)
        );
    }
    let _ = write!(o, "</tbody></table>");

    let files: Vec<_> = d.files.changes.iter().take(MAX_FILES).collect();
    let _ = write!(
        o,
        "<h2>Files</h2><p>{} changed paths in the {} layers that differ{}.</p>\
<table class=\"sortable\" id=\"files\"><thead><tr><th>change</th><th>path</th><th class=\"num\">old size</th>\
<th class=\"num\">new size</th><th>mode</th><th>owner</th></tr></thead><tbody>",
        d.files.changes.len(),
        d.files.layers_read,
        if d.files.changes.len() > MAX_FILES {
            format!(" (the first {MAX_FILES} here; all in --format json)")
        } else {
            String::new()
        }
    );
    for c in &files {
        let size = |s: &Option<super::files::FileState>| {
            s.as_ref().map_or(String::new(), |s| s.size.to_string())
        };
        let attr = |s: &Option<super::files::FileState>,
                    f: fn(&super::files::FileState) -> &str| {
            s.as_ref().map_or(String::new(), |s| f(s).to_string())
        };
        let pair = |a: String, b: String| match (a.is_empty(), b.is_empty()) {
            (true, _) => b,
            (_, true) => a,
            _ if a == b => a,
            _ => format!("{a} → {b}"),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.changes.join(", ")),
            escape(&c.path),
            size(&c.old),
            size(&c.new),
            escape(&pair(attr(&c.old, |s| &s.mode), attr(&c.new, |s| &s.mode))),
            escape(&pair(attr(&c.old, |s| &s.owner), attr(&c.new, |s| &s.owner)))
        );
    }
    let _ = write!(o, "</tbody></table>");
    if !d.files.units_enabled.is_empty() || !d.files.units_disabled.is_empty() {
        let _ = write!(o, "<h2>systemd units</h2><ul>");
        for u in &d.files.units_enabled {
            let _ = write!(o, "<li>enabled <code>{}</code></li>", escape(u));
        }
        for u in &d.files.units_disabled {
            let _ = write!(o, "<li>disabled <code>{}</code></li>", escape(u));
        }
        let _ = write!(o, "</ul>");
    }

    // The treemap: each changed file's size (NEW's, or OLD's when removed), largest first.
    let mut items: Vec<(f64, &str, &str)> = files
        .iter()
        .filter(|c| {
            c.new
                .as_ref()
                .or(c.old.as_ref())
                .is_some_and(|s| s.kind == "file")
        })
        .map(|c| {
            let s = c.new.as_ref().or(c.old.as_ref()).map_or(0, |s| s.size);
            (
                (s.max(1)) as f64,
                c.path.as_str(),
                c.changes.first().copied().unwrap_or(""),
            )
        })
        .collect();
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (w, h) = (960.0, 360.0);
    let rects = squarify(
        &items.iter().map(|i| i.0).collect::<Vec<_>>(),
        Rect {
            x: 0.0,
            y: 0.0,
            w,
            h,
        },
    );
    let _ = write!(
        o,
        "<h2>Sizes of the changed files</h2><p class=\"legend\"><span style=\"background:{}\">added</span>\
<span style=\"background:{}\">removed</span><span style=\"background:{}\">content changed</span>\
<span style=\"background:{}\">mode, owner or type</span></p>\
<svg id=\"treemap\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        colour("added"), colour("removed"), colour("content"), colour("mode")
    );
    for (r, (size, path, change)) in rects.iter().zip(&items) {
        let _ = write!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#fff\"><title>{} ({} bytes, {})</title></rect>",
            r.x, r.y, r.w, r.h, colour(change), escape(path), size, escape(change)
        );
    }
    let _ = writeln!(o, "</svg><script>{SCRIPT}</script></body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_an_image_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn the_treemap_fills_its_area_with_one_rectangle_per_size() {
        let area = Rect {
            x: 0.0,
            y: 0.0,
            w: 600.0,
            h: 400.0,
        };
        let sizes = [6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0];
        let rects = squarify(&sizes, area);
        assert_eq!(rects.len(), sizes.len());
        let total: f64 = rects.iter().map(|r| r.w * r.h).sum();
        assert!((total - 600.0 * 400.0).abs() < 1e-6, "{total}");
        for (r, s) in rects.iter().zip(sizes) {
            assert!((r.w * r.h - s / 24.0 * 240_000.0).abs() < 1e-6);
            assert!(
                r.x >= -1e-9
                    && r.y >= -1e-9
                    && r.x + r.w <= 600.0 + 1e-6
                    && r.y + r.h <= 400.0 + 1e-6
            );
        }
        assert!(squarify(&[], area).is_empty());
    }
}
