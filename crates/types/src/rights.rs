//! Access rights, access kinds and cache modes.

use core::fmt;

bitflags::bitflags! {
    /// What a mapping or a handle allows: read, write, execute.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Rights: u8 {
        /// Loads are allowed.
        const READ = 0b001;
        /// Stores are allowed.
        const WRITE = 0b010;
        /// Instruction fetches are allowed.
        const EXECUTE = 0b100;
        /// Read and write.
        const RW = Self::READ.bits() | Self::WRITE.bits();
        /// Read, write and execute.
        const RWX = Self::RW.bits() | Self::EXECUTE.bits();
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.contains(Rights::READ) { 'r' } else { '-' };
        let w = if self.contains(Rights::WRITE) { 'w' } else { '-' };
        let x = if self.contains(Rights::EXECUTE) { 'x' } else { '-' };
        write!(f, "Rights({r}{w}{x})")
    }
}

impl Rights {
    /// Whether these rights allow `access`.
    #[inline]
    #[must_use]
    pub const fn allows(self, access: Access) -> bool {
        self.contains(access.required_rights())
    }
}

/// One memory access, as a page fault reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl Access {
    /// The rights an access of this kind needs.
    #[inline]
    #[must_use]
    pub const fn required_rights(self) -> Rights {
        match self {
            Access::Read => Rights::READ,
            Access::Write => Rights::WRITE,
            Access::Execute => Rights::EXECUTE,
        }
    }
}

/// How the processor caches a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheMode {
    /// Normal cached memory.
    #[default]
    WriteBack,
    /// Write-combining (frame buffers).
    WriteCombining,
    /// Uncached (device memory).
    Uncached,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn rights_allow() {
        assert!(Rights::RW.allows(Access::Write));
        assert!(!Rights::READ.allows(Access::Write));
        assert!(!Rights::RW.allows(Access::Execute));
        assert_eq!(format!("{:?}", Rights::READ | Rights::EXECUTE), "Rights(r-x)");
    }
}
