//! The frame allocator (`memkit-phys`) under random actions, checked against a reference
//! model: shared by its property test, its random-action driver and the cargo-fuzz target.
//!
//! The model is the state of every frame (free, allocated, reserved) in a `Vec`, and the list
//! of live runs. Every action's result is checked against it (the exact error, the frames of
//! a success: aligned, inside the area, free before, disjoint from every live run, from the
//! reserved regions and from the header), and [`Harness::check`] compares every frame and
//! runs the allocator's own invariant checker.

use memkit_phys::{
    AddRegionError, AllocateAtError, AllocateError, Allocator, FreeError, MemoryArea, get_header, header_words,
};
use memkit_types::{Frame, FrameCount, Order, PAGE_SHIFT, PhysAddr};

/// One step of a random workload. Numbers are reduced modulo what the area allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// The seed's `allocate(order)`.
    Allocate {
        /// Reduced modulo `max_order + 2` (one past the largest valid order).
        order: u8,
    },
    /// A block below a limit (a frame offset into the area).
    AllocateBelow {
        /// Reduced modulo `max_order + 1`.
        order: u8,
        /// Frame offset of the limit, modulo the area's frame count + 1.
        limit: u32,
    },
    /// A run of any count, aligned, maybe below a limit.
    AllocateRun {
        /// Frames (0 is an error), modulo 300.
        count: u16,
        /// Alignment order, modulo 8.
        align: u8,
        /// Frame offset of the limit, if any.
        limit: Option<u32>,
    },
    /// Frames at a fixed place.
    AllocateAt {
        /// Frame offset (may be outside the area).
        offset: u32,
        /// Frames, modulo 70.
        count: u8,
    },
    /// Frees a live run whole (with the seed's `free` when it is a block).
    Free {
        /// Which live run.
        pick: u32,
    },
    /// Frees a piece of a live run.
    FreePart {
        /// Which live run.
        pick: u32,
        /// First frame of the piece, modulo the run's length.
        skip: u16,
        /// Frames, modulo what is left of the run, plus one.
        count: u16,
    },
    /// Frees something arbitrary: free, reserved, the header, outside, unaligned.
    FreeAnything {
        /// Frame offset (may be outside the area).
        offset: u32,
        /// Frames, modulo 17.
        count: u8,
        /// Use the seed's `free` (a block) rather than `free_run`.
        seed: bool,
    },
    /// Copies the header to a new buffer and carries on through the new mapping.
    Remap,
    /// Lets a range join (`add_region`): reserved frames become free; anything else (free,
    /// allocated, the header, outside, unaligned) is refused.
    AddRegion {
        /// Frame offset (may be outside the area).
        offset: u32,
        /// Frames, modulo 70.
        count: u8,
        /// Start one byte off a frame boundary (an unaligned region).
        unaligned: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Allocated,
    Reserved,
}

/// An allocator, its header buffer and the reference model.
#[derive(Debug)]
pub struct Harness {
    area: MemoryArea,
    start: u64,
    header: Vec<u64>,
    /// The header region's frames: first and one past the last.
    header_frames: (u64, u64),
    state: Vec<State>,
    live: Vec<(u64, u64)>,
    max_order: u8,
    steps: u64,
}

impl Harness {
    /// An allocator over `frames` frames from frame `start` on, with `reserved` regions given
    /// as frame offsets and counts into the area (clipped).
    ///
    /// # Panics
    /// When the area is empty or there is no room for the header.
    #[must_use]
    pub fn new(start: u64, frames: u64, reserved: &[(u64, u64)]) -> Self {
        let area = MemoryArea::from_frames(Frame::from_number(start), FrameCount::new(frames));
        let regions: Vec<MemoryArea> = reserved
            .iter()
            .map(|&(o, n)| MemoryArea::from_frames(Frame::from_number(start + o), FrameCount::new(n)))
            .collect();
        let header_region = get_header(area, regions.iter().copied()).expect("room for the header");
        let mut header = vec![0u64; header_words(area).expect("a valid area")];
        let a = Allocator::init(area, header_region, &mut header, regions.iter().copied()).expect("init");
        let max_order = a.max_order().get();
        let mut state = vec![State::Free; frames as usize];
        for r in regions.iter().chain(core::iter::once(&header_region)) {
            let (s, e) = r.frames_outward();
            for f in s.max(start)..e.min(start + frames) {
                state[(f - start) as usize] = State::Reserved;
            }
        }
        let header_frames = header_region.frames_outward();
        let h = Harness { area, start, header, header_frames, state, live: Vec::new(), max_order, steps: 0 };
        h.check();
        h
    }

