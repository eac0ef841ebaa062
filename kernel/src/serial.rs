//! The serial port COM1 (I/O port 0x3f8, 16550 UART): where the kernel reports.
//!
//! The kernel runs on one CPU and the port keeps no state in memory, so a writer is a plain
//! value: `print!` from the fault handler or the panic handler cannot deadlock on a lock
//! held by the code it interrupted.
//!
//! # Unsafe
//! Port I/O: the COM1 ports belong to the UART, which only this module drives, and port 0xf4
//! is QEMU's exit device; none of the writes touch memory.

use core::fmt;

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// Writes bytes to COM1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serial;

fn outb(port: u16, value: u8) {
    // SAFETY: the ports COM1..COM1+7 belong to the UART, which only this module drives;
    // writing them has no effect on memory.
    unsafe { Port::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`; reading the line status register has no side effect on memory.
    unsafe { Port::new(port).read() }
}

impl Serial {
    /// Programs the UART: 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on.
    pub(crate) fn init() {
        outb(COM1 + 1, 0x00); // no interrupts
        outb(COM1 + 3, 0x80); // divisor latch on
        outb(COM1, 0x01); // divisor 1: 115200 baud
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03); // 8N1, latch off
        outb(COM1 + 2, 0xc7); // FIFOs on and cleared
        outb(COM1 + 4, 0x03); // DTR, RTS
    }

    fn write_byte(self, byte: u8) {
        while inb(COM1 + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(COM1, byte);
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

/// Prints to the serial port.
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::serial::Serial, format_args!($($arg)*));
    }};
}

/// Prints a line to the serial port.
macro_rules! println {
    () => { $crate::serial::print!("\n") };
    ($($arg:tt)*) => {{
        $crate::serial::print!($($arg)*);
        $crate::serial::print!("\n");
    }};
}

pub(crate) use {print, println};

/// How the kernel leaves QEMU: through `isa-debug-exit` (I/O port 0xf4), which ends QEMU
/// with exit status `(code << 1) | 1`: [`ExitCode::Success`] gives 33, [`ExitCode::Failure`]
/// gives 35. Without the device the write does nothing and the CPU halts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum ExitCode {
    /// Every test passed.
    Success = 0x10,
    /// A test failed or the kernel panicked.
    Failure = 0x11,
}

/// Ends the run.
pub(crate) fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device; writing it ends the process and
    // touches no memory.
    unsafe { Port::new(0xf4).write(code as u32) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
