//! The set-up the dataspace manager's scenario tests share: a manager over model pools and a
//! recording revoker.

use memkit_dataspace::{Config, DataspaceId, Manager, PageRange, PoolId, RevokeKind, Revoker};
use memkit_types::{Frame, FrameCount, FrameSource};

use crate::{ModelFrameSource, SparseRam};

/// A manager over model pools and RAM.
pub type Dsm = Manager<ModelFrameSource, SparseRam>;

/// Pool 0's first frame: pool 0 is 16 MiB at 16 MiB (2 MiB aligned, for superpages).
pub const POOL0_START: u64 = 0x1000;
/// Pool 0's frames.
pub const POOL0_FRAMES: u64 = 4096;
/// Pool 7's first frame: pool 7 is 1 MiB .. 16 MiB.
pub const POOL7_START: u64 = 0x100;
/// Pool 7's frames.
pub const POOL7_FRAMES: u64 = 0x1000 - 0x100;

/// A manager with `config` over pool 0 and pool 7, all free.
#[must_use]
pub fn manager(config: Config) -> Dsm {
    let mut m = Manager::new(config, SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(POOL0_START), FrameCount::new(POOL0_FRAMES)));
    m.set_pool(PoolId::ISA_DMA, ModelFrameSource::new(Frame::from_number(POOL7_START), FrameCount::new(POOL7_FRAMES)));
    m
}

/// A manager of an MMU system whose root factory may use 1 TiB, over pool 0 and pool 7.
#[must_use]
pub fn mmu() -> Dsm {
    manager(Config::new(1 << 40))
}

/// The frames `pool` has given out.
///
/// # Panics
/// When the manager has no such pool.
#[must_use]
pub fn used(m: &Dsm, pool: PoolId) -> u64 {
    let p = m.pool(pool).expect("pool");
    p.total_frames().get() - p.free_frames().get()
}

/// Checks the invariants and that the pools gave out exactly the frames dataspaces hold.
///
/// # Panics
/// When they do not.
pub fn check(m: &mut Dsm) {
    m.check_invariants();
    for pool in [PoolId::DEFAULT, PoolId::ISA_DMA] {
        assert_eq!(m.frames_held(pool), used(m, pool), "pool {pool}");
    }
}

/// A revoker that records every call.
#[derive(Default, Debug)]
pub struct Recorder(pub Vec<(DataspaceId, PageRange, RevokeKind)>);

impl Revoker for Recorder {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        self.0.push((ds, pages, kind));
    }
}

/// `len` bytes of `ds` from `offset` on.
///
/// # Panics
/// When the range cannot be read.
pub fn read(m: &mut Dsm, ds: DataspaceId, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    m.read(ds, offset, &mut buf).expect("readable");
    buf
}