    /// Builds a harness from fuzz input: an area of 1 to 4096 frames (one time in sixteen up to
    /// 300 000, enough for three levels and three summary layers) at a random start, a few
    /// reserved regions.
    ///
    /// # Errors
    /// When the input runs out.
    pub fn arbitrary(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Self> {
        let frames = if u.ratio(1u8, 16)? {
            u64::from(u.int_in_range(4097u32..=300_000)?)
        } else {
            u64::from(u.int_in_range(1u16..=4096)?)
        };
        let start = u64::from(u.int_in_range(0u32..=1 << 20)?);
        let n = u.int_in_range(0..=4)?;
        let mut reserved = Vec::new();
        for _ in 0..n {
            reserved.push((u.int_in_range(0..=frames + 8)?, u.int_in_range(0..=frames / 4 + 1)?));
        }
        let area = MemoryArea::from_frames(Frame::from_number(start), FrameCount::new(frames));
        let regions =
            reserved.iter().map(|&(o, n)| MemoryArea::from_frames(Frame::from_number(start + o), FrameCount::new(n)));
        if get_header(area, regions).is_err() {
            return Ok(Harness::new(start, frames, &[]));
        }
        Ok(Harness::new(start, frames, &reserved))
    }

    fn view(&mut self) -> Allocator<'_> {
        Allocator::attach(&mut self.header).expect("the header stays valid")
    }

    fn frames(&self) -> u64 {
        self.state.len() as u64
    }

    fn st(&self, f: u64) -> Option<State> {
        f.checked_sub(self.start).and_then(|i| self.state.get(i as usize).copied())
    }

    fn mark(&mut self, s: u64, n: u64, to: State) {
        for f in s..s + n {
            let i = (f - self.start) as usize;
            assert_ne!(self.state[i], State::Reserved, "frame {f:#x} reserved");
            assert_ne!(self.state[i], to, "frame {f:#x} already {to:?}");
            self.state[i] = to;
        }
    }

    fn take(&mut self, s: u64, n: u64, align: u8, limit: u64) {
        assert_eq!(s % (1 << align), 0, "run {s:#x} not aligned to order {align}");
        assert!(s >= self.start && s + n <= self.start + self.frames(), "run outside the area");
        assert!(s + n <= limit, "run {s:#x}+{n} past the limit {limit:#x}");
        self.mark(s, n, State::Allocated);
        self.live.push((s, n));
    }

    /// Whether the model has `n` free frames at an offset aligned to `2^align`, ending at or
    /// below `limit`.
    fn model_fits(&self, n: u64, align: u8, limit: u64) -> bool {
        // One pass over the free runs: a run from `rs` holds the block once its first
        // aligned start plus `n` reaches the frame after `f`.
        let end = (self.start + self.frames()).min(limit);
        let mut run = None;
        for f in self.start..end {
            if self.st(f) == Some(State::Free) {
                let rs: u64 = *run.get_or_insert(f);
                if rs.next_multiple_of(1 << align) + n <= f + 1 {
                    return true;
                }
            } else {
                run = None;
            }
        }
        false
    }

    fn limit_of(&self, offset: u32) -> u64 {
        self.start + u64::from(offset) % (self.frames() + 1)
    }

