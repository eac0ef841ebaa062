//! The scenario language: one operation per line, over every layer of the hosted stack.
//!
//! ```text
//!   # a comment; blank lines are skipped
//!   space   NAME [size=SIZE]                      an address space (a window, default 64M)
//!   ds      NAME SIZE [contiguous] [pinned] [superpages] [pool=N] [at=PADDR] [align=LOG2] [owner=TASK]
//!   copy    NAME SRC [cow] [owner=TASK]           l4dm_copy (copy-on-write with `cow`)
//!   copy_long NAME SRC SRC_OFF DST_OFF LEN [cow]  l4dm_copy_long, byte offsets
//!   resize  DS SIZE [owner=TASK]                  grow or shrink (0 closes)
//!   close   DS [owner=TASK]      close_all TASK   closing, by the owner only
//!   area    NAME SPACE SIZE [at=VADDR] [align=LOG2]
//!   attach  NAME SPACE DS [size=SIZE] [offset=OFF] [at=VADDR|in=AREA] [align=LOG2] [rights=r|rw] [eager]
//!   detach  REGION
//!   store   REGION OFFSET DATA                    real stores: "text" or bytes (0xab 12 ...)
//!   load    REGION OFFSET LEN                     real loads, printed
//!   frames  NAME POOL COUNT [below=PADDR]  free_frames NAME          the frame allocator
//!   xmalloc NAME SIZE [align=LOG2] [heap=HEAP]    xmfree NAME        the kernel heaps
//!   pools | regions SPACE | info DS | heaps       print state
//!   expect load REGION OFFSET DATA   expect size DS N   expect free POOL OP N
//!   expect owner DS TASK   expect fail OPERATION...   (OP is = < > <= >=)
//! ```
//!
//! Numbers are decimal or `0x` hex, with an optional `K`, `M` or `G` suffix. An error names
//! its line; `memkit run` stops at the first, `memkit shell` reports it and goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::ptr::NonNull;

use memkit_dataspace::{ClientId, CopyLength, DataspaceId, DmFlags, FactoryId, Placement};
use memkit_heap::HeapId;
use memkit_host::SpaceId;
use memkit_region::{AttachRequest, DetachFlags, Flags};
use memkit_types::{Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, Rights, VirtAddr};

use crate::hosted::{self, Hosted};

/// The help text of the shell.
pub(crate) const HELP: &str = r#"operations (one per line; numbers: 42, 0x2a, 4K, 2M, 1G):
  space NAME [size=SIZE]                        create an address space (default 64M window)
  ds NAME SIZE [contiguous] [pinned] [superpages] [pool=N] [at=PADDR] [align=LOG2] [owner=TASK]
  copy NAME SRC [cow] [owner=TASK]              copy a dataspace (copy-on-write with cow)
  copy_long NAME SRC SRC_OFF DST_OFF LEN [cow]  copy bytes into a new dataspace
  resize DS SIZE [owner=TASK]                   grow or shrink a dataspace (0 closes it)
  close DS [owner=TASK] | close_all TASK        close one dataspace, or all of a client
  area NAME SPACE SIZE [at=VADDR] [align=LOG2]  reserve an area in a space
  attach NAME SPACE DS [size=SIZE] [offset=OFF] [at=VADDR | in=AREA] [align=LOG2] [rights=r|rw] [eager]
  detach REGION                                 detach a region
  store REGION OFFSET DATA                      real stores: "text" or bytes (0xab 12 ...)
  load REGION OFFSET LEN                        real loads, printed in hex
  frames NAME POOL COUNT [below=PADDR]          allocate contiguous frames from a pool
  free_frames NAME                              give them back
  xmalloc NAME SIZE [align=LOG2] [heap=kernel|pinned|kernel4k|kernel16m|pinned4k|pinned16m]
  xmfree NAME                                   free a heap block
  pools | regions SPACE | info DS | heaps       print state
  expect load REGION OFFSET DATA                the bytes loaded must be DATA
  expect size DS N | expect owner DS TASK       dataspace facts
  expect free POOL OP N                         free frames of a pool (OP: = < > <= >=)
  expect fail OPERATION...                      the operation must fail
  help                                          this text"#;

