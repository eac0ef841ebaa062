//! Plain-Rust models of RAM and of a frame source, for the tests of the layers above.
//!
//! [`SparseRam`] keeps only the frames that were written; [`ModelFrameSource`] is a simple
//! first-fit frame source over a range of frames with fault injection (fail the k-th
//! allocation), so a test can check that a failed operation leaks nothing.

use std::collections::BTreeMap;
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
    /// The free frames as maximal runs: first frame → one past the last. Adjacent runs are
    /// always joined, so the frame at a run's end is allocated (or past the source).
    free: BTreeMap<u64, u64>,
    free_count: u64,
    allocations: u64,
    fail_at: Option<u64>,
}

/// A first-fit frame source over the frames `start .. start + count`, in plain Rust memory.
///
/// It is simple on purpose (a first-fit scan of the free runs in address order): it is the
/// reference the tests trust.
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
        let (first, n) = (start.number(), count.get());
        let free = if n > 0 { BTreeMap::from([(first, first + n)]) } else { BTreeMap::new() };
        ModelFrameSource {
            start: first,
            count: n,
            state: Mutex::new(ModelState { free, free_count: n, allocations: 0, fail_at: None }),
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
        n >= self.start && n < self.start + self.count && self.state.lock().run_containing(n).is_none()
    }

    fn injected_failure(s: &mut ModelState) -> bool {
        let k = s.allocations;
        s.allocations += 1;
        s.fail_at == Some(k)
    }
}

impl ModelState {
    /// The free run holding frame `n`.
    fn run_containing(&self, n: u64) -> Option<(u64, u64)> {
        self.free.range(..=n).next_back().map(|(&a, &b)| (a, b)).filter(|&(_, b)| n < b)
    }

    /// The first free frame of `[first, end)`.
    fn first_free_in(&self, first: u64, end: u64) -> Option<u64> {
        if self.run_containing(first).is_some() {
            return Some(first);
        }
        self.free.range(first..end).next().map(|(&a, _)| a)
    }

    /// Takes `[first, end)`, which lies inside one free run.
    fn take(&mut self, first: u64, end: u64) {
        let (a, b) = self.run_containing(first).expect("taken from a free run");
        debug_assert!(end <= b);
        self.free.remove(&a);
        if a < first {
            self.free.insert(a, first);
        }
        if end < b {
            self.free.insert(end, b);
        }
        self.free_count -= end - first;
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
        // The lowest aligned start whose frames are all free: the first run that holds
        // one (runs are maximal, so no window spans two).
        let (step, n) = (align.frame_count().get(), count.get());
        let found = s.free.iter().find_map(|(&a, &b)| {
            let first = a.next_multiple_of(step);
            (first + n <= b).then_some(first)
        });
        match found {
            Some(first) if limit.is_none_or(|l| (first + n) << PAGE_SHIFT <= l.as_u64()) => {
                s.take(first, first + n);
                Ok(Frame::from_number(first))
            }
            _ => Err(FrameSourceError::Exhausted(count)),
        }
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
        match s.run_containing(first) {
            Some((_, b)) if first + n <= b => {
                s.take(first, first + n);
                Ok(())
            }
            // The run ends inside the range (the frame at its end is allocated), or
            // `first` itself is.
            Some((_, b)) => Err(FrameSourceError::InUse(Frame::from_number(b))),
            None => Err(FrameSourceError::InUse(Frame::from_number(first))),
        }
    }

    fn free(&self, start: Frame, count: FrameCount) -> Result<(), FrameSourceError> {
        let (first, n) = (start.number(), count.get());
        if n == 0 || first < self.start || first + n > self.start + self.count {
            return Err(FrameSourceError::Invalid);
        }
        let mut s = self.state.lock();
        if let Some(free) = s.first_free_in(first, first + n) {
            return Err(FrameSourceError::NotAllocated(Frame::from_number(free)));
        }
        // Joined with the runs just before and just after.
        let (mut a, mut b) = (first, first + n);
        if let Some((&pa, &pb)) = s.free.range(..first).next_back()
            && pb == first
        {
            s.free.remove(&pa);
            a = pa;
        }
        if let Some(after) = s.free.remove(&b) {
            b = after;
        }
        s.free.insert(a, b);
        s.free_count += n;
        Ok(())
    }

