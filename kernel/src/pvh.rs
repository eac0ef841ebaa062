//! The PVH start info: how the loader describes the machine, above all its memory map.
//!
//! ```text
//!   hvm_start_info (ebx at entry)          hvm_memmap_table_entry × memmap_entries
//!   ┌ magic 0x336ec578, version, ... ┐      ┌ addr u64 │ size u64 │ type u32 │ reserved ┐
//!   │ memmap_paddr ──────────────────┼────▶ │   ...                                     │
//!   └ memmap_entries ────────────────┘      └───────────────────────────────────────────┘
//! ```
//!
//! Both structures are read once, through the boot identity map, into a [`MemoryMap`] kept by
//! value, so nothing here depends on the identity map afterwards.

use memkit_types::PhysAddr;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The most entries kept: as many as a machine's memory map holds (QEMU's PC machine reports
/// fewer than ten; UEFI firmware several hundred).
pub(crate) const MAX_ENTRIES: usize = memkit_phys::MAX_MAP_ENTRIES;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// What a memory-map entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryKind {
    /// RAM the kernel may use.
    Ram,
    /// Anything else: reserved, ACPI tables or NVS, unusable.
    Reserved(u32),
}

/// One range of the physical address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryRange {
    /// The first byte.
    pub(crate) start: PhysAddr,
    /// One past the last byte.
    pub(crate) end: PhysAddr,
    /// What it holds.
    pub(crate) kind: MemoryKind,
}

/// The machine's memory map, as the loader reported it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryMap {
    entries: [MemoryRange; MAX_ENTRIES],
    len: usize,
    rsdp: Option<PhysAddr>,
    command_line: [u8; COMMAND_LINE_MAX],
    command_line_len: usize,
}

/// The longest kernel command line kept (the rest is cut).
const COMMAND_LINE_MAX: usize = 128;

/// Why the start info could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartInfoError {
    /// The magic number is wrong: not entered through PVH.
    BadMagic(u32),
    /// Version 0 start info has no memory map.
    NoMemoryMap(u32),
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries(u32),
}

impl MemoryMap {
    /// Reads the start info at `start_info` (a physical address, identity-mapped).
    ///
    /// # Errors
    /// [`StartInfoError`] when the structure is not a PVH start info with a memory map.
    pub(crate) fn from_start_info(start_info: PhysAddr) -> Result<Self, StartInfoError> {
        let info: StartInfo = crate::boot_memory::read_identity(start_info);
        if info.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(info.magic));
        }
        if info.version < 1 || info.memmap_paddr == 0 {
            return Err(StartInfoError::NoMemoryMap(info.version));
        }
        let count = info.memmap_entries as usize;
        if count > MAX_ENTRIES {
            return Err(StartInfoError::TooManyEntries(info.memmap_entries));
        }
        let mut map = MemoryMap {
            entries: [MemoryRange { start: PhysAddr::zero(), end: PhysAddr::zero(), kind: MemoryKind::Ram };
                MAX_ENTRIES],
            len: 0,
            rsdp: (info.rsdp_paddr != 0).then(|| PhysAddr::new(info.rsdp_paddr)),
            command_line: [0; COMMAND_LINE_MAX],
            command_line_len: 0,
        };
        if info.cmdline_paddr != 0 && info.cmdline_paddr < crate::boot_memory::IDENTITY_LIMIT - COMMAND_LINE_MAX as u64
        {
            while map.command_line_len < COMMAND_LINE_MAX {
                let at = PhysAddr::new(info.cmdline_paddr + map.command_line_len as u64);
                let byte: u8 = crate::boot_memory::read_identity(at);
                if byte == 0 {
                    break;
                }
                map.command_line[map.command_line_len] = byte;
                map.command_line_len += 1;
            }
        }
        for i in 0..count {
            let at = PhysAddr::new(info.memmap_paddr + (i * size_of::<RawEntry>()) as u64);
            let raw: RawEntry = crate::boot_memory::read_identity(at);
            let Some(end) = raw.addr.checked_add(raw.size).filter(|&end| end <= PhysAddr::LIMIT) else {
                continue;
            };
            map.entries[map.len] = MemoryRange {
                start: PhysAddr::new(raw.addr),
                end: PhysAddr::new(end),
                kind: if raw.kind == 1 { MemoryKind::Ram } else { MemoryKind::Reserved(raw.kind) },
            };
            map.len += 1;
        }
        Ok(map)
    }

    /// The kernel command line (`-append` under QEMU), or "" when it is not text.
    pub(crate) fn command_line(&self) -> &str {
        core::str::from_utf8(&self.command_line[..self.command_line_len]).unwrap_or("")
    }

    /// Where the ACPI RSDP is, when the loader said (QEMU's PVH loader does).
    pub(crate) fn rsdp(&self) -> Option<PhysAddr> {
        self.rsdp
    }

    /// The entries, in the loader's order.
    pub(crate) fn entries(&self) -> &[MemoryRange] {
        &self.entries[..self.len]
    }

    /// The bytes of RAM.
    pub(crate) fn ram_bytes(&self) -> u64 {
        self.ram().map(|r| r.end.as_u64() - r.start.as_u64()).sum()
    }

    /// The RAM ranges.
    pub(crate) fn ram(&self) -> impl Iterator<Item = &MemoryRange> {
        self.entries().iter().filter(|r| r.kind == MemoryKind::Ram)
    }
}
