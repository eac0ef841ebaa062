//! Plain-Rust models of RAM and of a frame source, for the tests of the layers above.
//!
//! [`SparseRam`] keeps only the frames that were written; [`ModelFrameSource`] is a simple
//! first-fit frame source over a range of frames with fault injection (fail the k-th
//! allocation), so a test can check that a failed operation leaks nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use memkit_types::{
    Frame, FrameCount, FrameSource, FrameSourceError, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysMemory,
};
use spin::Mutex;

/// RAM in plain Rust memory: frames that were never written read as zero.
#[derive(Default)]
pub struct SparseRam {
    frames: Mutex<BTreeMap<u64, Box<[u8; PAGE_SIZE]>>>,
}

impl fmt::Debug for SparseRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseRam").field("frames_written", &self.frames.lock().len()).finish()
    }
}

impl SparseRam {
    /// Empty RAM: every byte reads as zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one byte.
    #[must_use]
    pub fn read_byte(&self, addr: PhysAddr) -> u8 {
        let mut b = [0u8; 1];
        self.read(addr, &mut b);
        b[0]
    }
}

impl PhysMemory for SparseRam {
    fn zero(&self, frame: Frame, count: FrameCount) {
        let mut frames = self.frames.lock();
        for n in frame.number()..frame.number() + count.get() {
            frames.remove(&n);
        }
    }

    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        let mut frames = self.frames.lock();
        for i in 0..count.get() {
            match frames.get(&(src.number() + i)).cloned() {
                Some(data) => frames.insert(dst.number() + i, data),
                None => frames.remove(&(dst.number() + i)),
            };
        }
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        let frames = self.frames.lock();
        let mut a = addr.as_u64();
        let mut done = 0;
        while done < buf.len() {
            let within = (a % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - within).min(buf.len() - done);
            match frames.get(&(a / PAGE_SIZE as u64)) {
                Some(data) => buf[done..done + n].copy_from_slice(&data[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
            a += n as u64;
        }
    }

    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        let mut frames = self.frames.lock();
        let mut a = addr.as_u64();
        let mut done = 0;
        while done < buf.len() {
            let within = (a % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - within).min(buf.len() - done);
            let data = frames.entry(a / PAGE_SIZE as u64).or_insert_with(|| Box::new([0u8; PAGE_SIZE]));
            data[within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
            a += n as u64;
        }
    }
}

#[derive(Debug)]
struct ModelState {
    free: BTreeSet<u64>,
    allocations: u64,
    fail_at: Option<u64>,
}

/// A first-fit frame source over the frames `start .. start + count`, in plain Rust memory.
///
/// It is slow (linear) and simple on purpose: it is the reference the tests trust.
#[derive(Debug)]
pub struct ModelFrameSource {
    start: u64,
    count: u64,
    state: Mutex<ModelState>,
}

impl ModelFrameSource {
    /// A source managing `count` frames from `start` on, all free.
    #[must_use]
    pub fn new(start: Frame, count: FrameCount) -> Self {
        let free = (start.number()..start.number() + count.get()).collect();
        ModelFrameSource {
            start: start.number(),
            count: count.get(),
            state: Mutex::new(ModelState { free, allocations: 0, fail_at: None }),
        }
    }

    /// Makes the `k`-th allocation from now on (counting from 0) fail with
    /// [`FrameSourceError::Exhausted`], and every allocation after it succeed again;
    /// `None` turns fault injection off.
    pub fn fail_allocation(&self, k: Option<u64>) {
        let mut s = self.state.lock();
        s.fail_at = k.map(|k| s.allocations + k);
    }

    /// The number of allocation requests served or refused so far.
    #[must_use]
    pub fn allocation_requests(&self) -> u64 {
        self.state.lock().allocations
    }

    /// Whether `frame` is currently allocated.
    #[must_use]
    pub fn is_allocated(&self, frame: Frame) -> bool {
        let n = frame.number();
        n >= self.start && n < self.start + self.count && !self.state.lock().free.contains(&n)
    }

    fn injected_failure(s: &mut ModelState) -> bool {
        let k = s.allocations;
        s.allocations += 1;
        s.fail_at == Some(k)
    }
}

impl FrameSource for ModelFrameSource {
    fn allocate(&self, count: FrameCount, align: Order, limit: Option<PhysAddr>) -> Result<Frame, FrameSourceError> {
        if count.get() == 0 {
            return Err(FrameSourceError::Invalid);
        }
        let mut s = self.state.lock();
        if Self::injected_failure(&mut s) {
            return Err(FrameSourceError::Exhausted(count));
        }
        let step = align.frame_count().get();
        let end = self.start + self.count;
        let mut first = self.start.next_multiple_of(step);
        while first + count.get() <= end {
            if let Some(l) = limit
                && (first + count.get()) << PAGE_SHIFT > l.as_u64()
            {
                break;
            }
            if (first..first + count.get()).all(|n| s.free.contains(&n)) {
                for n in first..first + count.get() {
                    s.free.remove(&n);
                }
                return Ok(Frame::from_number(first));
            }
            first += step;
        }
        Err(FrameSourceError::Exhausted(count))
    }

    fn allocate_at(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        let (first, n) = (start.number(), count.get());
        if n == 0 || first < self.start || first + n > self.start + self.count {
            return Err(FrameSourceError::Invalid);
        }
        let mut s = self.state.lock();
        if Self::injected_failure(&mut s) {
            return Err(FrameSourceError::Exhausted(count));
        }
        if let Some(taken) = (first..first + n).find(|f| !s.free.contains(f)) {
            return Err(FrameSourceError::InUse(Frame::from_number(taken)));
        }
        for f in first..first + n {
            s.free.remove(&f);
        }
        Ok(())
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        let (first, n) = (start.number(), count.get());
        if n == 0 || first < self.start || first + n > self.start + self.count {
            return Err(FrameSourceError::Invalid);
        }
        let mut s = self.state.lock();
        if let Some(free) = (first..first + n).find(|f| s.free.contains(f)) {
            return Err(FrameSourceError::NotAllocated(Frame::from_number(free)));
        }
        s.free.extend(first..first + n);
        Ok(())
    }

    fn free_frames(&self) -> FrameCount {
        FrameCount::new(self.state.lock().free.len() as u64)
    }

    fn total_frames(&self) -> FrameCount {
        FrameCount::new(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_ram_round_trip() {
        let ram = SparseRam::new();
        ram.write(PhysAddr::new(0xff0), &[1u8; 32]);
        let mut buf = [0u8; 40];
        ram.read(PhysAddr::new(0xfe8), &mut buf);
        assert_eq!(&buf[..8], &[0; 8]);
        assert_eq!(&buf[8..], &[1; 32]);
        ram.copy(Frame::from_number(1), Frame::from_number(5), FrameCount::new(1));
        assert_eq!(ram.read_byte(PhysAddr::new(0x5000)), 1);
        ram.zero(Frame::from_number(1), FrameCount::new(1));
        assert_eq!(ram.read_byte(PhysAddr::new(0x1000)), 0);
    }

    #[test]
    fn model_source() {
        let src = ModelFrameSource::new(Frame::from_number(3), FrameCount::new(16));
        let a = src.allocate(FrameCount::new(4), Order::new(2), None).unwrap();
        assert_eq!(a.number(), 4);
        assert_eq!(
            src.allocate_at(Frame::from_number(5), FrameCount::new(1)),
            Err(FrameSourceError::InUse(Frame::from_number(5)))
        );
        src.fail_allocation(Some(0));
        assert!(src.allocate(FrameCount::new(1), Order::ZERO, None).is_err());
        assert!(src.allocate(FrameCount::new(1), Order::ZERO, None).is_ok());
        assert_eq!(src.free(a, FrameCount::new(4)), Ok(()));
        assert_eq!(src.free(a, FrameCount::new(4)), Err(FrameSourceError::NotAllocated(a)));
        assert_eq!(src.free_frames(), FrameCount::new(15));
    }
}
