//! memkit's C interface.
//!
//! [`malloc`]: the C library's malloc family over memkit's frame allocator
//! (`memkit-phys`) and heap (`memkit-heap`), exported from the shared library so that an
//! unmodified program allocates from memkit:
//!
//! ```text
//! cargo build --release -p memkit-capi
//! LD_PRELOAD=target/release/libmemkit.so python3 script.py
//! ```
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod malloc;