/// The named things a scenario made.
#[derive(Debug, Default)]
pub(crate) struct Names {
    spaces: BTreeMap<String, SpaceId>,
    dataspaces: BTreeMap<String, DataspaceId>,
    regions: BTreeMap<String, (SpaceId, VirtAddr, usize)>,
    areas: BTreeMap<String, (SpaceId, VirtAddr, usize)>,
    frames: BTreeMap<String, (usize, Frame, FrameCount)>,
    blocks: BTreeMap<String, (NonNull<u8>, HeapId)>,
}

/// A scenario being run: the stack and the names.
pub(crate) struct Session<'h> {
    h: &'h mut Hosted,
    names: Names,
    out: Vec<String>,
}

type Res<T = ()> = Result<T, String>;

fn number(s: &str) -> Res<u64> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        digits.parse::<u64>()
    };
    v.ok().and_then(|v| v.checked_mul(mult)).ok_or_else(|| format!("'{s}' is not a number"))
}

fn usize_of(s: &str) -> Res<usize> {
    usize::try_from(number(s)?).map_err(|_| format!("'{s}' is too large"))
}

/// Splits a line into words; a double-quoted string is one word (quotes kept).
fn words(line: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => w.push('\n'),
                        Some(o) => w.push(o),
                        None => return Err("unfinished string".into()),
                    },
                    Some(o) => w.push(o),
                    None => return Err("unfinished string".into()),
                }
            }
            out.push(w);
        } else if c == '#' {
            break;
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

/// Positional words and `key=value` options of one operation.
struct Args<'a> {
    op: &'a str,
    pos: Vec<&'a str>,
    opts: BTreeMap<&'a str, &'a str>,
    flags: Vec<&'a str>,
}

const FLAG_WORDS: [&str; 6] = ["contiguous", "pinned", "superpages", "cow", "eager", "search"];

impl<'a> Args<'a> {
    fn parse(w: &'a [String]) -> Self {
        let mut a = Args { op: w[0].as_str(), pos: Vec::new(), opts: BTreeMap::new(), flags: Vec::new() };
        for word in &w[1..] {
            if let Some((k, v)) = word.split_once('=')
                && !word.starts_with('"')
            {
                a.opts.insert(k, v);
            } else if FLAG_WORDS.contains(&word.as_str()) {
                a.flags.push(word.as_str());
            } else {
                a.pos.push(word.as_str());
            }
        }
        a
    }

    fn want(&self, n: usize, usage: &str) -> Res {
        if self.pos.len() < n { Err(format!("usage: {usage}")) } else { Ok(()) }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    fn owner(&self) -> Res<ClientId> {
        Ok(ClientId::new(self.opts.get("owner").map_or(Ok(1), |v| number(v))? as u32, 0))
    }

    fn check_known(&self, allowed: &[&str]) -> Res {
        if let Some(k) = self.opts.keys().find(|k| !allowed.contains(k)) {
            return Err(format!("{}: unknown option {k}=", self.op));
        }
        Ok(())
    }
}

fn data(words: &[&str]) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    for w in words {
        if let Some(s) = w.strip_prefix('"') {
            out.extend_from_slice(s.as_bytes());
        } else {
            let v = number(w)?;
            out.push(u8::try_from(v).map_err(|_| format!("byte {w} is above 255"))?);
        }
    }
    if out.is_empty() {
        return Err("no data".into());
    }
    Ok(out)
}

fn heap_of(name: Option<&&str>) -> Res<HeapId> {
    Ok(match name.copied().unwrap_or("kernel") {
        "kernel" => HeapId::Kernel,
        "pinned" => HeapId::Pinned,
        "kernel4k" => HeapId::Kernel4K64K,
        "kernel16m" => HeapId::Kernel16M,
        "pinned4k" => HeapId::Pinned4K64K,
        "pinned16m" => HeapId::Pinned16M,
        other => return Err(format!("no heap '{other}'")),
    })
}

impl<'h> Session<'h> {
    pub(crate) fn new(h: &'h mut Hosted) -> Self {
        Session { h, names: Names::default(), out: Vec::new() }
    }

