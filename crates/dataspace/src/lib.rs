//! a dataspace manager (L4Re Mem_alloc, DROPS l4dm and DMphys) on memkit's frame allocator
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