    fn free_frames(&self) -> FrameCount {
        FrameCount::new(self.state.lock().free_count)
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

    /// The free runs against one flag per frame, over random allocations (with orders and
    /// limits), placed allocations and frees (of live, free and half-free ranges).
    #[test]
    fn model_source_matches_a_set_of_frames() {
        use std::collections::BTreeSet;
        let (start, count) = (5u64, 300u64);
        let src = ModelFrameSource::new(Frame::from_number(start), FrameCount::new(count));
        let mut free: BTreeSet<u64> = (start..start + count).collect();
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let steps = if cfg!(miri) { 300 } else { 20_000 };
        for _ in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 24 + 1;
            let first = start + (x >> 8) % (count + 4) - 2;
            match (x >> 32) % 4 {
                0 | 1 => {
                    let step = 1u64 << ((x >> 40) % 4);
                    let limit = (x >> 44)
                        .is_multiple_of(4)
                        .then(|| PhysAddr::new(((x >> 46) % (start + count + 8)) << PAGE_SHIFT));
                    let mut want = None;
                    let mut f = start.next_multiple_of(step);
                    while f + n <= start + count {
                        if limit.is_some_and(|l| (f + n) << PAGE_SHIFT > l.as_u64()) {
                            break;
                        }
                        if (f..f + n).all(|k| free.contains(&k)) {
                            want = Some(f);
                            break;
                        }
                        f += step;
                    }
                    let got = src.allocate(FrameCount::new(n), Order::new((step.trailing_zeros()) as u8), limit);
                    assert_eq!(got.ok().map(Frame::number), want);
                    if let Some(f) = want {
                        (f..f + n).for_each(|k| assert!(free.remove(&k)));
                        live.push((f, n));
                    }
                }
                2 => {
                    let got = src.allocate_at(Frame::from_number(first), FrameCount::new(n));
                    if first < start || first + n > start + count {
                        assert_eq!(got, Err(FrameSourceError::Invalid));
                    } else if let Some(t) = (first..first + n).find(|k| !free.contains(k)) {
                        assert_eq!(got, Err(FrameSourceError::InUse(Frame::from_number(t))));
                    } else {
                        assert_eq!(got, Ok(()));
                        (first..first + n).for_each(|k| assert!(free.remove(&k)));
                        live.push((first, n));
                    }
                }
                _ => {
                    // A live block, or any range (often partly free).
                    let (f, n) = if !live.is_empty() && (x >> 50).is_multiple_of(2) {
                        live.swap_remove((x >> 20) as usize % live.len())
                    } else {
                        (first, n)
                    };
                    let got = src.free(Frame::from_number(f), FrameCount::new(n));
                    if f < start || f + n > start + count {
                        assert_eq!(got, Err(FrameSourceError::Invalid));
                    } else if let Some(k) = (f..f + n).find(|k| free.contains(k)) {
                        assert_eq!(got, Err(FrameSourceError::NotAllocated(Frame::from_number(k))));
                    } else {
                        assert_eq!(got, Ok(()));
                        free.extend(f..f + n);
                        live.retain(|&(a, m)| a + m <= f || f + n <= a);
                    }
                }
            }
            assert_eq!(src.free_frames().get(), free.len() as u64);
            let s = src.state.lock();
            let runs: Vec<(u64, u64)> = s.free.iter().map(|(&a, &b)| (a, b)).collect();
            drop(s);
            let mut from_set: Vec<(u64, u64)> = Vec::new();
            for &k in &free {
                match from_set.last_mut() {
                    Some(r) if r.1 == k => r.1 += 1,
                    _ => from_set.push((k, k + 1)),
                }
            }
            assert_eq!(runs, from_set, "maximal runs");
            for k in [first, first + n] {
                assert_eq!(
                    src.is_allocated(Frame::from_number(k)),
                    (start..start + count).contains(&k) && !free.contains(&k)
                );
            }
        }
    }
}
