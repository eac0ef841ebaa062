//! Shared set-up of the scenario tests: a manager over model pools and a recording revoker.
#![allow(dead_code, unreachable_pub)]

use memkit_dataspace::{Config, DataspaceId, Manager, PageRange, PoolId, RevokeKind, Revoker};
use memkit_types::testing::{ModelFrameSource, SparseRam};
use memkit_types::{Frame, FrameCount, FrameSource};

pub type Dsm = Manager<ModelFrameSource, SparseRam>;

/// Pool 0: 16 MiB at 16 MiB (2 MiB aligned, for superpages). Pool 7: 1 MiB .. 16 MiB.
pub const POOL0_START: u64 = 0x1000;
pub const POOL0_FRAMES: u64 = 4096;
pub const POOL7_START: u64 = 0x100;
pub const POOL7_FRAMES: u64 = 0x1000 - 0x100;

pub fn manager(config: Config) -> Dsm {
    let mut m = Manager::new(config, SparseRam::new());
    m.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(POOL0_START), FrameCount::new(POOL0_FRAMES)));
    m.set_pool(PoolId::ISA_DMA, ModelFrameSource::new(Frame::from_number(POOL7_START), FrameCount::new(POOL7_FRAMES)));
    m
}

pub fn mmu() -> Dsm {
    manager(Config::new(1 << 40))
}

pub fn used(m: &Dsm, pool: PoolId) -> u64 {
    let p = m.pool(pool).expect("pool");
    p.total_frames().get() - p.free_frames().get()
}

/// Checks the invariants and that the pools gave out exactly the frames dataspaces hold.
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

pub fn read(m: &mut Dsm, ds: DataspaceId, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    m.read(ds, offset, &mut buf).expect("readable");
    buf
}
