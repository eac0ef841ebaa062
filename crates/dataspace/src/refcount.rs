//! Reference counts of frames shared copy-on-write.
//!
//! A frame referenced by exactly one page entry has no count here (the common case costs
//! nothing); a frame shared by `n >= 2` page entries has count `n`. Counts are kept in chunks
//! of 4096 frames (16 MiB of physical memory), found by binary search with the last chunk
//! cached, so sharing a long run of frames touches one chunk after another.
//!
//! ```text
//!   frame number:  | chunk key (frame >> 12) | index (frame & 4095) |
//!   chunks: [(key 3, [0,0,2,0,..]), (key 9, [..])]   sorted by key
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;

use memkit_types::Frame;

const CHUNK_SHIFT: u32 = 12;
const CHUNK_FRAMES: usize = 1 << CHUNK_SHIFT;

#[derive(Debug)]
struct Chunk {
    key: u64,
    nonzero: u32,
    counts: Box<[u32; CHUNK_FRAMES]>,
}

/// The share counts of frames referenced by two or more page entries.
#[derive(Debug, Default)]
pub(crate) struct ShareCounts {
    chunks: Vec<Chunk>,
    last: usize,
}

impl ShareCounts {
    #[inline]
    fn find(&mut self, key: u64) -> Option<usize> {
        if let Some(c) = self.chunks.get(self.last)
            && c.key == key
        {
            return Some(self.last);
        }
        let i = self.chunks.binary_search_by_key(&key, |c| c.key).ok()?;
        self.last = i;
        Some(i)
    }

    #[inline]
    fn split(frame: u64) -> (u64, usize) {
        (frame >> CHUNK_SHIFT, (frame as usize) & (CHUNK_FRAMES - 1))
    }

    /// The number of page entries referencing `frame` if it is shared, else 0.
    pub(crate) fn get(&mut self, frame: Frame) -> u32 {
        let (key, i) = Self::split(frame.number());
        self.find(key).map_or(0, |c| self.chunks[c].counts[i])
    }

    /// Whether `frame` is referenced by more than one page entry.
    pub(crate) fn is_shared(&mut self, frame: Frame) -> bool {
        self.get(frame) != 0
    }

    /// One more page entry references frame number `frame`.
    #[inline]
    pub(crate) fn share(&mut self, frame: u64) {
        let (key, i) = Self::split(frame);
        let c = match self.find(key) {
            Some(c) => c,
            None => {
                let at = self.chunks.partition_point(|c| c.key < key);
                self.chunks.insert(at, Chunk { key, nonzero: 0, counts: Box::new([0; CHUNK_FRAMES]) });
                self.last = at;
                at
            }
        };
        let chunk = &mut self.chunks[c];
        let n = &mut chunk.counts[i];
        if *n == 0 {
            *n = 2;
            chunk.nonzero += 1;
        } else {
            *n += 1;
        }
    }

    /// One page entry drops its reference to `frame`; returns whether that was the last
    /// reference (the frame is to be freed).
    pub(crate) fn unshare(&mut self, frame: u64) -> bool {
        let (key, i) = Self::split(frame);
        let Some(c) = self.find(key) else { return true };
        let chunk = &mut self.chunks[c];
        match chunk.counts[i] {
            0 => true,
            2 => {
                chunk.counts[i] = 0;
                chunk.nonzero -= 1;
                if chunk.nonzero == 0 {
                    self.chunks.remove(c);
                    self.last = 0;
                }
                false
            }
            _ => {
                chunk.counts[i] -= 1;
                false
            }
        }
    }

    /// Every shared frame with its count, in frame order.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.chunks.iter().flat_map(|c| {
            c.counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n != 0)
                .map(move |(i, n)| ((c.key << CHUNK_SHIFT) + i as u64, *n))
        })
    }

    /// Checks the chunk bookkeeping.
    #[cfg(any(test, feature = "check"))]
    pub(crate) fn check(&self) {
        for w in self.chunks.windows(2) {
            assert!(w[0].key < w[1].key, "share-count chunks out of order");
        }
        for c in &self.chunks {
            let nz = c.counts.iter().filter(|n| **n != 0).count() as u32;
            assert_eq!(nz, c.nonzero, "chunk {} nonzero count", c.key);
            assert!(nz > 0, "empty chunk {} kept", c.key);
            assert!(c.counts.iter().all(|n| *n == 0 || *n >= 2), "count 1 stored in chunk {}", c.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_and_unshare() {
        let mut s = ShareCounts::default();
        let f = Frame::from_number(5000);
        let n = f.number();
        assert!(!s.is_shared(f));
        s.share(n);
        assert_eq!(s.get(f), 2);
        s.share(n);
        assert_eq!(s.get(f), 3);
        assert!(!s.unshare(n));
        assert!(!s.unshare(n));
        assert!(!s.is_shared(f));
        assert!(s.unshare(n));
        s.check();
        assert_eq!(s.iter().count(), 0);
    }
}
