//! pmallocator: a physical frame allocator whose metadata lives in the managed RAM, with no pointers; pools of physical memory
#![no_std]
