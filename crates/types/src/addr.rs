//! Physical and virtual addresses.

use core::fmt;

/// The error of a checked address constructor: the value does not fit the address type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrError {
    /// The value has bits set above the architecture's physical address width (52 bits).
    PhysTooLarge(u64),
    /// The value is not canonical (bits 48..64 are not copies of bit 47).
    NotCanonical(u64),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::PhysTooLarge(v) => write!(f, "physical address {v:#x} exceeds 52 bits"),
            AddrError::NotCanonical(v) => write!(f, "virtual address {v:#x} is not canonical"),
        }
    }
}

impl core::error::Error for AddrError {}

/// A physical address.
///
/// # Invariants
/// The value fits in 52 bits, the largest physical address width of x86_64 and of most
/// 64-bit architectures.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The largest physical address plus one.
    pub const LIMIT: u64 = 1 << 52;

    /// Makes a physical address.
    ///
    /// # Panics
    /// If `value` does not fit in 52 bits.
    #[inline]
    #[must_use]
    pub const fn new(value: u64) -> Self {
        match Self::try_new(value) {
            Ok(a) => a,
            Err(_) => panic!("physical address exceeds 52 bits"),
        }
    }

    /// Makes a physical address.
    ///
    /// # Errors
    /// [`AddrError::PhysTooLarge`] if `value` does not fit in 52 bits.
    #[inline]
    pub const fn try_new(value: u64) -> Result<Self, AddrError> {
        if value < Self::LIMIT { Ok(PhysAddr(value)) } else { Err(AddrError::PhysTooLarge(value)) }
    }

    /// The zero address.
    #[inline]
    #[must_use]
    pub const fn zero() -> Self {
        PhysAddr(0)
    }

    /// The address as a number.
    #[inline]
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align`, a power of two (`false` for any other
    /// `align`, 0 included: no address is aligned to an alignment that does not exist).
    #[inline]
    #[must_use]
    pub const fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of `align` (a power of two).
    ///
    /// # Panics
    /// If `align` is not a power of two (as `x86_64`'s `align_down`).
    #[inline]
    #[must_use]
    pub const fn align_down(self, align: u64) -> Self {
        assert!(align.is_power_of_two(), "alignment is not a power of two");
        PhysAddr(self.0 & !(align - 1))
    }

    /// The address plus `bytes`, or `None` past the physical limit.
    #[inline]
    #[must_use]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) if v < Self::LIMIT => Some(PhysAddr(v)),
            _ => None,
        }
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A virtual address.
///
/// # Invariants
/// The value is canonical for 48-bit virtual addressing: bits 48..64 copy bit 47.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(usize);

impl VirtAddr {
    /// Makes a virtual address.
    ///
    /// # Panics
    /// If `value` is not canonical.
    #[inline]
    #[must_use]
    pub const fn new(value: usize) -> Self {
        match Self::try_new(value) {
            Ok(a) => a,
            Err(_) => panic!("virtual address is not canonical"),
        }
    }

    /// Makes a virtual address.
    ///
    /// # Errors
    /// [`AddrError::NotCanonical`] if bits 48..64 are not copies of bit 47.
    #[inline]
    pub const fn try_new(value: usize) -> Result<Self, AddrError> {
        let top = (value as u64) >> 47;
        if top == 0 || top == 0x1_ffff { Ok(VirtAddr(value)) } else { Err(AddrError::NotCanonical(value as u64)) }
    }

    /// The zero address.
    #[inline]
    #[must_use]
    pub const fn zero() -> Self {
        VirtAddr(0)
    }

    /// The address as a number.
    #[inline]
    #[must_use]
    pub const fn as_usize(self) -> usize {
        self.0
    }

    /// The address as a `u64`.
    #[inline]
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0 as u64
    }

    /// Whether the address is a multiple of `align`, a power of two (`false` for any other
    /// `align`, 0 included: no address is aligned to an alignment that does not exist).
    #[inline]
    #[must_use]
    pub const fn is_aligned(self, align: usize) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of `align` (a power of two).
    ///
    /// # Panics
    /// If `align` is not a power of two (as `x86_64`'s `align_down`).
    #[inline]
    #[must_use]
    pub const fn align_down(self, align: usize) -> Self {
        assert!(align.is_power_of_two(), "alignment is not a power of two");
        VirtAddr(self.0 & !(align - 1))
    }

    /// The address plus `bytes`, or `None` on overflow or when the result is not canonical.
    #[inline]
    #[must_use]
    pub const fn checked_add(self, bytes: usize) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) => match Self::try_new(v) {
                Ok(a) => Some(a),
                Err(_) => None,
            },
            None => None,
        }
    }

    /// The number of bytes from `earlier` to `self`, or `None` if `earlier` is above `self`.
    #[inline]
    #[must_use]
    pub const fn checked_offset_from(self, earlier: VirtAddr) -> Option<usize> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn phys_limits() {
        assert!(PhysAddr::try_new(PhysAddr::LIMIT - 1).is_ok());
        assert_eq!(PhysAddr::try_new(PhysAddr::LIMIT), Err(AddrError::PhysTooLarge(PhysAddr::LIMIT)));
        assert_eq!(PhysAddr::new(0x1000).checked_add(PhysAddr::LIMIT), None);
        assert_eq!(PhysAddr::new(0x1234).align_down(0x1000), PhysAddr::new(0x1000));
        assert_eq!(format!("{:?}", PhysAddr::new(0x1000)), "PhysAddr(0x1000)");
    }

    #[test]
    fn alignments_that_are_not_powers_of_two() {
        // An alignment of 0 underflowed (a panic with overflow checks, a wrong answer
        // without); 3 gave an answer for a mask that is not an alignment.
        for align in [0u64, 3, 6, 0x1001, u64::MAX] {
            assert!(!PhysAddr::new(0).is_aligned(align), "{align}");
            assert!(!PhysAddr::new(0x1000).is_aligned(align), "{align}");
            let a = usize::try_from(align).unwrap();
            assert!(!VirtAddr::new(0).is_aligned(a), "{align}");
        }
        assert!(PhysAddr::new(0x3000).is_aligned(0x1000) && !PhysAddr::new(0x3000).is_aligned(0x2000));
        assert!(PhysAddr::new(0).is_aligned(1 << 63));
        assert!(VirtAddr::new(0x3000).is_aligned(0x1000) && !VirtAddr::new(0x3000).is_aligned(0x2000));
    }

    #[test]
    #[should_panic(expected = "alignment is not a power of two")]
    fn align_down_names_a_bad_alignment() {
        let _ = PhysAddr::new(0x1234).align_down(0);
    }

    #[test]
    fn virt_canonical() {
        assert!(VirtAddr::try_new(0x0000_7fff_ffff_f000).is_ok());
        assert!(VirtAddr::try_new(0xffff_8000_0000_0000).is_ok());
        assert_eq!(VirtAddr::try_new(0x0000_8000_0000_0000), Err(AddrError::NotCanonical(0x0000_8000_0000_0000)));
        assert_eq!(VirtAddr::new(0x0000_7fff_ffff_f000).checked_add(0x1000), None);
        assert_eq!(VirtAddr::new(0x2000).checked_offset_from(VirtAddr::new(0x1000)), Some(0x1000));
    }
}
