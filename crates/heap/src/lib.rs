//! xmalloc kernel heaps over a page source, with GlobalAlloc and allocator_api2::Allocator
#![no_std]
