//! A booted [`Runtime`] and the [`Session`]s run on it: the stack, the names a scenario
//! made, the output, and the release of all a session holds.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;

use memkit_dataspace::DataspaceId;
use memkit_heap::HeapId;
use memkit_host::HostSpaceId;
use memkit_types::{Frame, FrameCount, FrameSource, VirtAddr};

use super::{Command, Res, help, parse_line};
use crate::hosted::{self, Hosted};

/// Frames a scenario holds: the pool, the first frame, the count, and whether they were
/// given back (a second `free_frames` is then refused here: the frames may belong to
/// someone else by then).
pub(super) type Frames = (usize, Frame, FrameCount, bool);

/// The named things a scenario made.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) spaces: BTreeMap<String, HostSpaceId>,
    pub(super) dataspaces: BTreeMap<String, DataspaceId>,
    pub(super) regions: BTreeMap<String, (HostSpaceId, VirtAddr, usize)>,
    pub(super) areas: BTreeMap<String, (HostSpaceId, VirtAddr, usize)>,
    pub(super) frames: BTreeMap<String, Frames>,
    /// Heap blocks, and whether they were freed (as for frames).
    pub(super) blocks: BTreeMap<String, (NonNull<u8>, HeapId, bool)>,
}

/// A booted machine the scenario language runs on: the hosted stack over the machine's
/// RAM.
///
/// The RAM and the pools live as long as the process (the fault handler may reach them at
/// any time), so a process boots one runtime and runs many sessions on it, each releasing
/// what it made ([`Session::release_all`]).
#[derive(Debug)]
pub struct Runtime {
    hosted: Hosted,
}

impl Runtime {
    /// Brings `machine` up.
    ///
    /// # Errors
    /// A message when its RAM or its pools cannot be made.
    pub fn boot(machine: memkit_phys::Machine) -> Result<Self, String> {
        hosted::boot(machine).map(|hosted| Runtime { hosted })
    }

    /// A new session: no names yet.
    pub fn session(&mut self) -> Session<'_> {
        Session::new(&mut self.hosted)
    }

    /// The free frames of every pool, in pool order (a session that released all it made
    /// leaves them as it found them).
    #[must_use]
    pub fn free_frames(&self) -> Vec<u64> {
        self.hosted.pools.stats().map(|s| s.free_frames.get()).collect()
    }
}

/// A scenario being run: the stack and the names.
pub struct Session<'h> {
    pub(super) h: &'h mut Hosted,
    pub(super) names: Names,
    pub(super) out: Vec<String>,
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("names", &self.names).finish_non_exhaustive()
    }
}

impl<'h> Session<'h> {
    pub(crate) fn new(h: &'h mut Hosted) -> Self {
        Session { h, names: Names::default(), out: Vec::new() }
    }

    /// Output lines produced since the last call.
    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    /// Parses and runs one line; `Ok` for a blank line or a comment.
    ///
    /// # Errors
    /// The parser's or the operation's error (without the line number).
    pub fn line(&mut self, line: &str) -> Res {
        match parse_line(line)? {
            Some(cmd) => self.run(&cmd),
            None => Ok(()),
        }
    }

    /// Runs a parsed command.
    ///
    /// # Errors
    /// The operation's error.
    pub fn run(&mut self, cmd: &Command) -> Res {
        (cmd.op.run)(self, cmd)
    }

    /// Releases everything the session made and still holds: destroys its spaces (which
    /// detaches their regions), closes its dataspaces, gives back its frames and frees its
    /// heap blocks. Errors are ignored (a dataspace may already be closed); the names are
    /// forgotten.
    pub fn release_all(&mut self) {
        let names = std::mem::take(&mut self.names);
        for id in names.spaces.values() {
            let _ = self.h.system.destroy_space(*id);
        }
        for id in names.dataspaces.values() {
            let _ = self.h.system.lock(|s| {
                let owner = s.manager.info(*id).map(|i| i.owner).map_err(|e| e.to_string())?;
                s.manager.close(owner, *id).map_err(|e| e.to_string())
            });
        }
        for &(pool, frame, count, freed) in names.frames.values() {
            if !freed && let Some(p) = self.h.pools.pool(pool) {
                let _ = FrameSource::free(p.allocator(), frame, count);
            }
        }
        for &(ptr, heap, freed) in names.blocks.values() {
            if !freed {
                let _ = self.h.heaps().xmfree(ptr, heap);
            }
        }
    }

    pub(super) fn space(&self, n: &str) -> Res<HostSpaceId> {
        self.names.spaces.get(n).copied().ok_or_else(|| format!("no space '{n}'"))
    }

    pub(super) fn ds(&self, n: &str) -> Res<DataspaceId> {
        self.names.dataspaces.get(n).copied().ok_or_else(|| format!("no dataspace '{n}'"))
    }

    pub(super) fn region(&self, n: &str) -> Res<(HostSpaceId, VirtAddr, usize)> {
        self.names.regions.get(n).copied().ok_or_else(|| format!("no region '{n}'"))
    }

    pub(super) fn fresh(&self, n: &str) -> Res {
        let taken = self.names.spaces.contains_key(n)
            || self.names.dataspaces.contains_key(n)
            || self.names.regions.contains_key(n)
            || self.names.areas.contains_key(n)
            || self.names.frames.contains_key(n)
            || self.names.blocks.contains_key(n);
        if taken { Err(format!("the name '{n}' is taken")) } else { Ok(()) }
    }

    pub(super) fn op_help(&mut self, _: &Command) -> Res {
        self.out.push(help());
        Ok(())
    }
}
