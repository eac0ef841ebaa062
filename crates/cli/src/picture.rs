//! Pictures of physical memory, as SVG.
//!
//! ```text
//!   memory map  |usable.........|res|usable.........................|   (one bar, 0 .. end of RAM)
//!   pool 0      |▓▓▓░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░|                   one bar per pool over its span:
//!   pool 7      |▓░░░░░|                                            cells shaded by use,
//!                                                                    header dark, largest free block outlined
//! ```

use std::path::Path;
use std::process::ExitCode;

use memkit_phys::{MemoryArea, RegionKind};
use memkit_types::{Frame, PAGE_SIZE};
use svg::Document;
use svg::node::element::{Rectangle, Text, Title};

use crate::hosted::{self, Hosted, human};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 110.0;
const BAR: f64 = 28.0;
const GAP: f64 = 46.0;
const CELLS: u64 = 400;

/// What one cell of a pool's bar holds.
#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    free: u64,
    used: u64,
    reserved: u64,
    header: u64,
}

/// A pool as pictured: its span, cells and largest free run.
#[derive(Debug)]
struct PoolPicture {
    id: usize,
    span: MemoryArea,
    cells: Vec<Cell>,
    largest_free: Option<(u64, u64)>,
    free: u64,
    total: u64,
}

fn survey(h: &Hosted) -> Vec<PoolPicture> {
    h.pools
        .iter()
        .map(|pool| {
            let a = pool.allocator().lock();
            let span = a.area();
            let header = a.header_region();
            let first = span.start.as_u64() / PAGE_SIZE as u64;
            let frames = span.size / PAGE_SIZE as u64;
            let per_cell = frames.div_ceil(CELLS).max(1);
            let mut cells = vec![Cell::default(); frames.div_ceil(per_cell) as usize];
            let (mut run, mut best) = (None::<u64>, None::<(u64, u64)>);
            for i in 0..frames {
                let frame = Frame::from_number(first + i);
                let addr = frame.start_address().as_u64();
                let c = &mut cells[(i / per_cell) as usize];
                let free = a.is_free(frame);
                if addr >= header.start.as_u64() && addr < header.end() {
                    c.header += 1;
                } else if a.is_reserved(frame) {
                    c.reserved += 1;
                } else if free {
                    c.free += 1;
                } else {
                    c.used += 1;
                }
                match (free, run) {
                    (true, None) => run = Some(i),
                    (false, Some(s)) => {
                        if best.is_none_or(|(bs, be)| i - s > be - bs) {
                            best = Some((s, i));
                        }
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run
                && best.is_none_or(|(bs, be)| frames - s > be - bs)
            {
                best = Some((s, frames));
            }
            PoolPicture {
                id: pool.id(),
                span,
                cells,
                largest_free: best.map(|(s, e)| (first + s, first + e)),
                free: a.free_frames().get(),
                total: a.total_frames().get(),
            }
        })
        .collect()
}

fn colour(c: &Cell) -> String {
    let n = c.free + c.used + c.reserved + c.header;
    if n == 0 {
        return "#ffffff".into();
    }
    if c.header * 2 >= n {
        return "#3b3b98".into();
    }
    if c.reserved * 2 >= n {
        return "#9e9e9e".into();
    }
    // From pale green (all free) to deep red (all used).
    let used = c.used as f64 / (c.free + c.used).max(1) as f64;
    let r = (200.0 + 40.0 * used) as u8;
    let g = (235.0 - 180.0 * used) as u8;
    let b = (200.0 - 150.0 * used) as u8;
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn label(x: f64, y: f64, text: impl Into<String>, size: u32) -> Text {
    Text::new(text.into()).set("x", x).set("y", y).set("font-family", "monospace").set("font-size", size)
}

/// The picture of `h`'s physical memory with a title line.
pub(crate) fn render(h: &Hosted, title: &str) -> Document {
    let pools = survey(h);
    let end = h.machine.usable().span().end().max(1);
    let scale = |a: u64, lo: u64, hi: u64| {
        LEFT + (a.saturating_sub(lo)) as f64 / (hi - lo).max(1) as f64 * (WIDTH - LEFT - 10.0)
    };
    let height = 70.0 + GAP * (pools.len() as f64 + 1.0) + 40.0;
    let mut doc = Document::new()
        .set("viewBox", (0, 0, WIDTH, height))
        .set("width", WIDTH)
        .set("height", height)
        .add(Rectangle::new().set("width", "100%").set("height", "100%").set("fill", "white"))
        .add(label(10.0, 22.0, title, 16));
    // The memory map.
    let y = 50.0;
    doc = doc.add(label(10.0, y + 18.0, "memory map", 12));
    for e in h.machine.memory_map().entries() {
        if e.area.start.as_u64() >= end {
            continue;
        }
        let (x0, x1) = (scale(e.area.start.as_u64(), 0, end), scale(e.area.end().min(end), 0, end));
        let fill = if e.kind == RegionKind::Usable { "#a5d6a7" } else { "#9e9e9e" };
        let what = format!("{:#x}..{:#x} {:?}", e.area.start.as_u64(), e.area.end(), e.kind);
        doc = doc.add(
            Rectangle::new()
                .set("x", x0)
                .set("y", y)
                .set("width", (x1 - x0).max(0.5))
                .set("height", BAR)
                .set("fill", fill)
                .set("stroke", "#555")
                .set("stroke-width", 0.3)
                .add(Title::new(what)),
        );
    }
    if let Some(k) = h.machine.kernel_image() {
        let (kx0, kx1) = (scale(k.start.as_u64(), 0, end), scale(k.end(), 0, end));
        doc = doc.add(
            Rectangle::new()
                .set("x", kx0)
                .set("y", y)
                .set("width", (kx1 - kx0).max(0.5))
                .set("height", BAR)
                .set("fill", "#616161")
                .add(Title::new("kernel image (reserved)")),
        );
    }
    doc = doc.add(label(LEFT, y + BAR + 12.0, "0", 10)).add(label(WIDTH - 90.0, y + BAR + 12.0, human(end), 10));
    // One bar per pool.
    for (i, p) in pools.iter().enumerate() {
        let y = 50.0 + GAP * (i as f64 + 1.0);
        let name = match p.id {
            7 => "pool 7 (ISA)".to_string(),
            n => format!("pool {n}"),
        };
        doc = doc.add(label(10.0, y + 18.0, name, 12));
        let (lo, hi) = (p.span.start.as_u64(), p.span.end());
        let per = (p.cells.len() as f64).max(1.0);
        let w = (WIDTH - LEFT - 10.0) / per;
        for (c, cell) in p.cells.iter().enumerate() {
            doc = doc.add(
                Rectangle::new()
                    .set("x", LEFT + c as f64 * w)
                    .set("y", y)
                    .set("width", w + 0.05)
                    .set("height", BAR)
                    .set("fill", colour(cell))
                    .add(Title::new(format!(
                        "{} free, {} used, {} reserved, {} header frames",
                        cell.free, cell.used, cell.reserved, cell.header
                    ))),
            );
        }
        if let Some((s, e)) = p.largest_free {
            let (x0, x1) = (scale(s * PAGE_SIZE as u64, lo, hi), scale(e * PAGE_SIZE as u64, lo, hi));
            doc = doc.add(
                Rectangle::new()
                    .set("x", x0)
                    .set("y", y - 2.0)
                    .set("width", (x1 - x0).max(1.0))
                    .set("height", BAR + 4.0)
                    .set("fill", "none")
                    .set("stroke", "#1565c0")
                    .set("stroke-width", 1.5)
                    .add(Title::new(format!("largest free run: {}", human((e - s) * PAGE_SIZE as u64)))),
            );
        }
        let used = p.total - p.free;
        doc = doc.add(label(
            LEFT,
            y + BAR + 12.0,
            format!(
                "{:#x}..{:#x}  {} of {} frames used  largest free run {}",
                lo,
                hi,
                used,
                p.total,
                p.largest_free.map_or_else(|| "-".into(), |(s, e)| human((e - s) * PAGE_SIZE as u64))
            ),
            10,
        ));
    }
    let y = height - 16.0;
    let legend = [("#c8ebc8", "free"), ("#f03732", "used"), ("#9e9e9e", "reserved"), ("#3b3b98", "header")];
    let mut x = LEFT;
    for (fill, what) in legend {
        doc = doc
            .add(Rectangle::new().set("x", x).set("y", y - 10.0).set("width", 12).set("height", 12).set("fill", fill));
        doc = doc.add(label(x + 16.0, y, what, 11));
        x += 100.0;
    }
    doc.add(
        Rectangle::new()
            .set("x", x)
            .set("y", y - 10.0)
            .set("width", 12)
            .set("height", 12)
            .set("fill", "none")
            .set("stroke", "#1565c0"),
    )
    .add(label(x + 16.0, y, "largest free run", 11))
}

/// Writes the picture of `h` to `path`.
///
/// # Errors
/// The I/O error.
pub(crate) fn write(h: &Hosted, title: &str, path: &Path) -> std::io::Result<()> {
    svg::save(path, &render(h, title))
}

/// `memkit map`: the picture of the machine as booted, or after a scenario.
pub(crate) fn map_command(map: Option<&Path>, scenario: Option<&Path>, svg_path: &Path) -> ExitCode {
    let machine = match hosted::load_machine(map) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let mut h = match hosted::boot(machine) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let title = match scenario {
        Some(file) => {
            if let Err(code) = crate::scenario::run_into(&mut h, file) {
                return code;
            }
            format!("physical memory after {}", file.display())
        }
        None => "physical memory as booted".to_string(),
    };
    print!("{}", hosted::pool_table(h.pools.stats()));
    match write(&h, &title, svg_path) {
        Ok(()) => {
            println!("picture written to {}", svg_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("memkit: cannot write {}: {e}", svg_path.display());
            ExitCode::from(1)
        }
    }
}
