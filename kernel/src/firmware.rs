//! The machine's processors, from the ACPI MADT: each enabled local APIC is a CPU the
//! kernel can start.
//!
//! The tables are read with the `acpi` crate through the boot identity map (QEMU puts them
//! in the first 4 GiB), before the kernel switches to its own page tables, and only the
//! APIC IDs are kept.
//!
//! # Unsafe
//! The `acpi` crate reads the tables through [`IdentityHandler`]'s mappings: physical
//! address `p` at virtual address `p`, which the boot tables map for the first 4 GiB; the
//! loader gave the RSDP's address, and the crate checks every table's signature and checksum
//! before it reads further.

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};
use memkit_types::PhysAddr;

use crate::boot_memory::IDENTITY_LIMIT;
use crate::smp::MAX_CPUS;

/// Maps ACPI tables through the boot identity map.
#[derive(Debug, Clone, Copy)]
struct IdentityHandler;

impl AcpiHandler for IdentityHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(
            (physical_address as u64).checked_add(size as u64).is_some_and(|end| end <= IDENTITY_LIMIT),
            "ACPI table at {physical_address:#x} is not identity-mapped"
        );
        let virtual_address = NonNull::new(physical_address as *mut T).expect("ACPI tables are not at address 0");
        // SAFETY: the range is identity-mapped (checked above); the caller (the `acpi` crate)
        // reads a table the firmware wrote there.
        unsafe { PhysicalMapping::new(physical_address, virtual_address, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// The processors the firmware reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Processors {
    apic_ids: [u8; MAX_CPUS],
    count: usize,
    /// Enabled processors beyond [`MAX_CPUS`], which the kernel leaves halted.
    pub(crate) ignored: usize,
}

impl Processors {
    /// Only the CPU running now (no ACPI tables).
    pub(crate) fn only(apic_id: u8) -> Self {
        let mut apic_ids = [0; MAX_CPUS];
        apic_ids[0] = apic_id;
        Processors { apic_ids, count: 1, ignored: 0 }
    }

    /// The APIC IDs, the bootstrap processor's first.
    pub(crate) fn apic_ids(&self) -> &[u8] {
        &self.apic_ids[..self.count]
    }
}

/// Why the processors could not be listed.
#[derive(Debug)]
pub(crate) enum FirmwareError {
    /// The loader gave no RSDP.
    NoRsdp,
    /// The ACPI tables could not be read.
    Acpi(#[expect(dead_code, reason = "printed with the error")] AcpiError),
}

/// The enabled processors of the MADT found from `rsdp`, the one running now (`boot_apic_id`)
/// first.
///
/// # Errors
/// [`FirmwareError`] when there is no RSDP or the tables are not valid.
pub(crate) fn processors(rsdp: Option<PhysAddr>, boot_apic_id: u8) -> Result<Processors, FirmwareError> {
    let rsdp = rsdp.ok_or(FirmwareError::NoRsdp)?;
    // SAFETY: the loader reported the RSDP's physical address, which is identity-mapped;
    // the crate validates its signature and checksum.
    let tables =
        unsafe { AcpiTables::from_rsdp(IdentityHandler, rsdp.as_u64() as usize) }.map_err(FirmwareError::Acpi)?;
    let madt = tables.find_table::<Madt>().map_err(FirmwareError::Acpi)?;
    let mut found = Processors::only(boot_apic_id);
    for entry in madt.get().entries() {
        let MadtEntry::LocalApic(lapic) = entry else { continue };
        let (apic_id, flags) = (lapic.apic_id, lapic.flags);
        // Bit 0: enabled; bit 1: can be enabled later (hot plug), which the kernel does not do.
        if flags & 1 == 0 || apic_id == boot_apic_id {
            continue;
        }
        if found.count == MAX_CPUS {
            found.ignored += 1;
            continue;
        }
        found.apic_ids[found.count] = apic_id;
        found.count += 1;
    }
    Ok(found)
}
