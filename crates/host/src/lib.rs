//! memkit hosted on Linux: memfd RAM, mmap as the MMU, real page faults.