    /// Output lines produced since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    fn space(&self, n: &str) -> Res<SpaceId> {
        self.names.spaces.get(n).copied().ok_or_else(|| format!("no space '{n}'"))
    }

    fn ds(&self, n: &str) -> Res<DataspaceId> {
        self.names.dataspaces.get(n).copied().ok_or_else(|| format!("no dataspace '{n}'"))
    }

    fn region(&self, n: &str) -> Res<(SpaceId, VirtAddr, usize)> {
        self.names.regions.get(n).copied().ok_or_else(|| format!("no region '{n}'"))
    }

    fn fresh(&self, n: &str) -> Res {
        let taken = self.names.spaces.contains_key(n)
            || self.names.dataspaces.contains_key(n)
            || self.names.regions.contains_key(n)
            || self.names.areas.contains_key(n)
            || self.names.frames.contains_key(n)
            || self.names.blocks.contains_key(n);
        if taken { Err(format!("the name '{n}' is taken")) } else { Ok(()) }
    }

    /// Runs one line; `Ok` for a blank line or comment.
    pub(crate) fn line(&mut self, line: &str) -> Res {
        let w = words(line)?;
        if w.is_empty() {
            return Ok(());
        }
        self.op(&w)
    }

    fn op(&mut self, w: &[String]) -> Res {
        let a = Args::parse(w);
        match a.op {
            "help" => {
                self.out.push(HELP.to_string());
                Ok(())
            }
            "space" => self.op_space(&a),
            "ds" => self.op_ds(&a),
            "copy" => self.op_copy(&a),
            "copy_long" => self.op_copy_long(&a),
            "resize" => self.op_resize(&a),
            "close" => self.op_close(&a),
            "close_all" => self.op_close_all(&a),
            "area" => self.op_area(&a),
            "attach" => self.op_attach(&a),
            "detach" => self.op_detach(&a),
            "store" => self.op_store(&a),
            "load" => {
                a.want(3, "load REGION OFFSET LEN")?;
                let bytes = self.load(a.pos[0], a.pos[1], usize_of(a.pos[2])?)?;
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                self.out.push(format!("{}+{}: {}", a.pos[0], a.pos[1], hex.join(" ")));
                Ok(())
            }
            "frames" => self.op_frames(&a),
            "free_frames" => self.op_free_frames(&a),
            "xmalloc" => self.op_xmalloc(&a),
            "xmfree" => self.op_xmfree(&a),
            "pools" => {
                self.out.push(hosted::pool_table(self.h.pools.stats()));
                Ok(())
            }
            "heaps" => {
                self.out.push(self.h.heap_report());
                Ok(())
            }
            "regions" => self.op_regions(&a),
            "info" => self.op_info(&a),
            "expect" => self.op_expect(w),
            other => Err(format!("unknown operation '{other}' (try: help)")),
        }
    }

    fn op_space(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "space NAME [size=SIZE]")?;
        a.check_known(&["size"])?;
        self.fresh(a.pos[0])?;
        let size = a.opts.get("size").map_or(Ok(64 << 20), |s| usize_of(s))?;
        let id = self.h.system.create_space(size).map_err(|e| e.to_string())?;
        self.names.spaces.insert(a.pos[0].to_string(), id);
        Ok(())
    }

    fn op_ds(&mut self, a: &Args<'_>) -> Res {
        a.want(2, "ds NAME SIZE [contiguous] [pinned] [superpages] [pool=N] [at=PADDR] [align=LOG2] [owner=TASK]")?;
        a.check_known(&["pool", "at", "align", "owner"])?;
        self.fresh(a.pos[0])?;
        let size = number(a.pos[1])?;
        let mut flags = DmFlags::empty();
        for (word, f) in
            [("contiguous", DmFlags::CONTIGUOUS), ("pinned", DmFlags::PINNED), ("superpages", DmFlags::SUPERPAGES)]
        {
            if a.has(word) {
                flags |= f;
            }
        }
        let pool = a.opts.get("pool").map_or(Ok(0), |p| number(p))? as u32;
        let placement = match a.opts.get("at") {
            Some(p) => Placement::Fixed(PhysAddr::try_new(number(p)?).map_err(|e| e.to_string())?),
            None => Placement::AnyAddr,
        };
        let align = a.opts.get("align").map_or(Ok(12), |v| number(v))? as u32;
        let owner = a.owner()?;
        let name = a.pos[0];
        let id = self
            .h
            .system
            .lock(|s| s.manager.memphys_open(FactoryId::ROOT, owner, pool, placement, size, align, flags, name))
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_copy(&mut self, a: &Args<'_>) -> Res {
        a.want(2, "copy NAME SRC [cow] [owner=TASK]")?;
        a.check_known(&["owner"])?;
        self.fresh(a.pos[0])?;
        let src = self.ds(a.pos[1])?;
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let name = a.pos[0];
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy(owner, src, flags, name, &mut r)
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_copy_long(&mut self, a: &Args<'_>) -> Res {
        a.want(5, "copy_long NAME SRC SRC_OFF DST_OFF LEN [cow] [owner=TASK]")?;
        a.check_known(&["owner"])?;
        self.fresh(a.pos[0])?;
        let src = self.ds(a.pos[1])?;
        let (so, dof, len) = (number(a.pos[2])?, number(a.pos[3])?, number(a.pos[4])?);
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let name = a.pos[0];
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy_long(owner, src, so, dof, CopyLength::Bytes(len), flags, name, &mut r)
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    fn op_resize(&mut self, a: &Args<'_>) -> Res {
        a.want(2, "resize DS SIZE [owner=TASK]")?;
        a.check_known(&["owner"])?;
        let ds = self.ds(a.pos[0])?;
        let size = number(a.pos[1])?;
        let owner = a.owner()?;
        self.h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.resize(owner, ds, size, &mut r)
            })
            .map_err(|e| e.to_string())
    }

    fn op_close(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "close DS [owner=TASK]")?;
        a.check_known(&["owner"])?;
        let ds = self.ds(a.pos[0])?;
        let owner = a.owner()?;
        // The name stays: it now names a closed dataspace, so that later operations on it
        // reach the manager and fail there.
        self.h.system.lock(|s| s.manager.close(owner, ds)).map_err(|e| e.to_string())
    }

    fn op_close_all(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "close_all TASK")?;
        let client = ClientId::new(number(a.pos[0])? as u32, 0);
        let n =
            self.h.system.lock(|s| s.manager.close_all(client, client, DmFlags::empty())).map_err(|e| e.to_string())?;
        self.out.push(format!("closed {n} dataspaces of task {}", a.pos[0]));
        Ok(())
    }

    fn op_area(&mut self, a: &Args<'_>) -> Res {
        a.want(3, "area NAME SPACE SIZE [at=VADDR] [align=LOG2]")?;
        a.check_known(&["at", "align"])?;
        self.fresh(a.pos[0])?;
        let space = self.space(a.pos[1])?;
        let size = usize_of(a.pos[2])?;
        let align = a.opts.get("align").map_or(Ok(12), |v| number(v))? as u8;
        let start = self.h.system.lock(|s| {
            let map = s.region_map_mut(space).map_err(|e| e.to_string())?;
            let (start, flags) = match a.opts.get("at") {
                Some(v) => (VirtAddr::try_new(usize_of(v)?).map_err(|e| e.to_string())?, Flags::empty()),
                None => (map.window_start(), Flags::SEARCH_ADDR),
            };
            map.reserve_area(start, size, flags, align).map_err(|e| e.to_string())
        })?;
        self.names.areas.insert(a.pos[0].to_string(), (space, start, size));
        self.out.push(format!("area {} at {start}", a.pos[0]));
        Ok(())
    }

    fn op_attach(&mut self, a: &Args<'_>) -> Res {
        a.want(
            3,
            "attach NAME SPACE DS [size=SIZE] [offset=OFF] [at=VADDR | in=AREA] [align=LOG2] [rights=r|rw] [eager]",
        )?;
        a.check_known(&["size", "offset", "at", "in", "align", "rights"])?;
        self.fresh(a.pos[0])?;
        let space = self.space(a.pos[1])?;
        let ds = self.ds(a.pos[2])?;
        let ds_size = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
        let offset = a.opts.get("offset").map_or(Ok(0), |v| number(v))?;
        let size = match a.opts.get("size") {
            Some(v) => usize_of(v)?,
            None => usize::try_from(ds_size.saturating_sub(offset)).map_err(|_| "too large".to_string())?,
        };
        let rights = match a.opts.get("rights").copied().unwrap_or("rw") {
            "r" => Rights::READ,
            "rw" => Rights::RW,
            "rx" => Rights::READ | Rights::EXECUTE,
            other => return Err(format!("rights '{other}' (want r, rw or rx)")),
        };
        let align = a.opts.get("align").map_or(Ok(12), |v| number(v))? as u8;
        let mut req = AttachRequest::new(ds, size, rights).offset(offset).align(align);
        req = match (a.opts.get("at"), a.opts.get("in")) {
            (Some(_), Some(_)) => return Err("attach: at= and in= exclude each other".into()),
            (Some(v), None) => req.at(VirtAddr::try_new(usize_of(v)?).map_err(|e| e.to_string())?),
            (None, Some(area)) => {
                let &(asp, start, _) = self.names.areas.get(*area).ok_or_else(|| format!("no area '{area}'"))?;
                if asp != space {
                    return Err(format!("area '{area}' is in another space"));
                }
                let mut r = req.flags(Flags::IN_AREA);
                r.start = start;
                r
            }
            (None, None) => {
                let start =
                    self.h.system.lock(|s| s.region_map(space).map(|m| m.window_start())).map_err(|e| e.to_string())?;
                req.search(start)
            }
        };
        if a.has("eager") {
            req = req.flags(Flags::EAGER_MAP);
        }
        let addr =
            self.h.system.lock(|s| s.attach(space, &req)).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let size = size.next_multiple_of(PAGE_SIZE);
        self.names.regions.insert(a.pos[0].to_string(), (space, addr, size));
        self.out.push(format!("region {} at {addr}, {} bytes", a.pos[0], size));
        Ok(())
    }

    fn op_detach(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "detach REGION")?;
        let (space, addr, size) = self.region(a.pos[0])?;
        self.h
            .system
            .lock(|s| s.detach(space, addr, size, DetachFlags::OVERLAP))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.names.regions.remove(a.pos[0]);
        Ok(())
    }

    /// Checks that every page of `offset .. offset + len` of region `name` would be resolved
    /// for `access` (so that a refused access is an error, not the end of the process), and
    /// returns the space and the first address.
    fn reach(&self, name: &str, offset: &str, len: usize, access: Access) -> Res<(SpaceId, VirtAddr)> {
        let (space, start, size) = self.region(name)?;
        let off = usize_of(offset)?;
        if off.checked_add(len).is_none_or(|e| e > size) {
            return Err(format!("{name}+{off:#x}..+{len}: outside the region ({size:#x} bytes)"));
        }
        let first = start.as_usize() + off;
        let mut page = first & !(PAGE_SIZE - 1);
        while page < first + len.max(1) {
            let addr = VirtAddr::new(page.max(first));
            if !self.h.system.would_resolve(space, addr, access) {
                return Err(format!(
                    "{access:?} at {name}+{:#x} would fault unresolved (rights or dataspace size)",
                    addr.as_usize() - start.as_usize()
                ));
            }
            page += PAGE_SIZE;
        }
        Ok((space, VirtAddr::new(first)))
    }

    fn load(&self, name: &str, offset: &str, len: usize) -> Res<Vec<u8>> {
        let (space, addr) = self.reach(name, offset, len, Access::Read)?;
        let mut buf = vec![0u8; len];
        self.h.system.load(space, addr, &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    fn op_store(&mut self, a: &Args<'_>) -> Res {
        a.want(3, "store REGION OFFSET DATA")?;
        let bytes = data(&a.pos[2..])?;
        let (space, addr) = self.reach(a.pos[0], a.pos[1], bytes.len(), Access::Write)?;
        self.h.system.store(space, addr, &bytes).map_err(|e| e.to_string())
    }

    fn op_frames(&mut self, a: &Args<'_>) -> Res {
        a.want(3, "frames NAME POOL COUNT [below=PADDR]")?;
        a.check_known(&["below"])?;
        self.fresh(a.pos[0])?;
        let pool_id = usize_of(a.pos[1])?;
        let pool = self.h.pools.pool(pool_id).ok_or_else(|| format!("pool {pool_id} has no memory"))?;
        let count = FrameCount::new(number(a.pos[2])?);
        let below = match a.opts.get("below") {
            Some(v) => Some(PhysAddr::try_new(number(v)?).map_err(|e| e.to_string())?),
            None => None,
        };
        let frame = FrameSource::allocate(pool.allocator(), count, Order::ZERO, below).map_err(|e| e.to_string())?;
        self.out.push(format!("frames {} at {:#x}", a.pos[0], frame.start_address().as_u64()));
        self.names.frames.insert(a.pos[0].to_string(), (pool_id, frame, count));
        Ok(())
    }

    fn op_free_frames(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "free_frames NAME")?;
        let &(pool, frame, count) =
            self.names.frames.get(a.pos[0]).ok_or_else(|| format!("no frames '{}'", a.pos[0]))?;
        let p = self.h.pools.pool(pool).ok_or("no pool")?;
        FrameSource::free(p.allocator(), frame, count).map_err(|e| e.to_string())?;
        // The name goes with its frames: once freed they may be anyone's (the kernel heaps'
        // pages come from pool 0), and a second free must not give them back under their
        // new owner.
        self.names.frames.remove(a.pos[0]);
        Ok(())
    }

    fn op_xmalloc(&mut self, a: &Args<'_>) -> Res {
        a.want(2, "xmalloc NAME SIZE [align=LOG2] [heap=HEAP]")?;
        a.check_known(&["align", "heap"])?;
        self.fresh(a.pos[0])?;
        let size = usize_of(a.pos[1])?;
        let align = a.opts.get("align").map_or(Ok(3), |v| number(v))? as u32;
        let heap = heap_of(a.opts.get("heap"))?;
        let ptr = self.h.heaps().try_xmalloc(size, align, heap).map_err(|e| e.to_string())?;
        self.names.blocks.insert(a.pos[0].to_string(), (ptr, heap));
        Ok(())
    }

    fn op_xmfree(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "xmfree NAME")?;
        let &(ptr, heap) = self.names.blocks.get(a.pos[0]).ok_or_else(|| format!("no block '{}'", a.pos[0]))?;
        // The name stays, so that a second xmfree reaches the heap (and fails there).
        self.h.heaps().xmfree(ptr, heap).map_err(|e| e.to_string())
    }

    fn op_regions(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "regions SPACE")?;
        let space = self.space(a.pos[0])?;
        let regions = self.h.system.lock(|s| s.region_map(space).map(|m| m.regions())).map_err(|e| e.to_string())?;
        for r in regions {
            self.out.push(format!(
                "{}..{:#x} {:?} offset {:#x} dataspace {}",
                r.start,
                r.start.as_usize() + r.size,
                r.rights,
                r.offset,
                r.dataspace
            ));
        }
        Ok(())
    }

    fn op_info(&mut self, a: &Args<'_>) -> Res {
        a.want(1, "info DS")?;
        let ds = self.ds(a.pos[0])?;
        let line = self
            .h
            .system
            .lock(|s| {
                s.manager.info(ds).map(|i| {
                    format!(
                        "{}: {} bytes, owner {}, {:?}, pool {}, refs {}",
                        i.name, i.size, i.owner, i.kind, i.pool, i.refs
                    )
                })
            })
            .map_err(|e| e.to_string())?;
        self.out.push(line);
        Ok(())
    }

    fn op_expect(&mut self, w: &[String]) -> Res {
        let Some(what) = w.get(1) else { return Err("usage: expect load|size|owner|free|fail ...".into()) };
        let rest: Vec<&str> = w[2..].iter().map(String::as_str).collect();
        match what.as_str() {
            "fail" => {
                if rest.is_empty() {
                    return Err("usage: expect fail OPERATION...".into());
                }
                match self.op(&w[2..]) {
                    Ok(()) => Err(format!("expected '{}' to fail, it succeeded", rest.join(" "))),
                    Err(e) => {
                        self.out.push(format!("failed as expected: {e}"));
                        Ok(())
                    }
                }
            }
            "load" => {
                if rest.len() < 3 {
                    return Err("usage: expect load REGION OFFSET DATA".into());
                }
                let want = data(&rest[2..])?;
                let got = self.load(rest[0], rest[1], want.len())?;
                if got == want {
                    Ok(())
                } else {
                    Err(format!("expected {want:02x?} at {}+{}, loaded {got:02x?}", rest[0], rest[1]))
                }
            }
            "size" => {
                if rest.len() < 2 {
                    return Err("usage: expect size DS N".into());
                }
                let ds = self.ds(rest[0])?;
                let want = number(rest[1])?;
                let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
                if got == want { Ok(()) } else { Err(format!("expected size {want} of {}, it is {got}", rest[0])) }
            }
            "owner" => {
                if rest.len() < 2 {
                    return Err("usage: expect owner DS TASK".into());
                }
                let ds = self.ds(rest[0])?;
                let want = ClientId::new(number(rest[1])? as u32, 0);
                let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.owner)).map_err(|e| e.to_string())?;
                if got == want { Ok(()) } else { Err(format!("expected owner {want} of {}, it is {got}", rest[0])) }
            }
            "free" => {
                if rest.len() < 3 {
                    return Err("usage: expect free POOL OP N".into());
                }
                let pool = usize_of(rest[0])?;
                let free = self
                    .h
                    .pools
                    .pool(pool)
                    .ok_or_else(|| format!("pool {pool} has no memory"))?
                    .allocator()
                    .free_frames()
                    .get();
                let n = number(rest[2])?;
                let ok = match rest[1] {
                    "=" | "==" => free == n,
                    "<" => free < n,
                    ">" => free > n,
                    "<=" => free <= n,
                    ">=" => free >= n,
                    other => return Err(format!("comparison '{other}' (want = < > <= >=)")),
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("expected pool {pool} free frames {} {n}, it has {free}", rest[1]))
                }
            }
            other => Err(format!("expect {other}: unknown (want load, size, owner, free or fail)")),
        }
    }
}