    /// Applies one action, checking its result against the model.
    ///
    /// # Panics
    /// When the allocator disagrees with the model.
    pub fn apply(&mut self, action: Action) {
        self.steps += 1;
        let max = self.max_order;
        match action {
            Action::Allocate { order } => {
                let o = (order % (max + 2)).min(Order::MAX.get());
                let r = self.view().allocate(Order::new(o));
                self.check_block(r, o, u64::MAX);
            }
            Action::AllocateBelow { order, limit } => {
                let o = order % (max + 1);
                let l = self.limit_of(limit);
                let r = self.view().allocate_below(Order::new(o), Some(PhysAddr::new(l << PAGE_SHIFT)));
                self.check_block(r, o, l);
            }
            Action::AllocateRun { count, align, limit } => {
                let n = u64::from(count % 300);
                let a = align % 8;
                let l = limit.map(|l| self.limit_of(l));
                let r = self.view().allocate_run(
                    FrameCount::new(n),
                    Order::new(a),
                    l.map(|l| PhysAddr::new(l << PAGE_SHIFT)),
                );
                let lim = l.unwrap_or(u64::MAX);
                match r {
                    Ok(f) => self.take(f.number(), n, a, lim),
                    Err(AllocateError::ZeroCount) => assert_eq!(n, 0),
                    Err(AllocateError::NotValid(_)) => assert!(n > self.frames() || a > max),
                    Err(AllocateError::PhysicalMemoryFull(_)) => {
                        assert!(!self.model_fits(n, a, lim), "a run of {n} aligned {a} below {lim:#x} was free")
                    }
                    Err(e) => panic!("allocate: an error the model does not know: {e:?}"),
                }
            }
            Action::AllocateAt { offset, count } => {
                let s = self.start + u64::from(offset) % (self.frames() + 16);
                let n = u64::from(count % 70);
                let r = self.view().allocate_at(Frame::from_number(s), FrameCount::new(n));
                let inside = n > 0 && s + n <= self.start + self.frames();
                match r {
                    Ok(()) => self.take(s, n, 0, u64::MAX),
                    Err(AllocateAtError::OutsideArea(_)) => assert!(!inside),
                    Err(e) => {
                        assert!(inside);
                        let first = (s..s + n).find(|&f| self.st(f) != Some(State::Free)).expect("a taken frame");
                        let want = match self.st(first) {
                            Some(State::Reserved) => AllocateAtError::Reserved(Frame::from_number(first)),
                            _ => AllocateAtError::InUse(Frame::from_number(first)),
                        };
                        assert_eq!(e, want);
                    }
                }
            }
            Action::Free { pick } => {
                if self.live.is_empty() {
                    return;
                }
                let (s, n) = self.live.swap_remove(pick as usize % self.live.len());
                let r = if n.is_power_of_two() && s.is_multiple_of(n) {
                    self.view().free(MemoryArea::from_frames(Frame::from_number(s), FrameCount::new(n)))
                } else {
                    self.view().free_run(Frame::from_number(s), FrameCount::new(n))
                };
                assert_eq!(r, Ok(()));
                self.mark(s, n, State::Free);
            }
            Action::FreePart { pick, skip, count } => {
                if self.live.is_empty() {
                    return;
                }
                let k = pick as usize % self.live.len();
                let (s, n) = self.live[k];
                let skip = u64::from(skip) % n;
                let m = u64::from(count) % (n - skip) + 1;
                assert_eq!(self.view().free_run(Frame::from_number(s + skip), FrameCount::new(m)), Ok(()));
                self.mark(s + skip, m, State::Free);
                self.live.swap_remove(k);
                if skip > 0 {
                    self.live.push((s, skip));
                }
                if skip + m < n {
                    self.live.push((s + skip + m, n - skip - m));
                }
            }
            Action::FreeAnything { offset, count, seed } => {
                let s = (self.start + u64::from(offset) % (self.frames() + 16)).saturating_sub(8);
                let n = u64::from(count % 17);
                let area = MemoryArea::from_frames(Frame::from_number(s), FrameCount::new(n));
                let r = if seed {
                    self.view().free(area)
                } else {
                    self.view().free_run(Frame::from_number(s), FrameCount::new(n))
                };
                let want = if seed && (!n.is_power_of_two() || !s.is_multiple_of(n)) {
                    Err(FreeError::Unaligned(area))
                } else if n == 0 || s < self.start || s + n > self.start + self.frames() {
                    Err(FreeError::OutsideArea(area))
                } else if let Some(f) = (s..s + n).find(|&f| self.st(f) == Some(State::Free)) {
                    Err(FreeError::AlreadyFree(Frame::from_number(f)))
                } else if let Some(f) = (s..s + n).find(|&f| self.st(f) == Some(State::Reserved)) {
                    Err(FreeError::Reserved(Frame::from_number(f)))
                } else {
                    Ok(())
                };
                assert_eq!(r, want);
                if r.is_ok() {
                    self.mark(s, n, State::Free);
                    self.rebuild_live();
                }
            }
            Action::Remap => {
                let copy = self.header.clone();
                self.header = copy;
            }
            Action::AddRegion { offset, count, unaligned } => {
                let s = (self.start + u64::from(offset) % (self.frames() + 16)).saturating_sub(8);
                let n = u64::from(count % 70);
                let region = MemoryArea::new(PhysAddr::new((s << PAGE_SHIFT) + u64::from(unaligned)), n << PAGE_SHIFT);
                let r = self.view().add_region(region);
                let (hs, he) = self.header_frames;
                let want = if unaligned {
                    Err(AddRegionError::Unaligned(region))
                } else if n == 0 || s < self.start || s + n > self.start + self.frames() {
                    Err(AddRegionError::OutsideArea(region))
                } else if s < he && hs < s + n {
                    Err(AddRegionError::Header(Frame::from_number(s.max(hs))))
                } else if let Some(f) = (s..s + n).find(|&f| self.st(f) != Some(State::Reserved)) {
                    Err(AddRegionError::NotReserved(Frame::from_number(f)))
                } else {
                    Ok(())
                };
                assert_eq!(r, want);
                if r.is_ok() {
                    for f in s..s + n {
                        self.state[(f - self.start) as usize] = State::Free;
                    }
                }
            }
        }
    }

