//! Several threads share one manager behind a lock, each working on its own dataspaces (and
//! copy-on-write copies of them), checking its own contents; at the end every frame and
//! every byte of quota is back.

use memkit_testkit::dataspace::fixture as common;

use std::sync::{Arc, Mutex};

use memkit_dataspace::{ClientId, CopyLength, CopyRequest, DmFlags, FactoryId, NoRevoker, PoolId};
use memkit_types::{Access, FrameSource, PAGE_SIZE};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const THREADS: u32 = 4;
const ROUNDS: u32 = if cfg!(miri) { 20 } else { 2000 };
const PAGE: u64 = PAGE_SIZE as u64;

#[test]
fn threads_share_one_manager() {
    let shared = Arc::new(Mutex::new(common::mmu()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let me = ClientId::new(10 + t, 0);
                let mut rng = SmallRng::seed_from_u64(u64::from(t));
                let factory = shared.lock().unwrap().create_factory(FactoryId::ROOT, 64 * PAGE).unwrap();
                for round in 0..ROUNDS {
                    let pages = rng.random_range(1..6u64);
                    let byte = (round % 250) as u8 + 1;
                    let flags = if rng.random_bool(0.3) { DmFlags::PINNED } else { DmFlags::empty() };
                    let ds = {
                        let mut m = shared.lock().unwrap();
                        m.mem_open(factory, me, pages * PAGE, 0, flags, "s").unwrap()
                    };
                    let data = vec![byte; (pages * PAGE) as usize];
                    shared.lock().unwrap().write(ds, 0, &data, &mut NoRevoker).unwrap();
                    let copy = {
                        let mut m = shared.lock().unwrap();
                        m.copy_long(
                            me,
                            ds,
                            CopyRequest::new(0, 0, CopyLength::WholeDataspace).flags(DmFlags::COW).name("c"),
                            &mut NoRevoker,
                        )
                        .unwrap()
                    };
                    // Break copy-on-write on one page of the copy by a fault.
                    let victim = rng.random_range(0..pages) * PAGE;
                    {
                        let mut m = shared.lock().unwrap();
                        let w = m.map(copy, victim, Access::Write).unwrap();
                        m.memory_write_byte(w.frame, 0xee);
                    }
                    let mut back = vec![0; data.len()];
                    shared.lock().unwrap().read(ds, 0, &mut back).unwrap();
                    assert_eq!(back, data, "thread {t}: the source changed");
                    shared.lock().unwrap().read(copy, 0, &mut back).unwrap();
                    assert_eq!(back[victim as usize], 0xee);
                    back[victim as usize] = byte;
                    assert_eq!(back, data, "thread {t}: the copy differs");
                    let mut m = shared.lock().unwrap();
                    m.close(me, ds).unwrap();
                    m.close(me, copy).unwrap();
                }
                let mut m = shared.lock().unwrap();
                assert_eq!(m.quota(factory).unwrap().used, 0);
                m.destroy_factory(factory).unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut m = shared.lock().unwrap();
    common::check(&mut m);
    let pool = m.pool(PoolId::DEFAULT).unwrap();
    assert_eq!(pool.free_frames(), pool.total_frames());
    assert_eq!(m.quota(FactoryId::ROOT).unwrap().used, 0);
}

trait WriteByte {
    fn memory_write_byte(&self, frame: memkit_types::Frame, byte: u8);
}

impl WriteByte for common::Dsm {
    fn memory_write_byte(&self, frame: memkit_types::Frame, byte: u8) {
        use memkit_types::PhysMemory;
        self.memory().write(frame.start_address(), &[byte]);
    }
}
