//! The current CPU, as the platform knows it: the index per-CPU structures choose by.

/// The id of the CPU running the caller (an APIC id in a kernel, a thread index hosted):
/// any small integer that differs between threads running at the same time. A per-CPU
/// structure takes it modulo its own number of slots (the frame cache's CPUs, the heap's
/// shards), so any value is valid.
///
/// A closure `Fn() -> usize` is a `CpuId`.
pub trait CpuId {
    /// The id of the CPU (or thread) running the caller.
    fn current_cpu(&self) -> usize;
}

impl<F: Fn() -> usize> CpuId for F {
    #[inline]
    fn current_cpu(&self) -> usize {
        self()
    }
}

/// A [`CpuId`] for a single CPU: every caller is CPU 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SingleCpu;

impl CpuId for SingleCpu {
    #[inline]
    fn current_cpu(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_and_single_cpu() {
        assert_eq!(SingleCpu.current_cpu(), 0);
        let n = 7usize;
        assert_eq!((|| n).current_cpu(), 7);
        fn id(c: impl CpuId) -> usize {
            c.current_cpu()
        }
        let f = || 3usize;
        let max = || usize::MAX;
        assert_eq!((id(SingleCpu), id(f), id(max)), (0, 3, usize::MAX));
    }
}