    fn check_block(&mut self, r: Result<Frame, AllocateError>, o: u8, limit: u64) {
        let n = 1u64 << o;
        match r {
            Ok(f) => self.take(f.number(), n, o, limit),
            Err(AllocateError::NotValid(_)) => assert!(o > self.max_order),
            Err(AllocateError::PhysicalMemoryFull(_)) => {
                assert!(!self.model_fits(n, o, limit), "a free block of order {o} below {limit:#x} exists")
            }
            Err(AllocateError::ZeroCount) => panic!("zero count from a block allocation"),
            Err(e) => panic!("allocate: an error the model does not know: {e:?}"),
        }
    }

    /// Rebuilds the live runs from the frame states (after a free the model cannot attribute).
    fn rebuild_live(&mut self) {
        self.live.clear();
        let mut i = 0;
        while i < self.state.len() {
            if self.state[i] == State::Allocated {
                let s = i;
                while i < self.state.len() && self.state[i] == State::Allocated {
                    i += 1;
                }
                self.live.push((self.start + s as u64, (i - s) as u64));
            } else {
                i += 1;
            }
        }
    }

    /// Compares every frame with the model and runs the allocator's invariant checker.
    ///
    /// # Panics
    /// When they disagree or an invariant is broken.
    pub fn check(&self) {
        let mut words = self.header.clone();
        let a = Allocator::attach(&mut words).expect("a valid header");
        a.check_invariants();
        let mut free = 0;
        for (i, &s) in self.state.iter().enumerate() {
            let f = Frame::from_number(self.start + i as u64);
            assert_eq!(a.is_free(f), s == State::Free, "frame {f:?}: model says {s:?}");
            assert_eq!(a.is_reserved(f), s == State::Reserved, "frame {f:?}: model says {s:?}");
            free += u64::from(s == State::Free);
        }
        assert_eq!(a.free_frames().get(), free, "free count");
        let managed = self.state.iter().filter(|&&s| s != State::Reserved).count() as u64;
        assert_eq!(a.total_frames().get(), managed, "managed count");
        let st = a.stats();
        let by_order: u64 = st.free_blocks.iter().enumerate().map(|(k, &c)| c << k).sum();
        assert_eq!(by_order, free, "the free blocks by order add up to the free frames");
        assert_eq!(a.largest_free_order(), st.largest_free_order, "largest free order");
        assert_eq!(a.area(), self.area);
    }

    /// Checks only the allocator's invariants (cheaper than [`check`](Harness::check)).
    pub fn check_invariants(&mut self) {
        self.view().check_invariants();
    }

    /// Frees every live run and checks that the allocator is whole again.
    ///
    /// # Panics
    /// When a free fails or frames are missing afterwards.
    pub fn free_all(&mut self) {
        while let Some((s, n)) = self.live.pop() {
            assert_eq!(self.view().free_run(Frame::from_number(s), FrameCount::new(n)), Ok(()));
            self.mark(s, n, State::Free);
        }
        let total = self.view().total_frames();
        assert_eq!(self.view().free_frames(), total, "frames lost");
        self.check();
    }

    /// The header words (for the no-pointer test).
    #[must_use]
    pub fn header_words(&self) -> &[u64] {
        &self.header
    }

    /// Actions applied so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }
}