/// Runs every line of `text`; the first error, with its line number.
pub(crate) fn run_text(
    session: &mut Session<'_>,
    text: &str,
    mut echo: impl FnMut(Vec<String>),
) -> Result<usize, String> {
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        session.line(line).map_err(|e| format!("line {}: {e}\n  {}", i + 1, line.trim()))?;
        echo(session.take_output());
        n += 1;
    }
    Ok(n)
}

/// Runs the scenario `file` on an already booted stack.
///
/// # Errors
/// The exit code after printing the error.
pub(crate) fn run_into(h: &mut Hosted, file: &Path) -> Result<(), ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("memkit: {}: {e}", file.display());
        ExitCode::from(2)
    })?;
    let mut session = Session::new(h);
    run_text(&mut session, &text, |lines| lines.iter().for_each(|l| println!("{l}"))).map_err(|e| {
        eprintln!("memkit: {}: {e}", file.display());
        ExitCode::from(1)
    })?;
    Ok(())
}

/// `memkit run FILE`.
pub(crate) fn run_file(map: Option<&Path>, file: &Path) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    match run_into(&mut h, file) {
        Ok(()) => {
            println!("{}: ok ({} faults resolved)", file.display(), memkit_host::faults_resolved());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `memkit shell`.
pub(crate) fn shell(map: Option<&Path>) -> ExitCode {
    let mut h = match hosted::load_machine(map).and_then(hosted::boot) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("memkit: {e}");
            return ExitCode::from(2);
        }
    };
    let mut session = Session::new(&mut h);
    println!("memkit shell: the scenario language, one operation per line; 'help' lists them, 'quit' ends.");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("memkit> ");
        let _ = std::io::stdout().flush();
        let Some(Ok(line)) = lines.next() else { break };
        let t = line.trim();
        if t == "quit" || t == "exit" {
            break;
        }
        match session.line(&line) {
            Ok(()) => session.take_output().iter().for_each(|l| println!("{l}")),
            Err(e) => {
                session.take_output().iter().for_each(|l| println!("{l}"));
                println!("error: {e}");
            }
        }
    }
    ExitCode::SUCCESS
}
